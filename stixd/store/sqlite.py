"""The SQLite engine of the store (the default): one aiosqlite connection that writes, in group
commits on its thread, and a few read-only connections beside it (stixd/store/sqlite_reads.py)
that every read goes to, so no read waits for a write's transaction."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import anyio

from stixd.store.backend import Conflict, StoreUnavailable, Work
from stixd.store.commits import GroupCommit, _Write
from stixd.store.sqlite_reads import Readers

T = TypeVar("T")


class SqliteTx:
    """A `Tx` on the connection's own thread: its calls finish without ever suspending, so a
    write's coroutine runs to its end in one step there (`_drive`)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        try:
            return self._conn.execute(sql, args).rowcount
        except sqlite3.IntegrityError as exc:
            raise Conflict(str(exc)) from None

    async def one(self, sql: str, args: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        found: tuple[Any, ...] | None = self._conn.execute(sql, args).fetchone()
        return found

    async def serialize(self, key: str) -> None:
        """Nothing to do: a SQLite database has one writer at a time."""


def _drive(step: Coroutine[Any, Any, T]) -> T:
    """The result of a coroutine that never waits (a write on a `SqliteTx`)."""
    try:
        step.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    step.close()
    raise RuntimeError("a store write waited on something other than its transaction")


def run_batch(conn: sqlite3.Connection, batch: list[_Write[Any]]) -> None:
    """On the connection's thread: every write of `batch` in one transaction, each alone."""
    tx = SqliteTx(conn)
    conn.execute("BEGIN")
    try:
        for w in batch:
            conn.execute("SAVEPOINT one_write")
            try:
                w.value = _drive(w.work(tx))  # type: ignore[arg-type]
            except Exception as exc:  # the write's own failure: it alone is undone
                w.error = exc
                conn.execute("ROLLBACK TO one_write")
            conn.execute("RELEASE one_write")
        conn.commit()
    except BaseException as exc:  # the transaction itself failed: none of it was written
        if conn.in_transaction:
            conn.rollback()
        for w in batch:
            w.value, w.error = None, exc
        if not isinstance(exc, Exception):
            raise


def sender(db: aiosqlite.Connection) -> Callable[[list[_Write[Any]]], Any]:
    """The group commit's `send` for `db`: a batch as one call on aiosqlite's thread."""

    async def send(batch: list[_Write[Any]]) -> None:
        # aiosqlite has no public call for a function on its thread; `_execute` is the one
        # its own methods use (pinned by tests/test_store_commits.py)
        run: Callable[..., Any] = db._execute
        await run(lambda: run_batch(db._conn, batch))

    return send


def _truncate_wal(path: Path) -> None:
    conn = sqlite3.connect(path, timeout=5)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    except sqlite3.OperationalError:
        pass  # busy past the timeout: see SqliteBackend.forget_overwritten
    finally:
        conn.close()


class SqliteBackend:
    def __init__(
        self, db: aiosqlite.Connection, path: Path | None = None, readers: Readers | None = None
    ) -> None:
        self.db = db
        self._path = path
        """The database file, for `forget_overwritten` (None: an in-memory store, no files)."""
        self.readers = readers
        """Where every read goes; None: to the writer's connection, in its queue behind the
        writes (an in-memory store, or `daemon.store_readers: 0`)."""
        self.commits = GroupCommit(sender(db))
        """Every write is one function on the connection's thread, in a savepoint of a
        transaction shared with the writes waiting beside it, committed once: a rollback (a
        duplicate insert, a stale update) undoes only its own statements."""

    async def write(self, work: Work[T], after: Callable[[T], None] | None = None) -> T:
        return await self.commits.write(work, after)

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if self.readers is not None:
            return await self.readers.fetch(sql, args)
        async with self.db.execute(sql, args) as cur:
            return list(await cur.fetchall())  # type: ignore[arg-type]

    async def pages(self, sql: str, size: int) -> AsyncIterator[list[tuple[Any, ...]]]:
        if self.readers is not None:
            async for page in self.readers.pages(sql, size):
                yield page
            return
        async with self.db.execute(sql) as cur:
            while found := await cur.fetchmany(size):
                yield list(found)  # type: ignore[arg-type]

    async def trace(self, callback: Callable[[str], object]) -> None:
        """Every statement the store runs, on any of its connections, given to `callback`
        (what tests count and explain)."""
        await self.db.set_trace_callback(callback)
        if self.readers is not None:
            await self.readers.trace(callback)

    async def forget_overwritten(self) -> None:
        """Leave no copy of overwritten values in the files: ``secure_delete`` zeroes freed
        space in the database's pages; this moves the pages written since into the database
        and empties the write-ahead log, which still holds their earlier versions.

        From a connection of its own: a read on the shared one may be between its steps, and
        SQLite refuses a checkpoint beside it; this one waits for such reads to end. Best
        effort: if they do not end within seconds, the next checkpoint catches up.
        """
        if self._path is None:
            return
        async with self.commits.lock:
            await anyio.to_thread.run_sync(_truncate_wal, self._path)

    async def close(self) -> None:
        await self.commits.lock.acquire()  # never released: this store writes no more
        with anyio.CancelScope(shield=True):
            if self.readers is not None:
                await self.readers.close()
            await self.db.close()


async def migrate(db: aiosqlite.Connection, migrations: Sequence[str]) -> None:
    async with db.execute("PRAGMA user_version") as cur:
        row = await cur.fetchone()
    current = int(row[0]) if row else 0
    if current > len(migrations):
        raise StoreUnavailable(
            f"the store was written by a newer stix (schema {current}, this one knows "
            f"{len(migrations)}): upgrade stix"
        )
    for number, script in enumerate(migrations[current:], start=current + 1):
        await db.executescript(f"BEGIN; {script}; PRAGMA user_version = {number}; COMMIT;")
