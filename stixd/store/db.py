"""The daemon's store: one row per actor with a version column, and an append-only event log.

Rows are written with conditional updates (`WHERE version = ?`), so a writer that read an old
row learns it instead of overwriting a newer decision. The state change and its event are
written in one transaction; nothing here ever waits on the network.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosqlite
import msgspec

from stixd.store.backend import Backend, Conflict, StoreUnavailable, Tx
from stixd.store.leases import Leases
from stixd.store.sqlite import SqliteBackend, migrate
from stixd.store.sqlite_reads import READERS, open_readers
from stixproto.errors import InvalidRequest

__all__ = ["StoreUnavailable"]  # raised by `open_store`, and by the other engines' openers

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
    # 2: rows the daemon will not run (unreadable, or their actor kept crashing), until removed
    """
    CREATE TABLE quarantine (
        kind TEXT NOT NULL,
        id TEXT NOT NULL,
        reason TEXT NOT NULL,
        at REAL NOT NULL,
        PRIMARY KEY (kind, id)
    );
    """,
    # 3: the look-ups of the default listings (stixd/store/views.py)
    """
    CREATE INDEX actors_listing ON actors (kind, terminal, created_at, id);
    CREATE INDEX managed_jobs_by_number ON actors (CAST(id AS INTEGER))
        WHERE kind = 'managed_job';
    CREATE INDEX live_managed_jobs_by_number ON actors (CAST(id AS INTEGER))
        WHERE kind = 'managed_job' AND terminal = 0;
    CREATE INDEX live_managed_jobs_by_cluster ON actors (
        CASE WHEN json_valid(spec) THEN
            CASE WHEN json_extract(spec, '$.pool') IS NULL
            THEN json_extract(spec, '$.cluster') ELSE '' END
        END
    ) WHERE kind = 'managed_job' AND terminal = 0;
    """,
    # 4: the next number of a kind (`insert_next`) is one index probe, not a read of every row
    # of the kind (a managed job's submission at 10,000 jobs read all 10,000)
    """
    CREATE INDEX actors_number ON actors (kind, CAST(id AS INTEGER));
    """,
    # 5: users and their API tokens (stixd/store/identity.py)
    """
    CREATE TABLE users (
        name TEXT PRIMARY KEY,
        role TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE INDEX users_by_role ON users (role);
    CREATE TABLE tokens (
        id TEXT PRIMARY KEY,
        user_name TEXT NOT NULL,
        label TEXT,
        digest TEXT NOT NULL,
        created_at REAL NOT NULL,
        lifetime REAL,
        expires_at REAL,
        last_used_at REAL,
        revoked_at REAL,
        rotated_at REAL
    );
    CREATE INDEX tokens_by_user ON tokens (user_name);
    """,
    # 6: which replica runs which actor, when several share one PostgreSQL (stixd/store/leases.py);
    # made on SQLite too (one list of migrations), where nothing reads or writes it
    """
    CREATE TABLE leases (
        kind TEXT NOT NULL,
        id TEXT NOT NULL,
        owner TEXT NOT NULL,
        epoch INTEGER NOT NULL,
        expires_at REAL NOT NULL,
        PRIMARY KEY (kind, id)
    );
    CREATE INDEX leases_by_owner ON leases (owner);
    CREATE TABLE replicas (
        name TEXT PRIMARY KEY,
        address TEXT NOT NULL,
        seen_at REAL NOT NULL
    );
    """,
    # 7: a user's objects (stixd/control/ownership.py): `status` of one user among many reads
    # theirs, not every cluster's spec
    """
    CREATE INDEX actors_by_owner ON actors (
        kind, terminal, CASE WHEN json_valid(spec) THEN json_extract(spec, '$.owner') END
    );
    """,
    # 8: forwarding between replicas on other hosts (stixd/control/forward.py): each replica's
    # HTTP API address, and the deployment's secret a forwarding replica proves itself with
    """
    ALTER TABLE replicas ADD COLUMN api TEXT;
    CREATE TABLE deployment (name TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    # 9: the workspaces admins define with `stixctl workspaces create` (stixd/store/workspaces.py)
    """
    CREATE TABLE workspaces (
        name TEXT PRIMARY KEY,
        spec TEXT NOT NULL,
        updated_at REAL NOT NULL
    );
    """,
]

NEXT_NUMBER = "SELECT MAX(CAST(id AS INTEGER)) FROM actors WHERE kind=?"
"""The largest numeric id of a kind (`insert_next`), through the index `actors_number`."""


class StaleWrite(Exception):
    """The row changed since it was read: the writer must reload and decide again."""


class RowExists(Exception):
    pass


@dataclass(slots=True)  # every live actor keeps one: no dict per row
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
    quarantined: str | None = None
    """Why the daemon does not run this row's actor (it cannot be read, or the actor kept
    crashing); None for a healthy row. Such a row is shown failed until it is removed."""


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
_SELECT = (
    "SELECT a.kind, a.id, a.parent, a.state, a.terminal, a.spec, a.data, a.version, "
    "a.created_at, a.updated_at, q.reason FROM actors a "
    "LEFT JOIN quarantine q ON q.kind = a.kind AND q.id = a.id"
)
_DAMAGED_FLAG = (
    f"{_SELECT.replace('FROM actors a', 'FROM actors a INDEXED BY actors_live')} "
    "WHERE a.terminal < 0 OR (a.terminal > 0 AND a.terminal < 1) OR a.terminal > 1 "
    "ORDER BY a.kind, a.created_at"  # (without an order, SQLite plans a scan of the index)
)
"""Rows whose terminal flag is neither 0 nor 1 (text and blobs sort above every number): live
until removed, so a damaged flag never hides a row. Three ranges of the flag's index, empty in
a sound store, so listing live rows stays an index look-up however long the history."""

MAX_VERSION = 2**62
LAST_TIME = 253402300799.0  # 9999-12-31: later is no time stix wrote


_decode = msgspec.json.Decoder(dict[str, Any]).decode
"""The JSON columns, read several times faster than by ``json.loads`` (listing 1,000 managed
jobs decodes 2,000 of them)."""


class Unstorable(InvalidRequest):
    """A spec or data value that JSON cannot carry (`inf`, `nan`): refused before the write,
    since a row that cannot be read back would stop the daemon at its next start. The refusal
    is the request's error (an actor answers it and carries on), never a row no one can read."""


def _encode(value: dict[str, Any], kind: str = "", id: str = "", name: str = "") -> str:
    """JSON that `_decode` reads back: NaN and infinities are refused, not written."""
    try:
        return json.dumps(value, allow_nan=False)
    except ValueError:  # inf/nan ("out of range float"), or a circular reference
        where = f"{kind} {id} {name}: " if kind else ""
        raise Unstorable(
            f"{where}a value is not a finite number (NaN or infinity): give one"
        ) from None


def _column_problem(r: tuple[Any, ...]) -> str | None:
    """What is wrong with a row's plain columns, as stix never writes them; None if nothing."""
    kind, id_, parent, state, terminal, _, _, version, created_at, updated_at = r[:10]
    if type(kind) is not str or type(id_) is not str:
        return f"its kind or id is not text ({kind!r}, {id_!r})"
    if parent is not None and type(parent) is not str:
        return f"its parent is {parent!r}, not text"
    if type(state) is not str:
        return f"its state is {state!r}, not text"
    if type(terminal) is not int or terminal not in (0, 1):
        return f"its terminal flag is {terminal!r}, not 0 or 1"
    if type(version) is not int or not 0 < version < MAX_VERSION:
        return f"its version is {version!r}, not a positive integer"
    for name, value in (("created_at", created_at), ("updated_at", updated_at)):
        if type(value) not in (int, float) or not 0 <= value <= LAST_TIME:
            return f"its {name} is {value!r}, not a time"
    return None


def _row(r: tuple[Any, ...]) -> Row:
    """A stored row as a `Row`; one that cannot be read comes back quarantined with the reason
    (never raised: one bad row must not fail a listing, or the daemon's start). The checks of a
    sound row are one expression: a boot reads every live row through here."""
    try:
        spec, data = _decode(r[5]), _decode(r[6])
    except Exception:  # any failure to read is the row's own, recorded as its reason
        return _unreadable(r, _json_problem(r))
    kind, id_, parent, state, terminal, _, _, version, created_at, updated_at, held = r
    if not (
        type(kind) is str
        and type(id_) is str
        and type(state) is str
        and (parent is None or type(parent) is str)
        and type(terminal) is int
        and (terminal == 0 or terminal == 1)
        and type(version) is int
        and 0 < version < MAX_VERSION
        and type(created_at) is float
        and 0.0 <= created_at <= LAST_TIME
        and type(updated_at) is float
        and 0.0 <= updated_at <= LAST_TIME
    ):
        problem = _column_problem(r)
        if problem is not None:
            return _unreadable(r, problem, spec, data)
    return Row(
        kind, id_, state, version, parent, terminal == 1, spec, data, created_at, updated_at, held
    )


def _json_problem(r: tuple[Any, ...]) -> str:
    """Which JSON column of a row does not read, and why (only ever asked of a bad row)."""
    for name, text in (("spec", r[5]), ("data", r[6])):
        try:
            _decode(text)
        except Exception as exc:
            odd = isinstance(text, str) and any(t in text for t in ("NaN", "Infinity"))
            hint = ": NaN and Infinity are not JSON numbers" if odd else ""
            return f"its {name} is not a JSON object ({exc}){hint}"
    return "its spec or data is not a JSON object"


def _unreadable(
    r: tuple[Any, ...],
    reason: str,
    spec: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
) -> Row:
    """What can be read of a corrupt row: enough to list it and to remove it."""

    def text(value: Any) -> str:
        return value if type(value) is str else repr(value)

    def when(value: Any) -> float:
        ok = type(value) in (int, float) and 0 <= value <= LAST_TIME
        return float(value) if ok else 0.0

    version = r[7] if type(r[7]) is int and 0 < r[7] < MAX_VERSION else 0
    return Row(
        kind=text(r[0]),
        id=text(r[1]),
        parent=r[2] if r[2] is None or type(r[2]) is str else text(r[2]),
        state=text(r[3]),
        terminal=r[4] == 1 and type(r[4]) is int,
        spec=spec if spec is not None else {},
        data=data if data is not None else {},
        version=version,
        created_at=when(r[8]),
        updated_at=when(r[9]),
        quarantined=f"the stored row cannot be read: {reason}",
    )


async def _append(
    tx: Tx,
    kind: str,
    id_: str,
    event: str,
    from_state: str | None,
    to_state: str | None,
    why: str,
    at: float,
) -> None:
    await tx.execute(
        "INSERT INTO events (at, kind, id, event, from_state, to_state, why) "
        "VALUES (?,?,?,?,?,?,?)",
        (at, kind, id_, event, from_state, to_state, why),
    )


class Store:
    """The rows and their history on one engine (`backend`): every write is an async
    function of its transaction, said once here in SQLite's SQL, whatever the engine."""

    def __init__(self, backend: Backend, clock: Callable[[], float] = time.time) -> None:
        self.backend = backend
        self._clock = clock
        self._listeners: list[Callable[[Row], None]] = []
        self.leases: Leases | None = None
        """Set when several replicas share the database: every write of an actor row then
        takes (an insert) or checks (an update, a delete) this replica's lease on it, in the
        write's own transaction. None (SQLite, one daemon): no such check."""

    def on_write(self, listener: Callable[[Row], None]) -> None:
        """Called after every committed write with the row as written."""
        self._listeners.append(listener)

    def _notify(self, row: Row) -> None:
        for listener in self._listeners:
            listener(row)

    async def insert(self, row: Row, event: str, why: str = "") -> Row:
        values = self._insert_values(row)
        return await self.backend.write(
            lambda tx: self._insert(tx, row, values, event, why), self._notify
        )

    async def insert_next(
        self, kind: str, make: Callable[[int], Row], event: str, why: str = ""
    ) -> Row:
        """Insert ``make(n)`` with ``n`` the next numeric id of `kind` (one past the largest),
        allocated inside the write so concurrent callers never collide and never retry."""
        now = self._clock()

        async def work(tx: Tx) -> Row:
            await tx.serialize(f"next {kind}")  # another store on the database waits here
            r = await tx.one(NEXT_NUMBER, (kind,))
            row = make((int(r[0]) if r and r[0] is not None else 0) + 1)
            return await self._insert(tx, row, self._insert_values(row, now), event, why)

        return await self.backend.write(work, self._notify)

    def _insert_values(self, row: Row, now: float | None = None) -> tuple[Any, ...]:
        """The columns of a new row (stamped with `now`, the clock's if None), encoded here so
        a value JSON cannot carry is refused before the write."""
        now = self._clock() if now is None else now
        row.created_at = row.updated_at = now
        row.version = 1
        return (
            row.kind,
            row.id,
            row.parent,
            row.state,
            int(row.terminal),
            _encode(row.spec, row.kind, row.id, "spec"),
            _encode(row.data, row.kind, row.id, "data"),
            row.version,
            now,
            now,
        )

    async def _insert(self, tx: Tx, row: Row, values: tuple[Any, ...], event: str, why: str) -> Row:
        """Inside a write's transaction."""
        try:
            await tx.execute(
                f"INSERT INTO actors ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)", values
            )
        except Conflict:
            raise RowExists(f"{row.kind} {row.id} already exists") from None
        if self.leases is not None:
            await self.leases.take(tx, row.kind, row.id)
        await _append(tx, row.kind, row.id, event, None, row.state, why, row.created_at)
        return row

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
            _encode(new.spec, row.kind, row.id, "spec"),
            _encode(new.data, row.kind, row.id, "data"),
            new.version,
            now,
            row.kind,
            row.id,
            row.version,
        )

        async def work(tx: Tx) -> Row:
            if self.leases is not None:
                await self.leases.check(tx, row.kind, row.id)
            changed = await tx.execute(
                "UPDATE actors SET state=?, terminal=?, spec=?, data=?, version=?, updated_at=? "
                "WHERE kind=? AND id=? AND version=?",
                values,
            )
            if changed != 1:
                raise StaleWrite(f"{row.kind} {row.id} changed since version {row.version}")
            if record_event:
                await _append(tx, row.kind, row.id, event, row.state, new.state, why, now)
            return new

        return await self.backend.write(work, self._notify)

    async def record(self, kind: str, id_: str, event: str, why: str = "") -> None:
        """An event that changes no state (a decision, a warning, a supervisor restart)."""
        now = self._clock()
        await self.backend.write(lambda tx: _append(tx, kind, id_, event, None, None, why, now))

    async def delete(self, row: Row, why: str = "") -> bool:
        """Remove `row` (kept: its events), if nobody wrote it since `row.version`: what a
        `serve down` leaves of a service and its replicas, as SkyServe forgets them."""
        key, now = (row.kind, row.id), self._clock()

        async def work(tx: Tx) -> bool:
            if self.leases is not None:
                await self.leases.check(tx, *key)
            deleted = await tx.execute(
                "DELETE FROM actors WHERE kind=? AND id=? AND version=?", (*key, row.version)
            )
            if deleted != 1:
                return False
            if self.leases is not None:
                await self.leases.drop(tx, *key)
            await tx.execute("DELETE FROM quarantine WHERE kind=? AND id=?", key)
            await _append(tx, row.kind, row.id, "removed", row.state, None, why, now)
            return True

        def after(deleted: bool) -> None:
            if deleted:
                self._notify(row)  # a watcher reads the row again and finds it gone

        return await self.backend.write(work, after)

    async def forget_overwritten(self) -> None:
        """Leave no copy of overwritten values in the engine's files (as far as it can): call
        after a write that dropped a secret."""
        await self.backend.forget_overwritten()

    async def close(self) -> None:
        """Wait for the write in flight to commit, refuse every later one (a writer waits for
        good), and close: the store is whole, as after any commit."""
        await self.backend.close()

    async def get(self, kind: str, id_: str) -> Row | None:
        found = await self.backend.fetch(f"{_SELECT} WHERE a.kind=? AND a.id=?", (kind, id_))
        return _row(found[0]) if found else None

    async def _fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        return [_row(r) for r in await self.backend.fetch(sql, args)]

    async def _tuples(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """The rows of any query, as the engine returns them (for `views`)."""
        return await self.backend.fetch(sql, args)

    async def _with_damaged_flags(
        self, rows: list[Row], keep: Callable[[Row], bool], order: Callable[[Row], Any]
    ) -> list[Row]:
        damaged = [r for r in await self._fetch(_DAMAGED_FLAG) if keep(r)]
        return sorted([*rows, *damaged], key=order) if damaged else rows

    async def rows(
        self, kind: str, *, parent: str | None = None, include_terminal: bool = True
    ) -> list[Row]:
        sql = f"{_SELECT} WHERE a.kind=?"
        args: list[Any] = [kind]
        if parent is not None:
            sql += " AND a.parent=?"
            args.append(parent)
        if include_terminal:
            return await self._fetch(sql + " ORDER BY a.created_at, a.id", args)
        rows = await self._fetch(sql + " AND a.terminal=0 ORDER BY a.created_at, a.id", args)
        return await self._with_damaged_flags(
            rows,
            lambda r: r.kind == kind and (parent is None or r.parent == parent),
            lambda r: (r.created_at, r.id),
        )

    async def rows_under(self, kind: str, id_prefix: str) -> list[Row]:
        """Rows of `kind` whose id starts with `id_prefix` (a cluster's jobs: `name/uid/`),
        found by id whatever their other columns hold."""
        above = id_prefix[:-1] + chr(ord(id_prefix[-1]) + 1)
        sql = f"{_SELECT} WHERE a.kind=? AND a.id>=? AND a.id<? ORDER BY a.created_at, a.id"
        return await self._fetch(sql, (kind, id_prefix, above))

    async def live_rows(self) -> list[Row]:
        rows = await self._fetch(f"{_SELECT} WHERE a.terminal=0 ORDER BY a.kind, a.created_at")
        return await self._with_damaged_flags(
            rows, lambda r: True, lambda r: (r.kind, r.created_at)
        )

    async def live_rows_in_pages(self, page: int = 1000) -> AsyncIterator[list[Row]]:
        """The rows of `live_rows`, `page` at a time, from one query: a boot with tens of
        thousands of rows builds their actors without ever holding every row decoded."""
        sql = f"{_SELECT} WHERE a.terminal=0 ORDER BY a.kind, a.created_at"
        async for found in self.backend.pages(sql, page):
            yield [_row(r) for r in found]
        damaged = await self._fetch(_DAMAGED_FLAG)
        if damaged:
            yield damaged

    async def live_rows_not_of(self, kinds: Collection[str]) -> list[Row]:
        """Live rows of any kind but these: rows whose kind column no stix writes."""
        marks = ",".join("?" * len(kinds))
        sql = f"{_SELECT} WHERE a.terminal=0 AND a.kind NOT IN ({marks}) ORDER BY a.created_at"
        rows = await self._fetch(sql, list(kinds))
        return await self._with_damaged_flags(
            rows, lambda r: r.kind not in kinds, lambda r: r.created_at
        )

    # -- quarantine ----------------------------------------------------------------------

    async def quarantine(self, kind: str, id_: str, reason: str) -> bool:
        """Record that `kind id_` is not to be run, with an event; False if it already was."""
        now = self._clock()

        async def work(tx: Tx) -> bool:
            added = await tx.execute(
                "INSERT OR IGNORE INTO quarantine (kind, id, reason, at) VALUES (?,?,?,?)",
                (kind, id_, reason, now),
            )
            if added != 1:
                return False
            await _append(tx, kind, id_, "quarantined", None, None, reason, now)
            return True

        return await self.backend.write(work)

    async def settle(
        self, row: Row, *, state: str, parent: str | None, why: str, fresh: bool = False
    ) -> Row:
        """Write a quarantined row as ended (`state`, terminal) whatever its columns held, and
        lift its quarantine: what could be read of it is kept (nothing of it with `fresh`, for
        a name that is used again), the rest is written afresh."""
        now = self._clock()
        new = Row(
            kind=row.kind,
            id=row.id,
            parent=parent,
            state=state,
            terminal=True,
            spec={} if fresh else row.spec,
            data={"quarantine": row.quarantined, **({} if fresh else row.data)},
            version=row.version + 1,
            created_at=row.created_at or now,
            updated_at=now,
        )
        try:
            spec_text, data_text = _encode(new.spec), _encode(new.data)
        except (TypeError, InvalidRequest):
            new.spec, new.data = {}, {"quarantine": row.quarantined}
            spec_text, data_text = "{}", _encode(new.data)
        key = (row.kind, row.id)

        async def work(tx: Tx) -> Row:
            await tx.execute(
                "UPDATE actors SET parent=?, state=?, terminal=1, spec=?, data=?, version=?, "
                "created_at=?, updated_at=? WHERE kind=? AND id=?",
                (parent, state, spec_text, data_text, new.version, new.created_at, now, *key),
            )
            await tx.execute("DELETE FROM quarantine WHERE kind=? AND id=?", key)
            await _append(tx, row.kind, row.id, "removed", row.state, state, why, now)
            return new

        return await self.backend.write(work, self._notify)

    async def events(self, kind: str, id_prefix: str, limit: int = 200) -> list[Event]:
        """History of one actor (`id_prefix` exact) or of its children (`prefix/…`).

        The children are matched by comparing the id's first characters, never by LIKE: a
        name's `_` or `%` would match any character there (`a_b` finding `axb`'s jobs), and
        LIKE ignores case."""
        children = id_prefix + "/"
        rows = await self.backend.fetch(
            "SELECT seq, at, kind, id, event, from_state, to_state, why FROM events "
            "WHERE (kind=? AND id=?) OR substr(id, 1, ?)=? ORDER BY seq DESC LIMIT ?",
            (kind, id_prefix, len(children), children, limit),
        )
        return [Event(*r) for r in reversed(rows)]


@asynccontextmanager
async def open_store(path: Path, readers: int = READERS) -> AsyncIterator[Store]:
    """The SQLite store in the file `path` (made with its folder if missing), migrated, with
    `readers` read-only connections beside its writer (0: every read on the writer's)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    async with aiosqlite.connect(path, isolation_level="DEFERRED") as db:
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA synchronous=NORMAL")
        await db.execute("PRAGMA busy_timeout=5000")
        await db.execute("PRAGMA secure_delete=ON")  # see SqliteBackend.forget_overwritten
        await migrate(db, MIGRATIONS)
        async with open_readers(path, readers) as pool:
            yield Store(SqliteBackend(db, path, pool))
