"""The daemon's end of a balancer's control socket: `RemoteBalancer`, what the service actor drives.

A call on a broken connection reconnects once; if the balancer is gone, it is started again first
(with the last ready set) by the fleet's `revive`, which a stopped balancer refuses.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import anyio
from anyio.abc import SocketStream
from anyio.streams.buffered import BufferedByteReceiveStream

from stixd.balancer import wire
from stixd.balancer.layout import Layout
from stixd.serve.seams import BalancerSpec, ReadyReplica, Traffic

CALL_SECONDS = 10.0


class BalancerDown(ConnectionError):
    """A balancer that cannot be reached or started; the message says where its log is."""


class Link:
    """One control connection: a frame out, a frame back."""

    def __init__(self, stream: SocketStream) -> None:
        self.stream = stream
        self.reader = BufferedByteReceiveStream(stream)

    @classmethod
    async def open(cls, path: Path) -> Link:
        return cls(await anyio.connect_unix(path))

    async def call(self, request: wire.Request) -> wire.Answer:
        await self.stream.send(wire.encode(request))
        length = wire.frame_length(await self.reader.receive_exactly(wire.HEADER.size))
        answer = wire.decode(await self.reader.receive_exactly(length))
        if isinstance(answer, wire.Failed):
            raise wire.ProtocolBroken(f"the balancer refused the request: {answer.message}")
        if not isinstance(answer, wire.Answer):
            raise wire.ProtocolBroken("a request sent as an answer")
        return answer

    async def aclose(self) -> None:
        with (
            anyio.CancelScope(shield=True),
            contextlib.suppress(OSError, anyio.BrokenResourceError),
        ):
            await self.stream.aclose()


async def show_ready(control: Path) -> list[wire.Replica]:
    """The rotation a running balancer holds now, asked over its control socket (read only:
    for `stixctl`-side checks and tests; the daemon keeps its own copy in `RemoteBalancer`)."""
    link = await Link.open(control)
    try:
        with anyio.fail_after(CALL_SECONDS):
            answer = await link.call(wire.ShowReady())
    finally:
        await link.aclose()
    if not isinstance(answer, wire.ReadySet):
        raise wire.ProtocolBroken(f"the balancer answered {type(answer).__name__} to ShowReady")
    return answer.replicas


BROKEN = (
    OSError,
    anyio.EndOfStream,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.IncompleteRead,
    wire.ProtocolBroken,
    TimeoutError,
)


def _as_wire(replica: ReadyReplica) -> wire.Replica:
    return wire.Replica(
        replica.replica_id, replica.url, replica.version, replica.accelerator, replica.weight
    )


class RemoteBalancer:
    """A running balancer as the service actor drives it (`stixd.serve.seams.Balancer`)."""

    def __init__(self, spec: BalancerSpec, layout: Layout, host: str, revive: Revive) -> None:
        self._host = host
        self._revive = revive
        """Starts the balancer again if it is gone (the fleet's, which knows how)."""
        self.spec = spec
        self.layout = layout
        self._link: Link | None = None
        self._lock = anyio.Lock()
        self.ack = 0
        """The last traffic batch received (the balancer hands it out again until told)."""
        self.ready: list[wire.Replica] | None = None
        """The last set pushed, pushed again to a balancer started anew."""
        self.stopped = False

    @property
    def endpoint(self) -> str:
        scheme = "https" if self.spec.tls_certfile else "http"
        host = self._host if self._host not in ("", "0.0.0.0", "::") else "127.0.0.1"
        return f"{scheme}://{host}:{self.spec.port}"

    async def set_ready(self, replicas: Sequence[ReadyReplica]) -> None:
        ready = [_as_wire(r) for r in replicas]
        self.ready = ready
        await self._call(wire.SetReady(ready))

    async def take_traffic(self) -> Traffic:
        batch = await self._call(wire.TakeTraffic(self.ack))
        if not isinstance(batch, wire.TrafficBatch):
            raise BalancerDown(f"the balancer answered {type(batch).__name__} to TakeTraffic")
        self.ack = batch.batch
        return Traffic(tuple(batch.arrivals), tuple(batch.suspects), batch.waiting)

    async def wait_for_demand(self) -> None:
        for attempt in range(3):
            link = None
            try:
                link = await Link.open(self.layout.control)
                await link.call(wire.WaitDemand())
                return
            except BROKEN:
                if attempt == 2:
                    raise self.down() from None
                await self._revive(self)
            finally:
                if link is not None:
                    await link.aclose()

    async def _call(self, request: wire.Request) -> wire.Answer:
        async with self._lock:
            for attempt in range(2):
                try:
                    if self._link is None:
                        self._link = await Link.open(self.layout.control)
                    with anyio.fail_after(CALL_SECONDS):
                        return await self._link.call(request)
                except BROKEN:
                    await self.drop_link()
                    if attempt == 1:
                        raise self.down() from None
                    await self._revive(self)
        raise AssertionError("unreachable")

    async def drop_link(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            await link.aclose()

    def down(self) -> BalancerDown:
        if self.stopped:
            return BalancerDown(f"the balancer of service {self.spec.service} was stopped")
        return BalancerDown(
            f"the balancer of service {self.spec.service} does not answer; see {self.layout.log}"
        )


Revive = Callable[[RemoteBalancer], Awaitable[None]]
