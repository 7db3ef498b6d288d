"""Writes as async functions of a transaction (`Tx`), reads as tuples: the shape in which the
tables beside the actors' (users and tokens, stixd/store/identity.py) are written, so the same
functions run on any engine behind the store.

On SQLite a `Tx` is the connection on its own thread: its calls never suspend, so a write's
coroutine runs to its end in one step inside the group commit's savepoint (`_drive`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, Protocol, TypeVar

import aiosqlite

from stixd.store.commits import GroupCommit

T = TypeVar("T")


class Tx(Protocol):
    """One write's view of its transaction."""

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        """Run one statement; the number of rows it changed."""
        ...

    async def one(self, sql: str, args: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        """The first row a query finds, or None."""
        ...

    async def serialize(self, key: str) -> None:
        """Hold off every other transaction that asks for `key` until this one ends (two
        stores on one database deciding from the same rows)."""
        ...


Work = Callable[[Tx], Awaitable[T]]


class SqliteTx:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        return self._conn.execute(sql, args).rowcount

    async def one(self, sql: str, args: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        found: tuple[Any, ...] | None = self._conn.execute(sql, args).fetchone()
        return found

    async def serialize(self, key: str) -> None:
        """Nothing to do: a SQLite database has one writer at a time."""


def _drive(step: Awaitable[T]) -> T:
    """The result of a coroutine that never waits (a write on a `SqliteTx`)."""
    assert isinstance(step, Coroutine)
    try:
        step.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    step.close()
    raise RuntimeError("a store write waited on something other than its transaction")


class TxBackend:
    def __init__(self, db: aiosqlite.Connection, commits: GroupCommit) -> None:
        self._db = db
        self._commits = commits

    async def write(self, work: Work[T], after: Callable[[T], None] | None = None) -> T:
        """`work` in a savepoint of the group commit, committed; its result or its error."""
        return await self._commits.write(lambda conn: _drive(work(SqliteTx(conn))), after)

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        async with self._db.execute(sql, args) as cur:
            return [tuple(r) for r in await cur.fetchall()]
