"""The balancer's side of the control socket: one task per daemon connection.

A connection whose frame is oversized, malformed or of another version gets one `Failed` and
is closed; the balancer and its other connections go on. A connection must send its first frame
within `FIRST_FRAME_SECONDS` of connecting (the daemon speaks at once) and the rest of any frame
within `FRAME_SECONDS` of its header; between frames one that has spoken may stay idle (the
daemon keeps its link open between rounds).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass, field

from stixd.balancer import wire
from stixd.balancer.pool import Arrivals, Pool

FIRST_FRAME_SECONDS = 5.0
FRAME_SECONDS = 10.0


@dataclass
class Held:
    """Requests waiting for a ready set, and the daemon's waiters for that demand."""

    limit: int
    waiting: int = 0
    closing: bool = False
    """The balancer is stopping: no request waits any more (a 503 now, not a reset later)."""
    _demand: asyncio.Event = field(default_factory=asyncio.Event)

    def enter(self) -> bool:
        """Count one more waiting request (False: the queue is full)."""
        if self.waiting >= self.limit:
            return False
        self.waiting += 1
        self._demand.set()
        return True

    def leave(self) -> None:
        self.waiting -= 1
        if not self.waiting:
            self._demand = asyncio.Event()

    async def demand(self) -> int:
        await self._demand.wait()
        return self.waiting


@dataclass
class Control:
    pool: Pool
    arrivals: Arrivals
    held: Held
    spec_digest: str
    port: int
    stop: asyncio.Event
    _batch: int = 0
    _unacked: wire.TrafficBatch | None = None

    async def serve(self, path: str) -> asyncio.Server:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        old = os.umask(0o177)  # the socket is born 0600: only this user drives the balancer
        try:
            return await asyncio.start_unix_server(self._connection, path)
        finally:
            os.umask(old)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first = True
        try:
            while True:
                try:
                    async with asyncio.timeout(FIRST_FRAME_SECONDS if first else None):
                        header = await reader.readexactly(wire.HEADER.size)
                except asyncio.IncompleteReadError:
                    return
                first = False
                try:
                    async with asyncio.timeout(FRAME_SECONDS):
                        payload = await reader.readexactly(wire.frame_length(header))
                    request = wire.decode(payload)
                    if not isinstance(request, wire.Request):
                        raise wire.ProtocolBroken("an answer sent as a request")
                except wire.ProtocolBroken as exc:
                    writer.write(wire.encode(wire.Failed(str(exc))))
                    await writer.drain()
                    return
                if isinstance(request, wire.WaitDemand):
                    answer: wire.Answer | None = await self._demand_or_hang_up(reader)
                    if answer is None:
                        return
                else:
                    answer = await self._answer(request)
                writer.write(wire.encode(answer))
                await writer.drain()
                if isinstance(request, wire.Stop):
                    self.stop.set()
                    return
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            return  # gone or stalled mid-frame: a daemon's next connection starts afresh
        finally:
            writer.close()

    async def _demand_or_hang_up(self, reader: asyncio.StreamReader) -> wire.Demand | None:
        """`Demand` once a request waits; None if the daemon hangs up first (a daemon killed
        while waiting leaves no waiter behind)."""
        demand = asyncio.ensure_future(self.held.demand())
        hang_up = asyncio.ensure_future(reader.read(1))  # the daemon sends nothing while it waits
        try:
            await asyncio.wait({demand, hang_up}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            hang_up.cancel()
            demand.cancel()
        return wire.Demand(demand.result()) if demand.done() and not demand.cancelled() else None

    async def _answer(self, request: wire.Request) -> wire.Answer:
        match request:
            case wire.Hello():
                unacked = self._unacked.batch if self._unacked is not None else 0
                ready = len(self.pool.slots)
                return wire.Welcome(os.getpid(), self.spec_digest, self.port, ready, unacked)
            case wire.SetReady(replicas=replicas):
                self.pool.set_ready(replicas)
                return wire.Ok()
            case wire.TakeTraffic(ack=ack):
                return self._take(ack)
            case wire.WaitDemand():
                return wire.Demand(await self.held.demand())  # (answered above, with hang-ups)
            case wire.Stop():
                return wire.Ok()
            case wire.ShowReady():
                return wire.ReadySet([slot.replica for slot in self.pool.slots])

    def _take(self, ack: int) -> wire.TrafficBatch:
        old = self._unacked
        if old is not None and old.batch == ack:
            old = None
        self._batch += 1
        arrivals = self.arrivals.take()
        suspects = self.pool.suspects
        self.pool.suspects = []
        if old is not None:  # its reply was lost: hand it out again with what came since
            arrivals = (old.arrivals + arrivals)[-wire.MAX_ARRIVALS :]
            suspects = (old.suspects + suspects)[-wire.MAX_ARRIVALS :]
        self._unacked = wire.TrafficBatch(self._batch, arrivals, suspects, self.held.waiting)
        return self._unacked
