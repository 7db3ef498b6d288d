"""The asynchronous request to a remote API server: HTTP/1.1 over asyncio streams (stdlib).

One request per connection, so the client is small: send the POST with its length, read the
status line and headers, then the frames out of a chunked (or closed-delimited) body.
"""

from __future__ import annotations

import asyncio
import contextlib
import urllib.parse
from collections.abc import AsyncGenerator
from typing import Any

from stixctl.endpoint import Remote
from stixctl.http_client import (
    CONNECT_TIMEOUT,
    FRAMES,
    REQUEST_PATH,
    lost,
    proxy_login,
    unreachable,
)
from stixproto import PROTOCOL_VERSION
from stixproto.errors import DaemonUnavailable, ProtocolError
from stixproto.framing import HEADER, MAX_FRAME, body_length

MAX_HEAD = 64 * 1024


class _Body:
    """The response body, de-chunked as it is read."""

    def __init__(self, reader: asyncio.StreamReader, chunked: bool) -> None:
        self.reader = reader
        self.chunked = chunked
        self.left = 0  # of the current chunk
        self.done = False

    async def exactly(self, n: int) -> bytes | None:
        """`n` bytes, or None at the end of the body before the first of them."""
        if not self.chunked:
            try:
                return await self.reader.readexactly(n)
            except asyncio.IncompleteReadError as exc:
                if exc.partial:
                    raise ProtocolError("the body ended in the middle of a frame") from None
                return None
        out = bytearray()
        while len(out) < n:
            if self.left == 0 and not await self._next_chunk():
                if out:
                    raise ProtocolError("the body ended in the middle of a frame")
                return None
            take = min(self.left, n - len(out))
            out += await self.reader.readexactly(take)
            self.left -= take
            if self.left == 0:
                await self.reader.readexactly(2)  # the CRLF after a chunk
        return bytes(out)

    async def _next_chunk(self) -> bool:
        if self.done:
            return False
        line = await self.reader.readline()
        try:
            size = int(line.split(b";")[0].strip(), 16)
        except ValueError:
            raise ProtocolError("a malformed chunk in the server's answer") from None
        if size == 0:
            self.done = True
            return False
        if size > MAX_FRAME + HEADER.size:
            raise ProtocolError("a chunk larger than any frame in the server's answer")
        self.left = size
        return True


async def _open(
    remote: Remote,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, str, str]:
    url = urllib.parse.urlsplit(remote.endpoint)
    try:
        port = url.port or (443 if url.scheme == "https" else 80)
    except ValueError:
        raise unreachable(remote, ValueError("its port is not a number")) from None
    host = url.hostname or ""
    tls: Any = None
    if url.scheme == "https":
        import ssl

        tls = ssl.create_default_context()
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=tls, limit=MAX_HEAD), CONNECT_TIMEOUT
        )
    except (OSError, TimeoutError) as exc:
        raise unreachable(remote, exc) from None
    return reader, writer, url.netloc, url.path.rstrip("/")


async def _head(remote: Remote, reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    try:
        status_line = await asyncio.wait_for(reader.readline(), CONNECT_TIMEOUT)
        parts = status_line.decode("latin-1").split(" ", 2)
        status = int(parts[1])
        headers: dict[str, str] = {}
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
    except (OSError, TimeoutError, ValueError, IndexError, asyncio.LimitOverrunError) as exc:
        raise unreachable(remote, exc) from None
    return status, headers


async def ahttp_frames(remote: Remote, body: bytes) -> AsyncGenerator[bytes, None]:
    """POST one request body; yield the bodies of the frames that answer it (the caller stops
    after the final reply); `lost` when the answer ends before."""
    reader, writer, netloc, prefix = await _open(remote)
    try:
        auth = f"Authorization: Bearer {remote.token}\r\n" if remote.token else ""
        writer.write(
            (
                f"POST {prefix}{REQUEST_PATH} HTTP/1.1\r\nHost: {netloc}\r\n"
                f"Content-Type: {FRAMES}\r\nAccept: {FRAMES}\r\n"
                f"Stix-Protocol: {PROTOCOL_VERSION}\r\n{auth}"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            ).encode("latin-1")
            + body
        )
        try:
            await writer.drain()
        except OSError as exc:
            raise unreachable(remote, exc) from None
        status, headers = await _head(remote, reader)
        kind_of_body = headers.get("content-type", "").split(";")[0].strip().lower()
        if kind_of_body != FRAMES:
            if kind_of_body == "text/html" or 300 <= status < 400 or status in (401, 403, 407):
                raise proxy_login(remote.endpoint)
            raise DaemonUnavailable(
                f"{remote.endpoint} answered HTTP {status} ({kind_of_body or 'no type'}), "
                "not a stix API server's answer; check the endpoint"
            )
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        frames = _Body(reader, chunked)
        while True:
            try:
                header = await frames.exactly(HEADER.size)
                frame = None if header is None else await frames.exactly(body_length(header))
            except (ProtocolError, OSError, asyncio.IncompleteReadError):
                frame = None
            if frame is None:
                raise lost(remote)
            yield frame
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
