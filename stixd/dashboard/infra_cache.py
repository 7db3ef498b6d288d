"""What `stixctl check` and `show-gpus` answer, kept by the dashboard and refreshed in the
background: an infra check may ask a cloud and `show-gpus` may fetch a catalog, and a page is
never to wait on either. The page shows the last answers (or that they are coming); a refresh
that completes is told to open pages as an `infra` change."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from stixproto import messages as m

REFRESH_EVERY = 300.0
REFRESH_TIMEOUT = 60.0


class InfraCache:
    def __init__(self, ask: Callable[[Any], Awaitable[Any]], changed: Callable[[], None]) -> None:
        self._ask = ask
        self._changed = changed
        self.check: m.CheckReply | None = None
        self.gpus: m.Table | None = None
        self.error: str | None = None
        self.at = 0.0
        self._task: asyncio.Task[None] | None = None

    def freshen(self) -> None:
        """Start a refresh unless one runs or the answers are recent; returns at once."""
        if self._task is not None and not self._task.done():
            return
        if time.monotonic() - self.at < REFRESH_EVERY and self.check is not None:
            return
        self._task = asyncio.get_running_loop().create_task(self._refresh())

    async def _refresh(self) -> None:
        self.at = time.monotonic()
        try:
            async with asyncio.timeout(REFRESH_TIMEOUT):
                self.check = await self._ask(m.Check())
                self._changed()
                self.gpus = await self._ask(m.ShowGpus())
            self.error = None
        except TimeoutError:
            self.error = f"the infras did not answer within {REFRESH_TIMEOUT:g}s; retried later"
        except Exception as exc:  # shown on the page; the next refresh tries again
            self.error = f"cannot list the infras and GPUs: {getattr(exc, 'message', exc)}"
        self._changed()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
