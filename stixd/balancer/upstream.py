"""Requests to replicas on HTTP/1.1 keep-alive connections of the balancer's own.

aiohttp's `ClientSession` cost more than half of the balancer's CPU per request (building a
`ClientRequest`, a `ClientResponse`, timers and traces for every one), and on a machine whose
cores the replicas and clients share, that CPU is the balancer's throughput. This does only what
a proxy needs: write a request head (and stream its body) on a pooled connection, read the
answer's head, then its body whole or as it comes. WebSockets keep the session
(`stixd.balancer.sockets`).

How a try fails tells the proxy what to do with the replica, as aiohttp's errors did:
`Refused` (no connection: ejected, and worth waiting for), `Broken` (reset, or no connection in
time: ejected), `Dropped` (closed without a word, as a pooled connection may be just when it is
reused: tried elsewhere, not ejected), `Silent` (nothing for the stream timeout), `Garbled` (not
HTTP/1.x), `Truncated` (the body ended before its length or last chunk).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

from stixd.balancer.flow import WriteFlow

MAX_HEAD = 64 * 1024
"""An answer's head (status line and headers) up to this many bytes, else it is `Garbled`."""
HIGH_WATER = 256 * 1024
"""Buffered answer bytes past which reading from the replica pauses (a slow client)."""
NO_BODY = frozenset({204, 304})


class UpstreamError(Exception):
    """A try at a replica that went wrong; the subclass says how."""


class Refused(UpstreamError):
    """The replica did not accept a connection (refused, unreachable, TLS handshake failed)."""


class Broken(UpstreamError):
    """The connection was reset, or could not be made within the connect timeout."""


class Dropped(UpstreamError):
    """The replica closed the connection before its answer's head, without a reset."""


class Silent(UpstreamError):
    """Nothing came from the replica for the stream timeout."""


class Garbled(UpstreamError):
    """The replica's answer is not HTTP/1.x."""


class Truncated(UpstreamError):
    """The answer's body stopped before its end."""


