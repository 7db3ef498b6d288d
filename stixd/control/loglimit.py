"""A log budget for lines a client can cause, so a flood of bad clients cannot fill the disk."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import anyio


class LogBudget:
    """The first `burst` lines of each `interval` seconds are logged; the rest are counted.

    When a window with suppressed lines ends, one summary line says how many were left out, so
    nothing is dropped without a record.
    """

    def __init__(
        self,
        log: Any,
        *,
        burst: int = 10,
        interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log = log
        self.burst = burst
        self.interval = interval
        self.clock = clock
        self._window_start = clock()
        self._used = 0
        self.suppressed = 0

    def warning(self, event: str, **fields: Any) -> None:
        if self._take():
            self.log.warning(event, **_clipped(fields))

    def exception(self, event: str, **fields: Any) -> None:
        """Log with the current exception's traceback, within the same budget."""
        if self._take():
            self.log.exception(event, **_clipped(fields))

    def flush(self) -> None:
        """End the window if its time is up, telling how many lines it suppressed."""
        now = self.clock()
        if now - self._window_start < self.interval:
            return
        if self.suppressed:
            self.log.warning(
                "log_lines_suppressed",
                count=self.suppressed,
                seconds=round(now - self._window_start, 1),
                why=f"too many bad clients; the first {self.burst} of every "
                f"{self.interval:g}s are logged",
            )
        self._window_start = now
        self._used = 0
        self.suppressed = 0

    async def flush_periodically(self) -> None:
        while True:
            await anyio.sleep(self.interval)
            self.flush()

    def _take(self) -> bool:
        self.flush()
        if self._used < self.burst:
            self._used += 1
            return True
        self.suppressed += 1
        return False


FIELD_MAX = 500
"""Longest string field kept in a line: a client chooses what its errors quote."""


def _clipped(fields: dict[str, Any]) -> dict[str, Any]:
    return {
        k: f"{v[:FIELD_MAX]}… ({len(v)} chars)" if isinstance(v, str) and len(v) > FIELD_MAX else v
        for k, v in fields.items()
    }
