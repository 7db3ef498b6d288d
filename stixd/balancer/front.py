"""The balancer's front: HTTP/1.1 (and 1.0) from clients, parsed by llhttp (`httptools`), each
request handed to the proxy in the order it came and answered in that order.

aiohttp's server cost the balancer ~150 µs of CPU per request, most of what the proxying itself
costs; this does only what a proxy's front needs. Per connection: keep-alive and pipelining
(requests are parsed as they come and answered one after another; reading pauses while
`PIPELINE_DEPTH` of them wait), a request's body streamed to the proxy as it comes, the head
limits of `stixd.balancer.limits` (414 and 431), a one-line 400 for anything llhttp refuses,
and `head_seconds` for a client to send a whole head after connecting or after its last answer.
A client that goes away (or closes its side: as nginx and uvicorn take it) cancels its request
(its replica connection is closed, not kept). A
WebSocket upgrade is handed, with the connection, to aiohttp's server, which the relay
(`stixd.balancer.sockets`) is written against; any other upgrade is answered as a plain request
and the connection closed.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import deque
from collections.abc import Awaitable, Callable

import httptools
from multidict import CIMultiDict

from stixd.balancer.asked import Body, Request, Unfinished
from stixd.balancer.flow import WriteFlow
from stixd.balancer.hop import Refusal, one_line
from stixd.balancer.limits import MAX_HEADER_FIELD, MAX_HEADERS, MAX_REQUEST_LINE
from stixd.balancer.reply import Reply, closing_refusal

PIPELINE_DEPTH = 16
"""Parsed requests waiting for their turn past which reading from the client pauses."""
UNFINISHED_HEADER = MAX_REQUEST_LINE + 2 * MAX_HEADER_FIELD + 256
"""Bytes of a head with no header ended past which a header counts as too long (each is checked
exactly once the next begins; this bounds what is held before)."""

Handler = Callable[[Request, Reply], Awaitable[None]]
HandOff = Callable[[asyncio.Transport, bytes], None]
"""Gives the connection, and the bytes of the upgrade request and after, to another protocol."""

log = logging.getLogger("stixd.balancer")


class _Refused(Exception):
    """Raised in a parser callback: the head broke a limit."""


class Front(WriteFlow, asyncio.Protocol):
    def __init__(
        self, handle: Handler, hand_off: HandOff, head_seconds: float, scheme: str, fronts: Fronts
    ) -> None:
        self._handle = handle
        self._hand_off = hand_off
        self._head_seconds = head_seconds
        self._scheme = scheme
        self._fronts = fronts
        self._loop = fronts.loop  # asyncio.get_running_loop() costs a getpid() outside a task
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._remote = ""
        self._queue: deque[Request | Refusal] = deque()
        self._worker: asyncio.Task[None] | None = None
        self._reply: Reply | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._paused: set[str] = set()
        self._drained: asyncio.Future[None] | None = None
        self._closed = False
        self._stopped = False
        """Nothing more is parsed: after an upgrade, a refused head, or while stopping."""
        self._after_upgrade = bytearray()
        self._refusal: Refusal | None = None
        # The request whose head or body is coming:
        self._url: list[bytes] = []
        self._url_size = 0
        self._headers: list[tuple[str, str]] = []
        self._has_body = False
        self._in_head = False
        self._unfinished = 0
        self._header_ended = False
        self._coming: Request | None = None

    # The connection.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        peer = transport.get_extra_info("peername")
        self._remote = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        self._fronts.open.add(self)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._stopped:
            if "upgrade" in self._paused:
                self._after_upgrade += data  # the start of a WebSocket, for its hand-off
            return
        self._header_ended = False
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self._stopped = True
            self._after_upgrade += data[upgrade.args[0] :]
            self.pause_reading("upgrade")
            return
        except httptools.HttpParserError as exc:
            why = str(exc).strip().rstrip(".") or type(exc).__name__
            refusal = self._refusal or one_line(400, f"malformed request: {why}")
            coming = self._coming
            if coming is not None and coming.body is not None:
                self._stopped = True
                coming.body.fail(refusal)  # its request, on its way, answers this
            else:
                self._refuse(refusal)
            return
        if self._in_head:
            self._unfinished = 0 if self._header_ended else self._unfinished + len(data)
            if self._unfinished > UNFINISHED_HEADER:
                self._refuse(one_line(431, f"a header over {MAX_HEADER_FIELD} bytes"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = self._stopped = True
        self._fronts.open.discard(self)
        self._disarm()
        if self._coming is not None and self._coming.body is not None:
            self._coming.body.fail()
        if self._worker is not None:
            self._worker.cancel()  # frees its replica connection at once
        self._wake_writer()

    # What a `Reply` and a `Body` use.

    def write(self, data: bytes) -> None:
        if self._closed or self._transport is None:
            raise ConnectionError("the client went away")
        self._transport.write(data)

    async def drain(self) -> None:
        await self.drained()
        if self._closed:
            raise ConnectionError("the client went away")

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def pause_reading(self, why: str) -> None:
        if not self._paused and self._transport is not None and not self._closed:
            self._transport.pause_reading()
        self._paused.add(why)

    def resume_reading(self, why: str) -> None:
        if why not in self._paused:
            return
        self._paused.discard(why)
        if not self._paused and self._transport is not None and not self._closed:
            self._transport.resume_reading()

    # llhttp's callbacks.

    def on_message_begin(self) -> None:
        self._url, self._url_size, self._headers = [], 0, []
        self._has_body = False
        self._in_head, self._unfinished = True, 0

    def on_url(self, url: bytes) -> None:
        self._url.append(url)
        self._url_size += len(url)
        if self._url_size > MAX_REQUEST_LINE:
            raise self._over(414, f"request line over {MAX_REQUEST_LINE} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_ended = True
        if len(name) > MAX_HEADER_FIELD or len(value) > MAX_HEADER_FIELD:
            raise self._over(431, f"a header over {MAX_HEADER_FIELD} bytes")
        if len(self._headers) >= MAX_HEADERS:
            raise self._over(431, f"more than {MAX_HEADERS} headers")
        key = name.decode("latin-1")
        if len(key) in (14, 17) and key.lower() in ("content-length", "transfer-encoding"):
            self._has_body = self._has_body or value.strip() != b"0"
        self._headers.append((key, value.decode("utf-8", "surrogateescape")))

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm()
        parser = self._parser
        upgrade = parser.should_upgrade()
        request = Request(
            method=parser.get_method().decode("ascii"),
            path=origin_form(b"".join(self._url)).decode("utf-8", "surrogateescape"),
            version=parser.get_http_version(),
            headers=CIMultiDict(self._headers),
            remote=self._remote,
            scheme=self._scheme,
            body=Body(self, self._loop) if self._has_body and not upgrade else None,
            keep_alive=parser.should_keep_alive(),
            upgrade=upgrade,
        )
        self._coming = request
        self._queue.append(request)
        if self._worker is None:
            self._worker = self._loop.create_task(self._work())

    def on_body(self, data: bytes) -> None:
        if self._coming is not None and self._coming.body is not None:
            self._coming.body.feed(data)

    def on_message_complete(self) -> None:
        if self._coming is not None and self._coming.body is not None:
            self._coming.body.finish()
        self._coming = None
        if len(self._queue) >= PIPELINE_DEPTH:
            self.pause_reading("pipeline")

    def _over(self, status: int, why: str) -> _Refused:
        self._refusal = one_line(status, why)
        return _Refused(why)

    # Answering, in order.

    def _refuse(self, refusal: Refusal) -> None:
        """Answer ``refusal`` after the requests before it, then close; parse no more."""
        self._stopped = True
        self._queue.append(Refusal(refusal.status, refusal.text, refusal.headers, closes=True))
        if self._worker is None:
            self._worker = self._loop.create_task(self._work())

    async def _work(self) -> None:
        assert self._transport is not None
        while self._queue and not self._closed:
            request = self._queue.popleft()
            if len(self._queue) < PIPELINE_DEPTH:
                self.resume_reading("pipeline")
            if isinstance(request, Refusal):
                self.write(closing_refusal(request))
                self._transport.close()
                break
            if _wants_websocket(request):
                self._give_away(request)
                break
            reply = self._reply = Reply(self, request)
            try:
                await self._handle(request, reply)
            except Unfinished as exc:
                if exc.refusal is None or reply.started:
                    self.abort()
                    break
                reply.close = True  # the rest of the body cannot be read
                reply.refuse(exc.refusal)
            except ConnectionError:
                self.abort()  # the client went away
                break
            except Exception:
                log.exception("%s %s failed in the balancer", request.method, request.path[:200])
                if not reply.started:
                    reply.refuse(one_line(500, "the balancer failed on this request; see its log"))
            if not reply.ended:
                reply.abort()
            if reply.close or (request.body is not None and not request.body.done):
                self._transport.close()  # after the answer's bytes are out
                break
            if self._fronts.stopping or (self._stopped and not self._queue):
                self._transport.close()
                break
        self._worker = self._reply = None
        if not self._closed:
            self._arm()

    def _give_away(self, request: Request) -> None:
        assert self._transport is not None
        self._closed = True
        self._fronts.open.discard(self)
        self._disarm()
        head = [f"{request.method} {request.path} HTTP/{request.version}\r\n"]
        head += [f"{name}: {value}\r\n" for name, value in request.headers.items()]
        head.append("\r\n")
        data = "".join(head).encode("utf-8", "surrogateescape") + bytes(self._after_upgrade)
        if self._paused:
            self._paused.clear()
            self._transport.resume_reading()
        self._hand_off(self._transport, data)

    def _arm(self) -> None:
        """Start the wait for a request's head."""
        self._disarm()
        self._timer = self._loop.call_later(self._head_seconds, self._too_slow)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _too_slow(self) -> None:
        self._timer = None
        if self._worker is None and self._transport is not None:
            self._transport.close()

    def wind_down(self) -> None:
        """Close now if idle, else after the answer on its way (which says so, if its head
        is not out yet)."""
        if self._worker is None and self._transport is not None:
            self._transport.close()
        elif self._reply is not None and not self._reply.started:
            self._reply.close = True


