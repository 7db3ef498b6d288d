"""Periodic checks of many objects as one round a tick, waking only the owners of what changed.

One timer per actor that checks something now and then (a cluster's health) costs a task, a
deadline and a wake-up of the actor every period: with ten thousand actors, a thousand
wake-ups a second on an idle daemon. Here the owners register what they last saw of each
object instead (``watch``); one task wakes at each tick, on the grid of ``until_aligned``,
looks at every watched object of a group at once (the caller's ``look``, which may answer a
whole group with one call), and tells only the owners whose object looks different from what
they registered. A told object leaves the watch list until its owner registers it again, so
at most one tell waits for each, however long its owner is busy.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from typing import NoReturn

import anyio
import structlog

from stixd.runtime.clock import Clock, RealClock, until_aligned

Look = Callable[[str, list[str]], Awaitable[dict[str, Hashable]]]
"""(group, keys) -> how each key looks now; a key left out could not be looked at (its owner
is told, and looks itself)."""
Tell = Callable[[str], None]


class Ticker:
    def __init__(self, clock: Clock | None = None) -> None:
        self.clock: Clock = clock if clock is not None else RealClock()
        self._watched: dict[str, dict[str, Hashable]] = {}
        """Per group, per key: what the key's owner last saw."""
        self._group: dict[str, str] = {}
        self.rounds = 0
        """Rounds looked at so far (one per group and tick with anything watched)."""

    def watch(self, group: str, key: str, seen: Hashable) -> None:
        """Check `key` (of `group`) at every tick from now on, against `seen`."""
        self.unwatch(key)
        self._watched.setdefault(group, {})[key] = seen
        self._group[key] = group

    def unwatch(self, key: str) -> None:
        group = self._group.pop(key, None)
        if group is not None:
            self._watched[group].pop(key, None)

    def watching(self, key: str) -> bool:
        return key in self._group

    async def run(
        self,
        period: Callable[[], float],
        look: Look,
        tell: Tell,
        log: structlog.stdlib.BoundLogger,
    ) -> NoReturn:
        """Look at every group at each tick, the groups at once, until cancelled."""
        while True:
            await self.clock.sleep(until_aligned(self.clock, period()))
            async with anyio.create_task_group() as tg:
                for group, keys in self._watched.items():
                    if keys:
                        tg.start_soon(self._round, group, list(keys), look, tell, log)

    async def _round(
        self,
        group: str,
        keys: list[str],
        look: Look,
        tell: Tell,
        log: structlog.stdlib.BoundLogger,
    ) -> None:
        self.rounds += 1
        try:
            now = await look(group, keys)
        except Exception as exc:  # the owners look themselves, and meet the error as before
            log.warning("round_failed", group=group, keys=len(keys), error=repr(exc))
            now = {}
        watched = self._watched.get(group, {})
        for key in keys:
            if key not in watched:
                continue  # let go (or moved) while the round looked
            if key in now and now[key] == watched[key]:
                continue
            self.unwatch(key)
            tell(key)
