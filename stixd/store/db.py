"""The daemon's store: one row per actor with a version column, and an append-only event log.

Rows are written with conditional updates (`WHERE version = ?`), so a writer that read an old
row learns it instead of overwriting a newer decision. The state change and its event are
written in one transaction; nothing here ever waits on the network.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosqlite
import anyio
import msgspec

MIGRATIONS: list[str] = [
    # 1: actors and their history
    """
    CREATE TABLE actors (
        kind TEXT NOT NULL,
        id TEXT NOT NULL,
        parent TEXT,
        state TEXT NOT NULL,
        terminal INTEGER NOT NULL DEFAULT 0,
        spec TEXT NOT NULL DEFAULT '{}',
        data TEXT NOT NULL DEFAULT '{}',
        version INTEGER NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (kind, id)
    );
    CREATE INDEX actors_live ON actors (terminal, kind);
    CREATE INDEX actors_parent ON actors (kind, parent);
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        kind TEXT NOT NULL,
        id TEXT NOT NULL,
        event TEXT NOT NULL,
        from_state TEXT,
        to_state TEXT,
        why TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX events_actor ON events (kind, id, seq);
    """,
]


class StaleWrite(Exception):
    """The row changed since it was read: the writer must reload and decide again."""


class RowExists(Exception):
    pass


class Unstorable(ValueError):
    """A spec or data value that JSON cannot carry (`inf`, `nan`): refused before the write,
    since a row that cannot be read back would stop the daemon at its next start."""


def _column(value: dict[str, Any], kind: str, id: str, name: str) -> str:
    try:
        return json.dumps(value, allow_nan=False)
    except ValueError as exc:  # inf/nan ("out of range float"), or a circular reference
        raise Unstorable(f"{kind} {id}: {name} cannot be read back from JSON ({exc})") from None


@dataclass
class Row:
    kind: str
    id: str
    state: str
    version: int
    parent: str | None = None
    terminal: bool = False
    spec: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0
    updated_at: float = 0.0


@dataclass(frozen=True)
class Event:
    seq: int
    at: float
    kind: str
    id: str
    event: str
    from_state: str | None
    to_state: str | None
    why: str


_COLUMNS = "kind, id, parent, state, terminal, spec, data, version, created_at, updated_at"


_decode = msgspec.json.Decoder(dict[str, Any]).decode
"""The JSON columns, read several times faster than by ``json.loads`` (listing 1,000 managed
jobs decodes 2,000 of them)."""


def _row(r: aiosqlite.Row | tuple[Any, ...]) -> Row:
    return Row(
        kind=r[0],
        id=r[1],
        parent=r[2],
        state=r[3],
        terminal=bool(r[4]),
        spec=_decode(r[5]),
        data=_decode(r[6]),
        version=r[7],
        created_at=r[8],
        updated_at=r[9],
    )


def _truncate_wal(path: Path) -> None:
    conn = sqlite3.connect(path, timeout=5)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    except sqlite3.OperationalError:
        pass  # busy past the timeout: see Store.forget_overwritten
    finally:
        conn.close()


class Store:
    def __init__(
        self,
        db: aiosqlite.Connection,
        clock: Callable[[], float] = time.time,
        path: Path | None = None,
    ) -> None:
        self._db = db
        self._clock = clock
        self._path = path
        """The database file, for `forget_overwritten` (None: an in-memory store, no files)."""
        self._listeners: list[Callable[[Row], None]] = []
        self._writing = anyio.Lock()
        """One write transaction at a time on the shared connection: a rollback (a duplicate
        insert, a stale update) must undo only its own statements, never those of another
        actor's write that is between its execute and its commit."""

    def on_write(self, listener: Callable[[Row], None]) -> None:
        """Called after every committed write with the row as written."""
        self._listeners.append(listener)

    def _notify(self, row: Row) -> None:
        for listener in self._listeners:
            listener(row)

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[None]:
        """One write transaction at a time, and shielded once it holds the connection: a
        caller cancelled between its statements and its commit would otherwise leave them
        for the next writer's commit (or rollback)."""
        async with self._writing:
            with anyio.CancelScope(shield=True):
                yield

    async def insert(self, row: Row, event: str, why: str = "") -> Row:
        async with self._transaction():
            await self._insert(row, event, why)
        self._notify(row)
        return row

    async def insert_next(
        self, kind: str, make: Callable[[int], Row], event: str, why: str = ""
    ) -> Row:
        """Insert ``make(n)`` with ``n`` the next numeric id of `kind` (one past the largest),
        allocated inside the write so concurrent callers never collide and never retry."""
        async with self._transaction():
            async with self._db.execute(
                "SELECT MAX(CAST(id AS INTEGER)) FROM actors WHERE kind=?", (kind,)
            ) as cur:
                r = await cur.fetchone()
            row = make((int(r[0]) if r and r[0] is not None else 0) + 1)
            await self._insert(row, event, why)
        self._notify(row)
        return row

    async def _insert(self, row: Row, event: str, why: str) -> None:
        now = self._clock()
        row.created_at = row.updated_at = now
        row.version = 1
        values = (
            row.kind,
            row.id,
            row.parent,
            row.state,
            int(row.terminal),
            _column(row.spec, row.kind, row.id, "spec"),
            _column(row.data, row.kind, row.id, "data"),
            row.version,
            now,
            now,
        )
        try:
            await self._db.execute(
                f"INSERT INTO actors ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)", values
            )
        except aiosqlite.IntegrityError:
            await self._db.rollback()
            raise RowExists(f"{row.kind} {row.id} already exists") from None
        await self._append(row.kind, row.id, event, None, row.state, why, now)
        await self._db.commit()

    async def update(
        self,
        row: Row,
        *,
        event: str,
        state: str | None = None,
        terminal: bool | None = None,
        spec: dict[str, Any] | None = None,
        data: dict[str, Any] | None = None,
        why: str = "",
        record_event: bool = True,
    ) -> Row:
        """Write a new state/spec/data for `row` if nobody wrote it since `row.version`."""
        now = self._clock()
        new = Row(
            kind=row.kind,
            id=row.id,
            parent=row.parent,
            state=state if state is not None else row.state,
            terminal=terminal if terminal is not None else row.terminal,
            spec=spec if spec is not None else row.spec,
            data=data if data is not None else row.data,
            version=row.version + 1,
            created_at=row.created_at,
            updated_at=now,
        )
        values = (
            new.state,
            int(new.terminal),
            _column(new.spec, row.kind, row.id, "spec"),
            _column(new.data, row.kind, row.id, "data"),
            new.version,
            now,
            row.kind,
            row.id,
            row.version,
        )
        async with self._transaction():
            cur = await self._db.execute(
                "UPDATE actors SET state=?, terminal=?, spec=?, data=?, version=?, updated_at=? "
                "WHERE kind=? AND id=? AND version=?",
                values,
            )
            if cur.rowcount != 1:
                await self._db.rollback()
                raise StaleWrite(f"{row.kind} {row.id} changed since version {row.version}")
            if record_event:
                await self._append(row.kind, row.id, event, row.state, new.state, why, now)
            await self._db.commit()
        self._notify(new)
        return new

    async def _append(
        self,
        kind: str,
        id_: str,
        event: str,
        from_state: str | None,
        to_state: str | None,
        why: str,
        at: float,
    ) -> None:
        await self._db.execute(
            "INSERT INTO events (at, kind, id, event, from_state, to_state, why) "
            "VALUES (?,?,?,?,?,?,?)",
            (at, kind, id_, event, from_state, to_state, why),
        )

    async def record(self, kind: str, id_: str, event: str, why: str = "") -> None:
        """An event that changes no state (a decision, a warning, a supervisor restart)."""
        async with self._transaction():
            await self._append(kind, id_, event, None, None, why, self._clock())
            await self._db.commit()

    async def forget_overwritten(self) -> None:
        """Leave no copy of overwritten values in the files: call after a write that dropped a
        secret. ``secure_delete`` zeroes freed space in the database's pages; this moves the
        pages written since into the database and empties the write-ahead log, which still
        holds their earlier versions.

        From a connection of its own: a read on the shared one may be between its steps, and
        SQLite refuses a checkpoint beside it; this one waits for such reads to end. Best
        effort: if they do not end within seconds, the next checkpoint catches up.
        """
        if self._path is None:
            return
        async with self._writing:
            await anyio.to_thread.run_sync(_truncate_wal, self._path)

    async def get(self, kind: str, id_: str) -> Row | None:
        async with self._db.execute(
            f"SELECT {_COLUMNS} FROM actors WHERE kind=? AND id=?", (kind, id_)
        ) as cur:
            r = await cur.fetchone()
        return _row(r) if r else None

    async def rows(
        self, kind: str, *, parent: str | None = None, include_terminal: bool = True
    ) -> list[Row]:
        sql = f"SELECT {_COLUMNS} FROM actors WHERE kind=?"
        args: list[Any] = [kind]
        if parent is not None:
            sql += " AND parent=?"
            args.append(parent)
        if not include_terminal:
            sql += " AND terminal=0"
        sql += " ORDER BY created_at, id"
        async with self._db.execute(sql, args) as cur:
            return [_row(r) for r in await cur.fetchall()]

    async def live_rows(self) -> list[Row]:
        async with self._db.execute(
            f"SELECT {_COLUMNS} FROM actors WHERE terminal=0 ORDER BY kind, created_at"
        ) as cur:
            return [_row(r) for r in await cur.fetchall()]

    async def events(self, kind: str, id_prefix: str, limit: int = 200) -> list[Event]:
        """History of one actor (`id_prefix` exact) or of its children (`prefix/…`).

        The children are matched by comparing the id's first characters, never by LIKE: a
        name's `_` or `%` would match any character there (`a_b` finding `axb`'s jobs), and
        LIKE ignores case."""
        children = id_prefix + "/"
        async with self._db.execute(
            "SELECT seq, at, kind, id, event, from_state, to_state, why FROM events "
            "WHERE (kind=? AND id=?) OR substr(id, 1, ?)=? ORDER BY seq DESC LIMIT ?",
            (kind, id_prefix, len(children), children, limit),
        ) as cur:
            rows = await cur.fetchall()
        return [Event(*r) for r in reversed(list(rows))]


async def _migrate(db: aiosqlite.Connection) -> None:
    async with db.execute("PRAGMA user_version") as cur:
        row = await cur.fetchone()
    current = int(row[0]) if row else 0
    if current > len(MIGRATIONS):
        raise RuntimeError(
            f"the store was written by a newer stix (schema {current}, this one knows "
            f"{len(MIGRATIONS)}): upgrade stix"
        )
    for number, script in enumerate(MIGRATIONS[current:], start=current + 1):
        await db.executescript(f"BEGIN; {script}; PRAGMA user_version = {number}; COMMIT;")


@asynccontextmanager
async def open_store(path: Path) -> AsyncIterator[Store]:
    path.parent.mkdir(parents=True, exist_ok=True)
    async with aiosqlite.connect(path, isolation_level="DEFERRED") as db:
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA synchronous=NORMAL")
        await db.execute("PRAGMA busy_timeout=5000")
        await db.execute("PRAGMA secure_delete=ON")  # see Store.forget_overwritten
        await _migrate(db)
        yield Store(db, path=path)
