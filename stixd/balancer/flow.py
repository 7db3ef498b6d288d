"""asyncio's write flow control, shared by both sides of the balancer's connections."""

from __future__ import annotations

import asyncio


class WriteFlow:
    """A protocol's writes held back while its transport's buffer is full: `pause_writing`
    makes a future that `drained` awaits, `resume_writing` (or the connection's end, through
    `_wake_writer`) sets it."""

    _loop: asyncio.AbstractEventLoop
    _drained: asyncio.Future[None] | None

    def pause_writing(self) -> None:
        if self._drained is None:
            self._drained = self._loop.create_future()

    def resume_writing(self) -> None:
        self._wake_writer()

    def _wake_writer(self) -> None:
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)

    async def drained(self) -> None:
        """Once the transport takes writes again (at once when it never stopped)."""
        if self._drained is not None:
            await self._drained
