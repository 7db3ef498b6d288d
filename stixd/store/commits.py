"""Group commit: the writes waiting for the store's connection go to it together, each in a
savepoint of one transaction, and are committed once.

A write is an async function of a `Tx` (stixd/store/backend.py); the engine's `send` runs a
batch of them (SQLite: on aiosqlite's thread, so a write's statements and checks are one trip
there, not one per statement). A write that raises is rolled back to its savepoint and its
caller gets the exception; the others in the batch are not touched. No caller hears of its
write before the one COMMIT that holds it returns, so a crash loses only writes whose callers
are still waiting. With 1,000 managed jobs launching, the store's lock was held 83 % of the
time at three trips and a commit per write.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import anyio

from stixd.store.backend import Work

T = TypeVar("T")

MAX_BATCH = 256
"""Writes in one transaction at most: a batch's callers all wait for its commit."""


@dataclass(eq=False, slots=True)
class _Write(Generic[T]):
    work: Work[T]
    taken: bool = False
    """In a batch that went to the connection's thread: it will end, whatever the caller."""
    finished: bool = False
    wake: anyio.Event = field(default_factory=anyio.Event)
    """Set when the write has finished, or when its caller is to lead the next batch."""
    value: Any = None
    error: BaseException | None = None

    def outcome(self) -> T:
        if self.error is not None:
            raise self.error
        return self.value  # type: ignore[no-any-return]


Send = Callable[[list["_Write[Any]"]], Awaitable[None]]
"""Runs every write of a batch in one transaction, each in a savepoint: sets each one's
`value` or `error` (all of them the commit's error if the commit failed)."""


class GroupCommit:
    """One writer at a time leads: it takes the lock and sends batches of what waits until its
    own write is among them, then hands the lead to the first writer still waiting. The others
    only wait to be told their outcome."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self._waiting: list[_Write[Any]] = []
        self._leader: _Write[Any] | None = None
        self.lock = anyio.Lock()
        """Held while a leader sends batches; `Store.close` takes it for good."""

    async def write(self, work: Work[T], after: Callable[[T], None] | None = None) -> T:
        """Run `work` in a transaction and commit it; its result (given first to `after`), or
        what it raised.

        Cancelled before a batch took the write: nothing is written. Once taken, the write
        ends and is answered (committed or not, `after` called if it was) before the
        cancellation goes on, so the caller never misses a write that happened."""
        w: _Write[T] = _Write(work)
        self._waiting.append(w)
        if self._leader is None:
            self._leader = w
        else:
            try:
                await w.wake.wait()
            except BaseException:
                if not w.taken:
                    self._waiting.remove(w)
                    if self._leader is w:
                        self._hand_on()
                    raise
                # its batch is on the connection's thread: the caller learns how it ended, as
                # one that held the store's lock did; the cancel scope cancels it again at its
                # next await
                with anyio.CancelScope(shield=True):
                    await w.wake.wait()
        if not w.finished:
            await self._lead(w)
        value = w.outcome()
        if after is not None:
            after(value)
        return value

    async def _lead(self, w: _Write[Any]) -> None:
        """Send batches until `w`'s has been committed, then hand the lead on. Cancelled while
        waiting for the lock (a `forget_overwritten`), `w` leaves unwritten."""
        try:
            await self.lock.acquire()
        except BaseException:
            self._waiting.remove(w)
            self._hand_on()
            raise
        with anyio.CancelScope(shield=True):
            try:
                while not w.finished:
                    await self._flush()
            finally:
                self.lock.release()
                self._hand_on()

    def _hand_on(self) -> None:
        self._leader = self._waiting[0] if self._waiting else None
        if self._leader is not None:
            self._leader.wake.set()

    async def _flush(self) -> None:
        batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
        for w in batch:
            w.taken = True
        try:
            await self._send(batch)
        except BaseException as exc:  # nothing of the batch was written
            for w in batch:
                w.error = w.error or exc
        finally:
            for w in batch:
                w.finished = True
                w.wake.set()
