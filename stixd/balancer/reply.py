"""Writing one answer to a client: its head, then its body whole or as it comes.

The answer is framed for the client: by Content-Length when its length is known, chunked to an
HTTP/1.1 client otherwise, and to an HTTP/1.0 one by closing the connection at its end. HEAD
answers, 1xx, 204 and 304 carry no body.
"""

from __future__ import annotations

import http
from collections.abc import Iterable
from typing import Protocol

from stixd.balancer.asked import Request
from stixd.balancer.hop import Refusal

PHRASES = {s.value: s.phrase for s in http.HTTPStatus}
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
TEXT = (("Content-Type", "text/plain; charset=utf-8"),)


class Sink(Protocol):
    """The client's connection, as an answer is written to it."""

    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None:
        """Wait while the client reads slower than the answer comes (ConnectionError: gone)."""

    def abort(self) -> None: ...


class Reply:
    def __init__(self, sink: Sink, request: Request) -> None:
        self._sink = sink
        self._request = request
        self._headless = request.method == "HEAD"
        self._chunked = False
        self.started = False
        self.ended = False
        self.close = not request.keep_alive or request.upgrade
        """The connection is closed after this answer."""

    def continue_(self) -> None:
        """Tell a client that waits for it (`Expect: 100-continue`) to send its body."""
        if not self.started and self._request.version != "1.0":
            self._sink.write(CONTINUE)

    def send(
        self, status: int, reason: str, headers: Iterable[tuple[str, str]], body: bytes
    ) -> None:
        """The whole answer, in one write."""
        bodiless = self._headless or _bodiless(status)
        framing = "" if _bodiless(status) else f"Content-Length: {len(body)}\r\n"
        head = self._head(status, reason, headers, framing)
        self._sink.write(head if bodiless else head + body)
        self.ended = True

    def refuse(self, refusal: Refusal) -> None:
        if refusal.closes:
            self.close = True
        self.send(refusal.status, "", [*TEXT, *refusal.headers], refusal.text.encode())

    def start(
        self, status: int, reason: str, headers: Iterable[tuple[str, str]], length: int | None
    ) -> None:
        """The answer's head; its body follows through `write` and `end`. ``length``: the
        body's (for HEAD, the one not sent), None when it is not known."""
        if _bodiless(status):
            framing = ""
        elif length is not None:
            framing = f"Content-Length: {length}\r\n"
        elif self._headless:
            framing = ""
        elif self._request.version == "1.0":
            framing, self.close = "", True  # the end of the connection ends the body
        else:
            framing, self._chunked = "Transfer-Encoding: chunked\r\n", True
        self._headless = self._headless or _bodiless(status)
        self._sink.write(self._head(status, reason, headers, framing))

    async def write(self, data: bytes) -> None:
        if self._headless or not data:
            return
        self._sink.write(b"%x\r\n%b\r\n" % (len(data), data) if self._chunked else data)
        await self._sink.drain()

    def end(self) -> None:
        if self._chunked:
            self._sink.write(b"0\r\n\r\n")
        self.ended = True

    def abort(self) -> None:
        """Cut the answer short: the client sees it incomplete."""
        self.close = True
        self._sink.abort()

    def _head(
        self, status: int, reason: str, headers: Iterable[tuple[str, str]], framing: str
    ) -> bytes:
        self.started = True
        if self.close:
            framing += "Connection: close\r\n"
        elif self._request.version == "1.0":
            framing += "Connection: keep-alive\r\n"
        return head_bytes(status, reason, headers, framing)


def head_bytes(status: int, reason: str, headers: Iterable[tuple[str, str]], framing: str) -> bytes:
    lines = [f"HTTP/1.1 {status} {reason or PHRASES.get(status, 'Unknown')}\r\n"]
    lines += [f"{name}: {value}\r\n" for name, value in headers]
    lines.append(framing)
    lines.append("\r\n")
    return "".join(lines).encode("utf-8", "surrogateescape")


def closing_refusal(refusal: Refusal) -> bytes:
    """``refusal`` whole, for a client whose connection is closed after it (its head broke a
    limit, or could not be read)."""
    text = refusal.text.encode()
    framing = f"Content-Length: {len(text)}\r\nConnection: close\r\n"
    return head_bytes(refusal.status, "", [*TEXT, *refusal.headers], framing) + text


def _bodiless(status: int) -> bool:
    return status < 200 or status in (204, 304)
