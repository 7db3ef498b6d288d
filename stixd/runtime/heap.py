"""The cycle collector's schedule for a daemon that holds tens of thousands of long-lived actors.

CPython collects its oldest generation whenever the objects promoted into it since the last
full collection reach a quarter of those that survived it. Objects that live a few seconds (a
launch's, a health round's) are promoted too, so while managed jobs were admitted a full
collection came every couple of hundred jobs whatever the heap's size, and each walked the whole
heap (1.4 million objects at 5,000 jobs). Admission then cost more per job the more jobs the
daemon already held: in a probe (2026-12-06, a loaded machine) full collections took 4 ms per
admitted job at 1,000 jobs held and 18 ms at 5,000, while the store's statements and SQLite
steps per job stayed the same.

Here the survivors of every full collection are frozen (`gc.freeze`: the collector skips them;
reference counting still frees them), so the next one walks only what came since. A cycle of
garbage among frozen objects would stay, so once the frozen part has grown `growth` times since
the last whole collection, everything is thawed, collected once and frozen again. Each object
is then walked a bounded number of times however large the heap grows, and a garbage cycle
lives at most until the heap has grown that much.
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import anyio

OLDEST = 2
"""The generation whose collection is a full one."""
GROWTH = 2.0
"""How many times the frozen part may grow between two whole collections."""


class FrozenSurvivors:
    """Freezes what survives each full collection, on the event loop: the collector may run on
    any thread that allocates (aiosqlite's too), and calls `collected` there."""

    def __init__(self, loop: asyncio.AbstractEventLoop, growth: float = GROWTH) -> None:
        self._loop = loop
        self._growth = growth
        self._frozen = 0
        """Objects frozen since the last whole collection, as counted when each was frozen
        (some have been freed since: a sweep then comes sooner, never later)."""
        self._after_whole = 0
        """Objects left by the last whole collection (0: none has run yet)."""
        self._due = False
        self._sweeping = False
        self.freezes = 0
        self.sweeps = 0

    def collected(self, phase: str, info: dict[str, Any]) -> None:
        """A `gc.callbacks` entry: a full collection just ended, so freeze what it left."""
        if phase != "stop" or info.get("generation") != OLDEST or self._due or self._sweeping:
            return
        self._due = True
        try:
            self._loop.call_soon_threadsafe(self.freeze)
        except RuntimeError:  # the loop is closed: the daemon is gone, nothing to keep
            self._due = False

    def freeze(self) -> None:
        """Freeze the oldest generation, which holds what the last full collection left and
        what was promoted since. Counted from that generation alone: `gc.get_freeze_count`
        walks every frozen object (a tenth of a second at a million of them)."""
        self._due = False
        survivors = len(gc.get_objects(generation=OLDEST))
        gc.freeze()
        self.freezes += 1
        if self._after_whole == 0:  # the first full collection walked the whole heap
            self._after_whole = survivors
        else:
            self._frozen += survivors
            if self._after_whole + self._frozen > self._growth * self._after_whole:
                self.sweep()

    def sweep(self) -> None:
        """Thaw everything, collect it all once, and freeze what is left."""
        self._sweeping = True
        try:
            gc.unfreeze()
            gc.collect()
            gc.freeze()
        finally:
            self._sweeping = False
        self.sweeps += 1
        self._after_whole = max(gc.get_freeze_count(), 1)  # walks them: once a doubling
        self._frozen = 0


async def keep_heap(growth: float = GROWTH) -> None:
    """Freeze the survivors of every full collection (see above) until cancelled; then thaw
    everything, so a daemon run inside a test leaves no frozen heap behind."""
    keeper = FrozenSurvivors(asyncio.get_running_loop(), growth)
    gc.callbacks.append(keeper.collected)
    try:
        await anyio.sleep_forever()
    finally:
        gc.callbacks.remove(keeper.collected)
        gc.unfreeze()