class _Conn(WriteFlow, asyncio.Protocol):
    """One connection to a replica: the bytes it sent and not yet taken, and whether it is over."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()  # once: outside a task it costs a getpid()
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.eof = False
        self.error: BaseException | None = None
        self.idle_since = 0.0
        self._waiter: asyncio.Future[None] | None = None
        self._drained: asyncio.Future[None] | None = None
        self._reading_paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) > HIGH_WATER and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.error = exc
        self._wake()
        self._wake_writer()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    @property
    def usable(self) -> bool:
        return not self.eof and self.transport is not None and not self.transport.is_closing()

    def take(self, n: int | None = None) -> bytes:
        """Up to ``n`` buffered bytes (all of them for None)."""
        if n is None or n >= len(self.buf):
            data = bytes(self.buf)
            self.buf.clear()
        else:
            data = bytes(self.buf[:n])
            del self.buf[:n]
        if self._reading_paused and len(self.buf) < HIGH_WATER and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()
        return data

    async def more(self, seconds: float) -> None:
        """Wait for more bytes, or the connection's end (``eof`` set: what it means is the
        caller's to say); `Silent` after ``seconds`` of nothing."""
        if self.eof:
            return
        waiter = self._waiter = self._loop.create_future()
        timer = self._loop.call_later(seconds, _time_out, waiter, seconds)  # cheaper than a Timeout
        try:
            await waiter
        finally:
            timer.cancel()

    def write(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            raise self.gone()
        self.transport.write(data)

    async def send(self, data: bytes) -> None:
        self.write(data)
        if self._drained is not None:
            await self._drained
            if self.eof:
                raise self.gone()

    def gone(self) -> UpstreamError:
        if isinstance(self.error, OSError):
            return Broken(str(self.error) or type(self.error).__name__)
        return Dropped("the replica closed the connection")

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()


def _time_out(waiter: asyncio.Future[None], seconds: float) -> None:
    if not waiter.done():
        waiter.set_exception(Silent(f"nothing from the replica for {seconds:g} s"))


@dataclass
class Target:
    """Where a replica is reached, parsed once per ready set."""

    host: str
    port: int
    tls: bool
    authority: str
    """The Host header's value."""

    @classmethod
    def of(cls, url: str) -> Target:
        parts = urlsplit(url)
        tls = parts.scheme == "https"
        port = parts.port or (443 if tls else 80)
        host = parts.hostname or "127.0.0.1"
        shown = f"[{host}]" if ":" in host else host
        authority = shown if port == (443 if tls else 80) else f"{shown}:{port}"
        try:
            return cls(host, port, tls, authority.encode("idna").decode("ascii"))
        except UnicodeError:  # not a name IDNA takes (a label too long): as it is written
            return cls(host, port, tls, authority)


class Answer:
    """A replica's answer once its head is in: status, headers, and the body to read."""

    def __init__(
        self,
        conn: _Conn,
        status: int,
        reason: str,
        headers: list[tuple[str, str]],
        length: int | None,
        chunked: bool,
        reusable: bool,
        timeout: float,
        declared: int | None,
    ) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.length = length
        """The body's length (None: chunked, or until the connection closes)."""
        self.declared = declared
        """The Content-Length the replica sent (for HEAD: of the body it did not send)."""
        self._conn = conn
        self._chunked = chunked
        self._reusable = reusable
        self._timeout = timeout
        self.done = False
        """The whole body was read: the connection may carry another request."""

    async def read(self) -> bytes:
        """The whole body of an answer of known length."""
        assert self.length is not None
        conn = self._conn
        while len(conn.buf) < self.length:
            if conn.eof:
                raise self._cut()
            await conn.more(self._timeout)
        data = conn.take(self.length)
        self.done = True
        return data

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it comes, de-chunked; ends at its end."""
        if self._chunked:
            async for data in self._dechunked():
                yield data
        else:
            left = self.length
            conn = self._conn
            while left is None or left > 0:
                if not conn.buf:
                    if conn.eof:
                        if left is None and conn.error is None:
                            break  # the body ran until the replica closed: that is its end
                        raise self._cut()
                    await conn.more(self._timeout)
                    continue
                data = conn.take(left)
                if left is not None:
                    left -= len(data)
                yield data
        self.done = True

    async def _line(self) -> bytes:
        conn = self._conn
        while True:
            end = conn.buf.find(b"\r\n")
            if end >= 0:
                line = conn.take(end + 2)[:-2]
                return line
            if len(conn.buf) > MAX_HEAD:
                raise Garbled("a chunk line is too long")
            if conn.eof:
                raise self._cut()
            await conn.more(self._timeout)

    async def _dechunked(self) -> AsyncIterator[bytes]:
        conn = self._conn
        while True:
            size_text = (await self._line()).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise Garbled(f"a chunk size {size_text[:20]!r} is not hexadecimal") from None
            if size < 0:
                raise Garbled("a negative chunk size")
            if size == 0:
                while await self._line():  # trailers: read and dropped
                    pass
                return
            while size:
                if not conn.buf:
                    if conn.eof:
                        raise self._cut()
                    await conn.more(self._timeout)
                    continue
                data = conn.take(size)
                size -= len(data)
                yield data
            if await self._line():
                raise Garbled("a chunk longer than its size")

    def _cut(self) -> UpstreamError:
        error = self._conn.error
        why = str(error) if error is not None else "the connection closed"
        return Truncated(f"the answer's body ended early: {why}")

    def release(self) -> _Conn | None:
        """The connection back if it can carry another request, else closed (None)."""
        if self.done and self._reusable and self._conn.usable and not self._conn.buf:
            return self._conn
        self._conn.close()
        return None


@dataclass
class Upstream:
    """Pooled connections to every replica; one event loop owns it (nothing here locks)."""

    connect_timeout: float
    read_timeout: float
    keepalive: float
    tls: ssl.SSLContext | None = None
    """How replicas reached over https are verified (None: the system's default context)."""

    def __post_init__(self) -> None:
        self._idle: dict[tuple[str, int, bool], list[_Conn]] = {}
        self._sweeper: asyncio.TimerHandle | None = None

    def _tls(self) -> ssl.SSLContext:
        if self.tls is None:
            self.tls = ssl.create_default_context()  # made once: it reads the system's CAs
        return self.tls

    async def request(
        self,
        target: Target,
        method: str,
        path: str,
        headers: list[tuple[str, str]],
        body: AsyncIterator[bytes] | None,
        sized: bool,
    ) -> Answer:
        """Send the request and return the answer once its head is in. ``sized``: the headers
        carry the body's Content-Length (else a body goes chunked)."""
        conn = await self._conn(target)
        try:
            head = [f"{method} {path} HTTP/1.1\r\nHost: {target.authority}\r\n"]
            head += [f"{name}: {value}\r\n" for name, value in headers]
            if body is not None and not sized:
                head.append("Transfer-Encoding: chunked\r\n")
            head.append("\r\n")
            conn.write("".join(head).encode("utf-8", "surrogateescape"))
            if body is not None:
                async for chunk in body:
                    if chunk:
                        await conn.send(chunk if sized else b"%x\r\n%b\r\n" % (len(chunk), chunk))
                if not sized:
                    await conn.send(b"0\r\n\r\n")
            return await self._head(conn, method)
        except BaseException:
            conn.close()
            raise

    def give_back(self, target: Target, answer: Answer) -> None:
        conn = answer.release()
        if conn is None:
            return
        now = time.monotonic()
        conn.idle_since = now
        self._idle.setdefault((target.host, target.port, target.tls), []).append(conn)
        if self._sweeper is None:  # idle ones are closed even when no request comes again
            loop = asyncio.get_running_loop()
            self._sweeper = loop.call_later(self.keepalive, self._sweep)

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()

    def _sweep(self) -> None:
        """Close idle connections past the keep-alive, and forget replicas with none left;
        again after a keep-alive while any is left."""
        now = time.monotonic()
        self._sweeper = None
        for key, conns in list(self._idle.items()):
            kept = [c for c in conns if c.usable and now - c.idle_since < self.keepalive]
            for conn in conns:
                if conn not in kept:
                    conn.close()
            if kept:
                self._idle[key] = kept
            else:
                del self._idle[key]
        if self._idle:
            loop = asyncio.get_running_loop()
            self._sweeper = loop.call_later(self.keepalive, self._sweep)

    async def _conn(self, target: Target) -> _Conn:
        conns = self._idle.get((target.host, target.port, target.tls))
        now = time.monotonic()
        while conns:
            conn = conns.pop()  # the most recently used: the least likely to be closing
            if conn.usable and not conn.buf and now - conn.idle_since < self.keepalive:
                return conn  # (bytes that came while it was idle answer nothing we asked)
            conn.close()
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(
                    _Conn,
                    target.host,
                    target.port,
                    ssl=self._tls() if target.tls else None,
                )
        except TimeoutError:
            raise Broken(f"no connection within {self.connect_timeout:g} s") from None
        except (OSError, ssl.SSLError) as exc:
            raise Refused(str(exc) or type(exc).__name__) from None
        return conn

    async def _head(self, conn: _Conn, method: str) -> Answer:
        while True:  # interim (1xx) answers are skipped
            received = bool(conn.buf)
            while (end := conn.buf.find(b"\r\n\r\n")) < 0:
                if len(conn.buf) > MAX_HEAD:
                    raise Garbled(f"an answer head over {MAX_HEAD} bytes")
                if conn.eof:
                    if received or conn.buf:
                        raise Truncated("the connection closed within the answer's head")
                    raise conn.gone()
                await conn.more(self.read_timeout)
            answer = _parse_head(conn, conn.take(end + 4)[:-4], method, self.read_timeout)
            if answer is not None:
                return answer


def _parse_head(conn: _Conn, raw: bytes, method: str, timeout: float) -> Answer | None:
    """The answer ``raw`` heads (None for an interim 1xx one)."""
    text = raw.decode("utf-8", "surrogateescape")
    lines = text.split("\r\n")
    if text.count("\n") != len(lines) - 1 or "\r" in text.replace("\r\n", "") or "\0" in text:
        raise Garbled("a bare CR or LF, or a NUL, in the answer's head")
    version, _, rest = lines[0].partition(" ")
    code, _, reason = rest.partition(" ")
    if version not in ("HTTP/1.1", "HTTP/1.0") or not (len(code) == 3 and code.isascii()):
        raise Garbled(f"not an HTTP/1.x status line: {lines[0][:60]!r}")
    if not code.isdigit():
        raise Garbled(f"not an HTTP/1.x status line: {lines[0][:60]!r}")
    status = int(code)
    if 100 <= status < 200 and status != 101:
        return None
    if not (reason.isascii() and reason.isprintable()):
        reason = ""  # the client gets the status's standard phrase instead
    headers: list[tuple[str, str]] = []
    length: int | None = None
    chunked = False
    close = version == "HTTP/1.0"
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise Garbled(f"a header line that is not 'name: value': {line[:60]!r}")
        value = value.strip()
        headers.append((name, value))
        if name[0] not in "cCtT":  # none of the three below
            continue
        lower = name.lower()
        if lower == "content-length":
            if not (value.isascii() and value.isdigit()) or length not in (None, int(value)):
                raise Garbled(f"a Content-Length of {value[:30]!r}")
            length = int(value)
        elif lower == "transfer-encoding":
            chunked = chunked or "chunked" in value.lower()
        elif lower == "connection":
            tokens = {t.strip().lower() for t in value.split(",")}
            if "close" in tokens:
                close = True
            elif "keep-alive" in tokens and version == "HTTP/1.0":
                close = False
    if method == "HEAD" or status in NO_BODY:
        return Answer(conn, status, reason, headers, 0, False, not close, 0, length)
    if chunked:
        length = None
    elif length is None:
        close = True  # the body runs until the replica closes the connection
    return Answer(conn, status, reason, headers, length, chunked, not close, timeout, length)