def origin_form(target: bytes) -> bytes:
    """The path and query of a request target written whole (``http://host/path?q``), as the
    replica is asked for them; any other target as it is."""
    if target.startswith(b"/") or target == b"*":
        return target
    try:
        url = httptools.parse_url(target)
    except httptools.HttpParserInvalidURLError:
        return target
    path = url.path or b"/"
    return path + b"?" + url.query if url.query else path


def _wants_websocket(request: Request) -> bool:
    return (
        request.upgrade
        and request.method == "GET"
        and request.headers.get("Upgrade", "").lower() == "websocket"
    )


class Fronts:
    """Every client connection of one listening socket, so a stop can end them gracefully."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.open: set[Front] = set()
        self.stopping = False

    async def stop(self, seconds: float) -> None:
        """Close idle connections now, the others after their current answer (within
        ``seconds``, then at once)."""
        self.stopping = True
        for front in list(self.open):
            front.wind_down()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while self.open and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for front in list(self.open):
            front.abort()


async def serve(
    handle: Handler,
    hand_off: HandOff,
    host: str,
    port: int,
    tls: ssl.SSLContext | None,
    head_seconds: float,
    reuse_port: bool,
) -> tuple[asyncio.Server, Fronts]:
    loop = asyncio.get_running_loop()
    fronts = Fronts(loop)
    scheme = "https" if tls is not None else "http"
    server = await loop.create_server(
        lambda: Front(handle, hand_off, head_seconds, scheme, fronts),
        host,
        port,
        ssl=tls,
        backlog=1024,
        reuse_address=True,
        reuse_port=reuse_port,
    )
    return server, fronts
