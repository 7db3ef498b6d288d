"""The PostgreSQL engine of the store (`db: postgresql://...` in config.yaml): a small asyncpg
pool, each write a transaction of its own on a pooled connection, the store's SQL translated
by stixd/store/dialect.py. asyncpg is imported only here, and only when a database is named.

Several stores (daemons) may share one database: an update is conditional on the version it
read (PostgreSQL re-reads the row after a concurrent commit, so the later writer finds 0 rows
and is told `StaleWrite`), and `insert_next` holds a transaction-level advisory lock per kind
while it reads the largest number and inserts the next.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar
from urllib.parse import urlsplit

import anyio

from stixd.store import dialect
from stixd.store.backend import Conflict, StoreUnavailable, Work
from stixd.store.commits import GroupCommit, _Write

T = TypeVar("T")

POOL_SIZE = 8
"""Connections at most: a database with the default 100 connections serves a dozen replicas."""
KEPT_FOR_READS = 2
"""Connections of the pool writes never hold: a read (each on a pooled connection of its own,
outside any write's transaction) never queues behind writes that hold the rest."""
CONNECT_SECONDS = 10.0
STATEMENT_SECONDS = 60.0
"""A statement the server has not answered by then fails its call, never the daemon."""
RETRY_SECONDS = 30.0
"""How long a write or read waits for a database it lost before failing its caller."""
LOCK_SPACE = 7117
"""The first key of every advisory lock stix takes (the second is the lock's own)."""


class PgTx:
    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        import asyncpg

        try:
            status: str = await self._conn.execute(dialect.statement(sql), *args)
        except asyncpg.IntegrityConstraintViolationError as exc:
            raise Conflict(str(exc)) from None
        count = status.rsplit(" ", 1)[-1]  # "UPDATE 1", "INSERT 0 1", "DELETE 0"
        return int(count) if count.isdigit() else 0

    async def one(self, sql: str, args: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        found = await self._conn.fetchrow(dialect.statement(sql), *args)
        return tuple(found) if found is not None else None

    async def serialize(self, key: str) -> None:
        await self._conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", LOCK_SPACE, key)


class PgBackend:
    """Writes as plain transactions on the pool (`group=False`, the default: they run side by
    side on several connections), or in group commits on one connection at a time."""

    def __init__(self, pool: Any, *, group: bool = False) -> None:
        self.pool = pool
        self.commits = GroupCommit(self._send) if group else None
        self._writers = anyio.Semaphore(POOL_SIZE - KEPT_FOR_READS)
        self._closing = False
        self._writes = 0
        self._idle = anyio.Event()

    async def write(self, work: Work[T], after: Callable[[T], None] | None = None) -> T:
        if self.commits is not None:
            return await self.commits.write(work, after)
        if self._closing:
            await anyio.sleep_forever()  # as on SQLite: a write after the close waits for good
        self._writes += 1
        try:
            value = await _again_while_unreachable(lambda: self._once(work))
        finally:
            self._writes -= 1
            if self._closing and not self._writes:
                self._idle.set()
        if after is not None:
            after(value)
        return value

    async def _once(self, work: Work[T]) -> T:
        """One try of a write. Begun, it ends and is answered (bounded by STATEMENT_SECONDS a
        statement); a connection lost while committing is `_AtCommit`: it may have been."""
        async with self._writers:  # (waiting for it, the write has not begun: cancellable)
            return await self._begun(work)

    async def _begun(self, work: Work[T]) -> T:
        with anyio.CancelScope(shield=True):
            done: list[T] = []
            async with self.pool.acquire() as conn:
                transaction = conn.transaction()
                await transaction.start()
                try:
                    done.append(await work(PgTx(conn)))
                except BaseException:
                    with contextlib.suppress(Exception):  # a lost connection rolled it back
                        await transaction.rollback()
                    raise
                try:
                    await transaction.commit()
                except Exception as exc:
                    raise _AtCommit() from exc
        return done[0]

    async def _send(self, batch: list[_Write[Any]]) -> None:
        try:
            async with self._writers, self.pool.acquire() as conn, conn.transaction():
                tx = PgTx(conn)
                for w in batch:
                    try:
                        async with conn.transaction():  # a savepoint: a failure undoes only it
                            w.value = await w.work(tx)
                    except Exception as exc:  # the write's own failure
                        w.error = exc
        except Exception as exc:  # the transaction itself failed: none of it was written
            for w in batch:
                w.value, w.error = None, exc

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        found = await _again_while_unreachable(
            lambda: self.pool.fetch(dialect.statement(sql), *args)
        )
        return [tuple(r) for r in found]

    async def pages(self, sql: str, size: int) -> AsyncIterator[list[tuple[Any, ...]]]:
        async with self.pool.acquire() as conn, conn.transaction():
            cursor = await conn.cursor(dialect.statement(sql))
            while found := await cursor.fetch(size):
                yield [tuple(r) for r in found]

    async def forget_overwritten(self) -> None:
        """Nothing here: PostgreSQL keeps an overwritten row version until a vacuum reclaims
        it (autovacuum does, in time); a VACUUM per dropped secret would cost far more."""

    async def close(self) -> None:
        if self.commits is not None:
            await self.commits.lock.acquire()  # never released: this store writes no more
        else:
            self._closing = True
            if self._writes:
                await self._idle.wait()
        with anyio.CancelScope(shield=True), anyio.move_on_after(5) as late:
            await self.pool.close()
        if late.cancelled_caught:
            self.pool.terminate()


class _AtCommit(Exception):
    """The connection failed during COMMIT: the write may be in the database. Never tried
    again (its caller learns of the failure from `__cause__`, reloads and decides again)."""


def _lost_connection(exc: BaseException) -> bool:
    """A failure that leaves nothing written and may pass: the server restarting, failing
    over, or a pooled connection it closed (asyncpg opens a new one at the next try)."""
    import asyncpg

    return isinstance(
        exc,
        OSError
        | asyncpg.PostgresConnectionError
        | asyncpg.CannotConnectNowError
        | asyncpg.AdminShutdownError,
    )


async def _again_while_unreachable(attempt: Callable[[], Awaitable[T]]) -> T:
    """`attempt()`, tried again while the database cannot be reached, for `RETRY_SECONDS`:
    a restart of PostgreSQL is a pause of the daemon's writes, not an error in every actor."""
    deadline = anyio.current_time() + RETRY_SECONDS
    pause = 0.05
    while True:
        try:
            return await attempt()
        except _AtCommit as exc:
            raise exc.__cause__ from None  # type: ignore[misc]
        except Exception as exc:
            if not _lost_connection(exc) or anyio.current_time() + pause > deadline:
                raise
        await anyio.sleep(pause)  # (cancellable: nothing of the write is in the database)
        pause = min(pause * 2, 1.0)


def where(url: str) -> str:
    """`url` as it may be shown: user, host, port and database, never a password."""
    parts = urlsplit(url)
    user = f"{parts.username}@" if parts.username else ""
    port = f":{parts.port}" if parts.port else ""
    return f"{user}{parts.hostname or 'localhost'}{port}{parts.path or '/'}"


def _refusal(url: str, exc: BaseException) -> StoreUnavailable:
    """The one line a daemon that cannot open `url` exits with: which problem, what to do."""
    import asyncpg

    at = where(url)
    if isinstance(
        exc, asyncpg.InvalidPasswordError | asyncpg.InvalidAuthorizationSpecificationError
    ):
        return StoreUnavailable(
            f"the database {at} refused the login ({exc}): fix the user or password in "
            "`db` in config.yaml"
        )
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return StoreUnavailable(f"the database {at} does not exist: create it, or fix `db`")
    if isinstance(exc, asyncpg.PostgresError):
        return StoreUnavailable(f"the database {at} refused stix ({exc}): see its server log")
    return StoreUnavailable(
        f"cannot reach the database {at} ({exc or type(exc).__name__}): start PostgreSQL "
        "there, or fix `db` in config.yaml"
    )


async def migrate(conn: Any, migrations: Sequence[str]) -> None:
    """Apply the migrations this database lacks, in one transaction, one replica at a time."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1, 0)", LOCK_SPACE)
        await conn.execute(dialect.SCHEMA_VERSION)
        current = int(await conn.fetchval("SELECT version FROM schema_version") or 0)
        if current > len(migrations):
            raise StoreUnavailable(
                f"the store was written by a newer stix (schema {current}, this one knows "
                f"{len(migrations)}): upgrade stix"
            )
        if current == len(migrations):
            return
        if current == 0:
            await conn.execute(dialect.FUNCTIONS)
        for script in migrations[current:]:
            await conn.execute(dialect.schema(script))
        await conn.execute(
            "INSERT INTO schema_version (version) VALUES ($1) "
            "ON CONFLICT (one) DO UPDATE SET version = EXCLUDED.version",
            len(migrations),
        )


@asynccontextmanager
async def open_pool(url: str, migrations: Sequence[str]) -> AsyncIterator[Any]:
    """A migrated pool on `url`, closed on the way out; `StoreUnavailable` if it cannot be."""
    import asyncpg

    try:
        pool = await asyncpg.create_pool(
            url,
            min_size=1,
            max_size=POOL_SIZE,
            timeout=CONNECT_SECONDS,
            command_timeout=STATEMENT_SECONDS,
        )
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise _refusal(url, exc) from None
    try:
        async with pool.acquire() as conn:
            await migrate(conn, migrations)
        yield pool
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(5) as late:
            await pool.close()
        if late.cancelled_caught:
            pool.terminate()
