"""Time as the runtime reads it: a clock handed in, real in the daemon, moved by hand in tests.

Every timer of the runtime goes through one: an actor's `after`, the supervisor's
restart-intensity window and the bound on an actor's last words. A test holding a
`ManualClock` moves time on with `advance` instead of waiting for it (kopf's fake time).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Protocol

import anyio
import anyio.lowlevel


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def now(self) -> float:
        """Seconds on a monotonic scale: only differences between two readings mean anything."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Return once `seconds` have passed on this clock."""
        ...

    def call_later(self, seconds: float, ring: Callable[[], None]) -> Cancellable:
        """Call `ring` (from the event loop, not in a task) once `seconds` have passed on this
        clock, unless cancelled first."""
        ...

    def fail_after(self, seconds: float) -> AbstractContextManager[object]:
        """A scope whose body is cancelled, and TimeoutError raised, once `seconds` have
        passed on this clock (anyio.fail_after on the clock's own time)."""
        ...


def until_aligned(clock: Clock, period: float) -> float:
    """Seconds from now to the first whole multiple of `period` on `clock` at least a quarter
    period away. Timers of one period armed this way by many actors at different moments come
    due at the same instants, so what each of them asks then can be asked once for all (a
    health check's cloud listing). None comes due much sooner than a period after it is armed
    (a period of an hour still means nothing in the next quarter hour), and one re-armed after
    work that took up to three quarters of the period keeps its instant."""
    wait = period - clock.now() % period
    return wait if wait >= period / 4 else wait + period


class RealClock:
    """The daemon's clock: the event loop's own time."""

    __slots__ = ()

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)

    def call_later(self, seconds: float, ring: Callable[[], None]) -> Cancellable:
        # asyncio's own timer (the daemon and its tests run on asyncio, for aiosqlite)
        return asyncio.get_running_loop().call_later(max(seconds, 0.0), ring)

    def fail_after(self, seconds: float) -> AbstractContextManager[object]:
        return anyio.fail_after(seconds)


@dataclass(eq=False)
class _Alarm:
    at: float
    ring: Callable[[], None]
    rang: bool = False


@dataclass(frozen=True)
class _Disarm:
    clock: ManualClock
    alarm: _Alarm

    def cancel(self) -> None:
        self.clock._disarm(self.alarm)


class ManualClock:
    """A clock for tests: time stands still until `advance` moves it on, and then every sleep
    and deadline whose time has come ends, in the order they were due."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._alarms: list[_Alarm] = []
        self._armed: list[anyio.Event] = []

    def now(self) -> float:
        return self._now

    @property
    def waiting(self) -> int:
        """How many sleeps and deadlines wait for time to move on."""
        return len(self._alarms)

    async def until_waiting(self, count: int = 1) -> None:
        """Return once `count` sleeps or deadlines wait on this clock, so an `advance` reaches
        them (a timer is armed by a task that may not have run yet). The deadline is the
        caller's."""
        while len(self._alarms) < count:
            armed = anyio.Event()
            self._armed.append(armed)
            await armed.wait()

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"time only moves forward, not by {seconds}")
        self._now += seconds
        due = sorted((a for a in self._alarms if a.at <= self._now), key=lambda a: a.at)
        for alarm in due:
            self._alarms.remove(alarm)
            alarm.rang = True
            alarm.ring()

    def call_later(self, seconds: float, ring: Callable[[], None]) -> Cancellable:
        alarm = self._arm(max(seconds, 0.0), ring)
        return _Disarm(self, alarm)

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await anyio.lowlevel.checkpoint()
            return
        woken = anyio.Event()
        alarm = self._arm(seconds, woken.set)
        try:
            await woken.wait()
        finally:
            self._disarm(alarm)

    @contextmanager
    def fail_after(self, seconds: float) -> Iterator[anyio.CancelScope]:
        scope = anyio.CancelScope()
        alarm = self._arm(seconds, scope.cancel)
        if alarm.at <= self._now:
            self.advance(0)  # no time at all: cancelled before it starts, as anyio's
        try:
            with scope:
                yield scope
        finally:
            self._disarm(alarm)
        if alarm.rang and scope.cancelled_caught:
            raise TimeoutError

    def _arm(self, seconds: float, ring: Callable[[], None]) -> _Alarm:
        alarm = _Alarm(at=self._now + seconds, ring=ring)
        self._alarms.append(alarm)
        armed, self._armed = self._armed, []
        for event in armed:
            event.set()
        return alarm

    def _disarm(self, alarm: _Alarm) -> None:
        if alarm in self._alarms:
            self._alarms.remove(alarm)
