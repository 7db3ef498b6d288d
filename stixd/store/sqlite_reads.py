"""The SQLite store's readers: a few read-only connections beside the one writer, so a read
never queues behind a write's transaction, and reads run on several threads side by side.

The database is in WAL mode: a reader sees the database as of the last commit before its
statement began (one statement is one read transaction: a consistent, committed snapshot) and
never blocks the writer, nor is blocked by it. A write is answered only once committed
(stixd/store/commits.py), so a read that a caller starts after its write returned sees it: a
request reads its own writes. Nothing reads through a reader inside a write: a write's own
statements run on the writer's thread, through its `Tx`.

Each reader is an aiosqlite connection (a thread of its own; SQLite releases the GIL while it
steps) with ``PRAGMA query_only``: a statement that would write is refused, never committed
beside the writer. They hold nothing a `kill -9` could lose.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite
import anyio

from stixd.store.backend import StoreUnavailable

READERS = 2
"""Read connections of a SQLite store by default (`daemon.store_readers`): two, so a long read
(a page of 2,000 jobs) never holds up every other. More threads than that fight the event loop
for the GIL on two cores: 100 `status` clients measured 0.72-0.99x the one-connection store
with 4, 1.1-1.4x with 1, 1.0-1.4x with 2 (bench/bench_team_server.py)."""
CLOSE_SECONDS = 5.0
"""How long the close waits for the reads queued to run."""


class Readers:
    """A fixed set of read-only connections to one database file. A read goes to the one with
    the fewest reads queued: aiosqlite runs a connection's calls one after another on its
    thread, so the reads queued on one are pipelined (its thread never idles between them
    while the loop hands it the next), and each is one statement, its own read transaction."""

    def __init__(self, path: Path, conns: list[aiosqlite.Connection]) -> None:
        self._path = path
        self._all = conns
        self._queued = [0] * len(conns)
        self._closed = False

    def __len__(self) -> int:
        return len(self._all)

    def _refuse_if_closed(self) -> None:
        if self._closed:
            raise StoreUnavailable("the store is closed: the daemon is stopping")

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Every row of one statement, in one trip to a reader's thread."""
        self._refuse_if_closed()
        i = min(range(len(self._all)), key=self._queued.__getitem__)
        self._queued[i] += 1
        try:
            return list(await self._all[i].execute_fetchall(sql, args))  # type: ignore[arg-type]
        finally:
            self._queued[i] -= 1

    async def pages(self, sql: str, size: int) -> AsyncIterator[list[tuple[Any, ...]]]:
        """The rows of one statement `size` at a time, all from the snapshot it began with, on
        a connection of its own for the iteration (a boot's): the shared ones never hold a
        statement open, so a read on them always sees the latest commit."""
        self._refuse_if_closed()
        conn = await _open_reader(self._path)
        try:
            async with conn.execute(sql) as cur:
                while found := await cur.fetchmany(size):
                    yield list(found)  # type: ignore[arg-type]
        finally:
            with anyio.CancelScope(shield=True):
                await conn.close()

    async def trace(self, callback: Callable[[str], object]) -> None:
        """Every statement any shared reader runs, given to `callback`."""
        for conn in self._all:
            await conn.set_trace_callback(callback)

    async def close(self) -> None:
        """Refuse new reads and close every reader, once the reads queued on it have run.
        Once: the store's close and its opener's exit both call it."""
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True), anyio.move_on_after(CLOSE_SECONDS):
            for conn in self._all:
                await conn.close()


async def _open_reader(path: Path) -> aiosqlite.Connection:
    conn = await aiosqlite.connect(path, isolation_level=None)  # autocommit: a statement is
    try:  # its own read transaction
        await conn.execute("PRAGMA query_only=ON")
        await conn.execute("PRAGMA busy_timeout=5000")
    except BaseException:
        with anyio.CancelScope(shield=True):
            await conn.close()
        raise
    return conn


@asynccontextmanager
async def open_readers(path: Path, count: int) -> AsyncIterator[Readers | None]:
    """`count` readers of the WAL database at `path` (already made and migrated by the
    writer), all closed on the way out; None for 0 (every read on the writer's connection)."""
    if count <= 0:
        yield None
        return
    conns: list[aiosqlite.Connection] = []
    try:
        for _ in range(count):
            conns.append(await _open_reader(path))
    except BaseException as exc:
        with anyio.CancelScope(shield=True):
            for conn in conns:
                await conn.close()
        if isinstance(exc, sqlite3.Error | OSError):
            raise StoreUnavailable(f"cannot open a reader of {path}: {exc}") from None
        raise
    readers = Readers(path, conns)
    try:
        yield readers
    finally:
        await readers.close()
