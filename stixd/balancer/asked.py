"""A client's request as the front (`stixd.balancer.front`) parsed it: its head, and its body
as the client sends it."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from multidict import CIMultiDict

from stixd.balancer.hop import Refusal

HIGH_WATER = 256 * 1024
"""Body bytes waiting for the replica past which reading from the client pauses."""


class Flow(Protocol):
    """The client's connection, as a body holds its reading back."""

    def pause_reading(self, why: str) -> None: ...

    def resume_reading(self, why: str) -> None: ...


class Unfinished(ConnectionError):
    """A request's body stopped before its end: the client went away, or sent what cannot be
    read (``refusal`` says what to answer it, when it still can be answered)."""

    def __init__(self, refusal: Refusal | None) -> None:
        super().__init__(refusal.text.strip() if refusal else "the client went away")
        self.refusal = refusal


class Body:
    """A request's body, de-chunked, as it comes; a body the replica takes slower than the
    client sends it pauses reading from the client (no more than `HIGH_WATER` is held)."""

    def __init__(self, flow: Flow, loop: asyncio.AbstractEventLoop) -> None:
        self._flow = flow
        self._loop = loop
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._waiter: asyncio.Future[None] | None = None
        self.done = False
        """The whole body came."""
        self.lost: Unfinished | None = None
        """Why the body stopped before its end."""

    def feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        if self._size > HIGH_WATER:
            self._flow.pause_reading("body")
        self._wake()

    def finish(self) -> None:
        self.done = True
        self._wake()

    def fail(self, refusal: Refusal | None = None) -> None:
        if not self.done and self.lost is None:
            self.lost = Unfinished(refusal)
        self._wake()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def chunks(self) -> AsyncIterator[bytes]:
        while True:
            if self._chunks:
                data = self._chunks.popleft()
                self._size -= len(data)
                if self._size <= HIGH_WATER:
                    self._flow.resume_reading("body")
                yield data
            elif self.done:
                return
            elif self.lost is not None:
                raise self.lost
            else:
                self._waiter = self._loop.create_future()
                await self._waiter


@dataclass(slots=True, eq=False)
class Request:
    method: str
    path: str
    """As the client wrote it (path and query, raw)."""
    version: str
    """"1.1" or "1.0"."""
    headers: CIMultiDict[str]
    remote: str
    scheme: str
    body: Body | None
    """None when the request has none (no Content-Length, or 0, and not chunked)."""
    keep_alive: bool
    """The client wants the connection kept after this answer."""
    upgrade: bool = False
    """The client asked to switch protocols (the parser stopped after this head)."""

    @property
    def host(self) -> str:
        return self.headers.get("Host", "")
