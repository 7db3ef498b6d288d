"""WebSocket passthrough: a client's upgrade is opened anew at one replica, and messages (text,
binary, ping, pong, close) are relayed both ways until either side closes.

The replica is chosen and the upgrade retried like any request (a replica that refuses the
connection is ejected and the next one tried); an upgrade the replica answers with an error
gets that status. Once open, the socket counts as one request in flight at its replica for its
whole life. The replica going away closes the client's socket (code 1011, or the code the
replica closed with); the client going away closes the replica's (1001).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
from aiohttp import WSMsgType, web

from stixd.balancer.hop import (
    EJECTING,
    RETRYING,
    Miss,
    Refusal,
    one_line,
    upstream_headers,
)
from stixd.balancer.pool import Pool, Slot

MAX_MESSAGE = 16 * 1024 * 1024
CLOSE_SECONDS = 5.0
"""How long a close waits for the other side's close frame."""
STOPPING_CLOSE_SECONDS = 0.2
"""The same while the balancer stops: the close frame is sent, the reply barely waited for."""
HANDSHAKE = frozenset(
    {
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
        "sec-websocket-accept",
    }
)
"""Made anew for the replica's side by the client session (protocols are offered again)."""
UNSENDABLE = frozenset({1005, 1006, 1015})
"""Close codes that only describe a socket and may not be sent in a close frame."""
GOING_AWAY = 1001
REPLICA_GONE = 1011


def _ws_url(url: str) -> str:
    return "ws" + url.removeprefix("http") if url.startswith("http") else url


Eject = Callable[[Slot, BaseException], None]


@dataclass
class Sockets:
    pool: Pool
    session: aiohttp.ClientSession
    eject: Eject
    open_seconds: float
    """How long the replica has to accept the upgrade (the stream timeout)."""
    relays: set[asyncio.Task[object]] = field(default_factory=set)
    close_seconds: float = CLOSE_SECONDS

    async def attempt(
        self, request: web.BaseRequest, slot: Slot
    ) -> web.StreamResponse | Refusal | Miss:
        url = _ws_url(slot.replica.url.rstrip("/")) + request.rel_url.raw_path_qs
        offered = [
            p.strip()
            for v in request.headers.getall("Sec-WebSocket-Protocol", ())
            for p in v.split(",")
            if p.strip()
        ]
        slot.in_flight += 1
        try:
            try:
                async with asyncio.timeout(self.open_seconds):
                    upstream = await self.session.ws_connect(
                        url,
                        headers=upstream_headers(request, HANDSHAKE),
                        protocols=offered,
                        autoclose=False,
                        autoping=False,
                        max_msg_size=MAX_MESSAGE,
                        timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=CLOSE_SECONDS),
                    )
            except aiohttp.WSServerHandshakeError as exc:
                status = exc.status if exc.status >= 400 else 502
                return one_line(status, f"the replica refused the WebSocket upgrade ({exc.status})")
            except RETRYING as exc:
                if isinstance(exc, EJECTING):
                    self.eject(slot, exc)
                return Miss.FAILED
            except TimeoutError:
                return Miss.SILENT
            except aiohttp.ClientError as exc:
                return one_line(502, f"the replica's upgrade was unreadable: {str(exc)[:100]}")
            self.pool.succeeded(slot)
            return await self._relay(request, upstream)
        finally:
            slot.in_flight -= 1

    async def _relay(
        self, request: web.BaseRequest, upstream: aiohttp.ClientWebSocketResponse
    ) -> web.WebSocketResponse:
        protocols = (upstream.protocol,) if upstream.protocol else ()
        client = web.WebSocketResponse(
            protocols=protocols,
            autoclose=False,
            autoping=False,
            compress=False,
            max_msg_size=MAX_MESSAGE,
        )
        me = asyncio.current_task()
        assert me is not None
        self.relays.add(me)
        try:
            await client.prepare(request)
            to_replica = asyncio.create_task(_pump(client, upstream))
            to_client = asyncio.create_task(_pump(upstream, client))
            try:
                done, _ = await asyncio.wait(
                    {to_replica, to_client}, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                for task in (to_replica, to_client):
                    task.cancel()
                await asyncio.gather(to_replica, to_client, return_exceptions=True)
            if to_client in done:  # the replica closed first, or went away
                code, why = _ended(to_client) or (REPLICA_GONE, b"the replica went away")
                await self._close(client, code, why)
                await self._close(upstream, GOING_AWAY, b"")
            else:
                code, why = _ended(to_replica) or (GOING_AWAY, b"the client went away")
                await self._close(upstream, code, why)
                await self._close(client, code, why)
        finally:
            self.relays.discard(me)
            await self._close(client, GOING_AWAY, b"the balancer is stopping")
            await self._close(upstream, GOING_AWAY, b"")
        return client

    def stop_all(self) -> None:
        """Cancel every relay (the balancer stops): each closes both of its sockets."""
        self.close_seconds = STOPPING_CLOSE_SECONDS
        for task in list(self.relays):
            task.cancel()

    async def _close(self, socket: Socket, code: int, why: bytes) -> None:
        if socket.closed:
            return
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.close_seconds):
                await socket.close(code=code, message=why)


Socket = web.WebSocketResponse | aiohttp.ClientWebSocketResponse


async def _pump(source: Socket, sink: Socket) -> tuple[int, bytes] | None:
    """Relay messages until ``source`` closes: its close code and reason (None: it went away
    without a close frame, or ``sink`` did)."""
    while True:
        msg = await source.receive()
        try:
            if msg.type is WSMsgType.TEXT:
                await sink.send_str(msg.data)
            elif msg.type is WSMsgType.BINARY:
                await sink.send_bytes(msg.data)
            elif msg.type is WSMsgType.PING:
                await sink.ping(msg.data)
            elif msg.type is WSMsgType.PONG:
                await sink.pong(msg.data)
            elif msg.type is WSMsgType.CLOSE:
                code = int(msg.data) if msg.data is not None else GOING_AWAY
                reason = (msg.extra or "").encode()[:120]
                return (GOING_AWAY if code in UNSENDABLE else code), reason
            else:  # CLOSING, CLOSED, ERROR: gone without a close frame
                return None
        except (ConnectionError, aiohttp.ClientError, RuntimeError):
            return None  # the sink is gone


def _ended(pump: asyncio.Task[tuple[int, bytes] | None]) -> tuple[int, bytes] | None:
    """The close code and reason a finished pump saw (None: no close frame came)."""
    if pump.cancelled() or pump.exception() is not None:
        return None
    return pump.result()
