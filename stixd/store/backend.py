"""The seam between the store's logic (stixd/store/db.py) and a database engine.

The store says every write once, as an async function of a `Tx`, in SQLite's SQL; an engine
runs it in a transaction (SQLite: on aiosqlite's thread, in a group commit; PostgreSQL: on a
pooled asyncpg connection, with its SQL translated by stixd/store/dialect.py). Reads are
statements whose rows come back as tuples. Nothing here knows which engine is under it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class Conflict(Exception):
    """A statement broke a constraint (a duplicate key): its write is undone, alone."""


class StoreUnavailable(RuntimeError):
    """The store cannot be opened: one line that says which problem and what to do."""


class Tx(Protocol):
    """One write's view of its transaction."""

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        """Run one statement; the number of rows it changed. A broken constraint raises
        `Conflict`."""
        ...

    async def one(self, sql: str, args: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        """The first row a query finds, or None."""
        ...

    async def serialize(self, key: str) -> None:
        """Hold off every other transaction that asks for `key` until this one ends (two
        stores allocating numbers of one kind on one database)."""
        ...


Work = Callable[[Tx], Awaitable[T]]


class Backend(Protocol):
    async def write(self, work: Work[T], after: Callable[[T], None] | None = None) -> T:
        """Run `work` in a transaction and commit it; its result, given first to `after`
        once committed, or what it raised (nothing of it written).

        Cancelled before the write began: nothing is written. Once begun, it ends and is
        answered (committed or not, `after` called if it was) before the cancellation goes
        on, so the caller never misses a write that happened."""
        ...

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """The rows of one statement, run outside every write's transaction, on the last
        committed state (what a write answered before it began is there). SQLite runs it on a
        read-only connection; PostgreSQL on a pooled connection of its own, in autocommit
        (where the leases, PostgreSQL's alone, write through it)."""
        ...

    def pages(self, sql: str, size: int) -> AsyncIterator[list[tuple[Any, ...]]]:
        """The rows of one query, `size` at a time."""
        ...

    async def forget_overwritten(self) -> None: ...

    async def close(self) -> None:
        """Wait for the write in flight, refuse every later one (a writer waits for good)."""
        ...
