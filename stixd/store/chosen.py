"""The store the configuration chooses: SQLite in the home (the default), or the PostgreSQL
database that `db` names (`db: postgresql://user@host:port/dbname` in config.yaml, the key
SkyPilot's API server reads too)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

from stixd.store.db import MIGRATIONS, Store, open_store
from stixd.store.postgres import PgBackend, open_pool
from stixd.store.sqlite_reads import READERS


@asynccontextmanager
async def open_postgres(url: str, *, group: bool = False) -> AsyncIterator[Store]:
    """The store on the database `url`, migrated; `StoreUnavailable` if it cannot be."""
    async with open_pool(url, MIGRATIONS) as pool:
        yield Store(PgBackend(pool, group=group))


def open_chosen(
    home: Path, db: str | None, readers: int = READERS
) -> AbstractAsyncContextManager[Store]:
    """`readers`: the SQLite store's read connections (`daemon.store_readers`)."""
    return open_store(home / "state.db", readers) if db is None else open_postgres(db)
