"""The daemon's store: one row per actor with a version column, and an append-only event log.

Rows are written with conditional updates (`WHERE version = ?`), so a writer that read an old
row learns it instead of overwriting a newer decision. The state change and its event are
written in one transaction; nothing here ever waits on the network.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosqlite
import anyio
import msgspec

from stixd.store.commits import GroupCommit
from stixd.store.txseam import TxBackend
from stixproto.errors import InvalidRequest

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


def _column_problem(r: aiosqlite.Row | tuple[Any, ...]) -> str | None:
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


def _row(r: aiosqlite.Row | tuple[Any, ...]) -> Row:
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


def _json_problem(r: aiosqlite.Row | tuple[Any, ...]) -> str:
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
    r: aiosqlite.Row | tuple[Any, ...],
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


def _append(
    conn: sqlite3.Connection,
    kind: str,
    id_: str,
    event: str,
    from_state: str | None,
    to_state: str | None,
    why: str,
    at: float,
) -> None:
    conn.execute(
        "INSERT INTO events (at, kind, id, event, from_state, to_state, why) "
        "VALUES (?,?,?,?,?,?,?)",
        (at, kind, id_, event, from_state, to_state, why),
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
        self._commits = GroupCommit(db)
        """Every write is one function on the connection's thread, in a savepoint of a
        transaction shared with the writes waiting beside it, committed once: a rollback (a
        duplicate insert, a stale update) undoes only its own statements."""
        self._writing = self._commits.lock
        self.backend = TxBackend(db, self._commits)
        """The tables beside the actors' (stixd/store/identity.py): writes as functions of a
        `Tx` in the same group commit, reads as tuples."""

    def on_write(self, listener: Callable[[Row], None]) -> None:
        """Called after every committed write with the row as written."""
        self._listeners.append(listener)

    def _notify(self, row: Row) -> None:
        for listener in self._listeners:
            listener(row)

    async def insert(self, row: Row, event: str, why: str = "") -> Row:
        values = self._insert_values(row)
        return await self._commits.write(
            lambda conn: self._insert(conn, row, values, event, why), self._notify
        )

    async def insert_next(
        self, kind: str, make: Callable[[int], Row], event: str, why: str = ""
    ) -> Row:
        """Insert ``make(n)`` with ``n`` the next numeric id of `kind` (one past the largest),
        allocated inside the write so concurrent callers never collide and never retry."""
        now = self._clock()

        def work(conn: sqlite3.Connection) -> Row:
            r = conn.execute(NEXT_NUMBER, (kind,)).fetchone()
            row = make((int(r[0]) if r and r[0] is not None else 0) + 1)
            return self._insert(conn, row, self._insert_values(row, now), event, why)

        return await self._commits.write(work, self._notify)

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

    @staticmethod
    def _insert(
        conn: sqlite3.Connection, row: Row, values: tuple[Any, ...], event: str, why: str
    ) -> Row:
        """On the connection's thread, inside a write's savepoint."""
        try:
            conn.execute(f"INSERT INTO actors ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)", values)
        except sqlite3.IntegrityError:
            raise RowExists(f"{row.kind} {row.id} already exists") from None
        _append(conn, row.kind, row.id, event, None, row.state, why, row.created_at)
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

        def work(conn: sqlite3.Connection) -> Row:
            cur = conn.execute(
                "UPDATE actors SET state=?, terminal=?, spec=?, data=?, version=?, updated_at=? "
                "WHERE kind=? AND id=? AND version=?",
                values,
            )
            if cur.rowcount != 1:
                raise StaleWrite(f"{row.kind} {row.id} changed since version {row.version}")
            if record_event:
                _append(conn, row.kind, row.id, event, row.state, new.state, why, now)
            return new

        return await self._commits.write(work, self._notify)

    async def record(self, kind: str, id_: str, event: str, why: str = "") -> None:
        """An event that changes no state (a decision, a warning, a supervisor restart)."""
        now = self._clock()
        await self._commits.write(
            lambda conn: _append(conn, kind, id_, event, None, None, why, now)
        )

    async def delete(self, row: Row, why: str = "") -> bool:
        """Remove `row` (kept: its events), if nobody wrote it since `row.version`: what a
        `serve down` leaves of a service and its replicas, as SkyServe forgets them."""
        key, now = (row.kind, row.id), self._clock()

        def work(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "DELETE FROM actors WHERE kind=? AND id=? AND version=?", (*key, row.version)
            )
            if cur.rowcount != 1:
                return False
            conn.execute("DELETE FROM quarantine WHERE kind=? AND id=?", key)
            _append(conn, row.kind, row.id, "removed", row.state, None, why, now)
            return True

        def after(deleted: bool) -> None:
            if deleted:
                self._notify(row)  # a watcher reads the row again and finds it gone

        return await self._commits.write(work, after)

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

    async def close(self) -> None:
        """Wait for the write in flight to commit, refuse every later one (a writer waits for
        good), and close the connection: the store is whole on disk, as after any commit."""
        await self._writing.acquire()  # never released: this store writes no more
        with anyio.CancelScope(shield=True):
            await self._db.close()

    async def get(self, kind: str, id_: str) -> Row | None:
        async with self._db.execute(f"{_SELECT} WHERE a.kind=? AND a.id=?", (kind, id_)) as cur:
            r = await cur.fetchone()
        return _row(r) if r else None

    async def _fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        async with self._db.execute(sql, args) as cur:
            return [_row(r) for r in await cur.fetchall()]

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
        async with self._db.execute(sql) as cur:
            while found := await cur.fetchmany(page):
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

        def work(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "INSERT OR IGNORE INTO quarantine (kind, id, reason, at) VALUES (?,?,?,?)",
                (kind, id_, reason, now),
            )
            if cur.rowcount != 1:
                return False
            _append(conn, kind, id_, "quarantined", None, None, reason, now)
            return True

        return await self._commits.write(work)

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

        def work(conn: sqlite3.Connection) -> Row:
            conn.execute(
                "UPDATE actors SET parent=?, state=?, terminal=1, spec=?, data=?, version=?, "
                "created_at=?, updated_at=? WHERE kind=? AND id=?",
                (parent, state, spec_text, data_text, new.version, new.created_at, now, *key),
            )
            conn.execute("DELETE FROM quarantine WHERE kind=? AND id=?", key)
            _append(conn, row.kind, row.id, "removed", row.state, state, why, now)
            return new

        return await self._commits.write(work, self._notify)

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
