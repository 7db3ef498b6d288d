"""The node's job queue: one SQLite file (WAL) shared by the agent and its runners.

Each process opens its own connection. Every state write is conditional on the job's current
state (``states.TRANSITIONS``), so concurrent writers never overwrite a terminal state.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import time
from pathlib import Path
from typing import Any

from .spec import JobSpec
from .states import ACTIVE, JobState, sources_of

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id INTEGER PRIMARY KEY,
    name TEXT,
    state TEXT NOT NULL,
    exit_code INTEGER,
    submitted_at REAL NOT NULL,
    started_at REAL,
    ended_at REAL,
    pid INTEGER,
    pid_start TEXT,
    num_gpus REAL NOT NULL,
    spec TEXT NOT NULL,
    reason TEXT
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""
_COLUMNS = (
    "job_id, name, state, exit_code, submitted_at, started_at, ended_at, pid, pid_start, reason"
)
_WRITABLE = frozenset({"exit_code", "started_at", "ended_at", "pid", "pid_start", "reason"})
_BUSY_TIMEOUT_S = 10.0


@dataclasses.dataclass(frozen=True)
class JobRow:
    job_id: int
    name: str | None
    state: JobState
    exit_code: int | None
    submitted_at: float
    started_at: float | None
    ended_at: float | None
    pid: int | None
    pid_start: str | None
    reason: str | None = None
    """Why the agent ended the job, when it did (not the job's own exit)."""

    def to_wire(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "name": self.name,
            "state": self.state.value,
            "exit_code": self.exit_code,
            "submitted_at": self.submitted_at,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "pid": self.pid,
            "reason": self.reason,
        }


def _row(values: tuple[Any, ...]) -> JobRow:
    job_id, name, state, exit_code, submitted, started, ended, pid, pid_start, reason = values
    return JobRow(
        job_id, name, JobState(state), exit_code, submitted, started, ended, pid, pid_start, reason
    )


def _marks(count: int) -> str:
    return ", ".join("?" * count)


_ACTIVE_VALUES = tuple(s.value for s in ACTIVE)


class JobStore:
    def __init__(self, path: Path, *, create: bool = False) -> None:
        self.path = path
        self._conn = self._connect()
        if create:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.executescript(_SCHEMA)
            self._add_reason_column()
            self._conn.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('created_at', ?)",
                (repr(time.time()),),
            )
        self._data_version = self._read_data_version()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(str(self.path), timeout=_BUSY_TIMEOUT_S, isolation_level=None)
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA secure_delete=ON")  # see forget_secrets
        return conn

    def _add_reason_column(self) -> None:
        """A queue made by an earlier agent build has no ``reason`` column yet."""
        columns = {row[1] for row in self._conn.execute("PRAGMA table_info(jobs)")}
        if "reason" not in columns:
            self._conn.execute("ALTER TABLE jobs ADD COLUMN reason TEXT")

    def close(self) -> None:
        self._conn.close()

    def write_back(self) -> None:
        """Write the queue to its path again, from this connection, after its file was deleted
        under it (the connection still reads the deleted file); then use the new file."""
        fresh = sqlite3.connect(str(self.path))
        try:
            self._conn.backup(fresh)
        finally:
            fresh.close()
        written = self._connect()  # before closing the old one: it is the only copy until then
        written.execute("PRAGMA journal_mode=WAL")
        self._conn.close()
        self._conn = written
        self._data_version = -1

    def reopen(self) -> None:
        """Open a fresh connection (after ``close``, e.g. around a fork)."""
        self._conn = self._connect()
        self._data_version = -1  # runners may have written meanwhile: report one change

    def _read_data_version(self) -> int:
        return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    def changed_elsewhere(self) -> bool:
        """True once after another connection (a runner) committed a change."""
        version = self._read_data_version()
        changed = version != self._data_version
        self._data_version = version
        return changed

    # -- reads ---------------------------------------------------------------------------

    def job(self, job_id: int) -> JobRow | None:
        found = self._conn.execute(
            f"SELECT {_COLUMNS} FROM jobs WHERE job_id = ?", (job_id,)
        ).fetchone()
        return _row(found) if found else None

    def jobs(self, job_ids: list[int] | None = None) -> list[JobRow]:
        if job_ids is None:
            found = self._conn.execute(f"SELECT {_COLUMNS} FROM jobs ORDER BY job_id")
        else:
            found = self._conn.execute(
                f"SELECT {_COLUMNS} FROM jobs WHERE job_id IN ({_marks(len(job_ids))})"
                " ORDER BY job_id",
                tuple(job_ids),
            )
        return [_row(values) for values in found.fetchall()]

    def active_jobs(self) -> list[JobRow]:
        found = self._conn.execute(
            f"SELECT {_COLUMNS} FROM jobs WHERE state IN ({_marks(len(_ACTIVE_VALUES))})"
            " ORDER BY job_id",
            _ACTIVE_VALUES,
        )
        return [_row(values) for values in found.fetchall()]

    def pending_queue(self) -> list[tuple[int, float]]:
        """(job_id, num_gpus) of jobs waiting for a runner, oldest first."""
        found = self._conn.execute(
            "SELECT job_id, num_gpus FROM jobs WHERE state = ? AND pid IS NULL ORDER BY job_id",
            (JobState.PENDING.value,),
        )
        return [(job_id, float(gpus)) for job_id, gpus in found.fetchall()]

    def gpus_in_use(self) -> float:
        found = self._conn.execute(
            "SELECT COALESCE(SUM(num_gpus), 0) FROM jobs"
            f" WHERE pid IS NOT NULL AND state IN ({_marks(len(_ACTIVE_VALUES))})",
            _ACTIVE_VALUES,
        ).fetchone()
        return float(found[0])

    def spec(self, job_id: int) -> JobSpec:
        found = self._conn.execute("SELECT spec FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return JobSpec.from_json(found[0])

    def last_ended_at(self) -> float | None:
        (latest,) = self._conn.execute("SELECT MAX(ended_at) FROM jobs").fetchone()
        return None if latest is None else float(latest)

    def meta(self, key: str) -> str | None:
        found = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return found[0] if found else None

    def created_at(self) -> float:
        return float(self.meta("created_at") or 0.0)

    # -- writes --------------------------------------------------------------------------

    def set_meta(self, key: str, value: str) -> None:
        self._conn.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
            (key, value),
        )

    def insert_job(self, spec: JobSpec, now: float) -> bool:
        """Add a PENDING job; False (and no change) if the id is already taken."""
        cursor = self._conn.execute(
            "INSERT OR IGNORE INTO jobs (job_id, name, state, submitted_at, num_gpus, spec)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (spec.job_id, spec.name, JobState.PENDING.value, now, spec.num_gpus, spec.to_json()),
        )
        return cursor.rowcount == 1

    def forget_secrets(self, job_ids: list[int]) -> None:
        """Drop the secrets' values from these jobs' specs, leaving no copy in the files: a
        started job's runner holds its environment, and a job that ended needs none.

        ``secure_delete`` zeroes the freed space in the database's pages; the TRUNCATE
        checkpoint moves the new pages into the database and empties the write-ahead log, which
        still holds their earlier versions. A runner's short read can make the checkpoint give
        up; the next one (or SQLite's own) catches up.
        """
        forgot = False
        for job_id in job_ids:
            found = self._conn.execute("SELECT spec FROM jobs WHERE job_id = ?", (job_id,))
            row = found.fetchone()
            scrubbed = JobSpec.from_json(row[0]).without_secrets() if row else None
            if scrubbed is not None:
                self._conn.execute(
                    "UPDATE jobs SET spec = ? WHERE job_id = ?", (scrubbed.to_json(), job_id)
                )
                forgot = True
        if forgot:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()

    def record_launch(self, job_id: int, pid: int, token: str | None) -> bool:
        """Claim a PENDING job for the runner ``pid``; False if someone claimed it first."""
        cursor = self._conn.execute(
            "UPDATE jobs SET pid = ?, pid_start = ? WHERE job_id = ? AND state = ? AND pid IS NULL",
            (pid, token, job_id, JobState.PENDING.value),
        )
        return cursor.rowcount == 1

    def transition(
        self, job_id: int, target: JobState, *, runner_pid: int | None = None, **fields: Any
    ) -> bool:
        """Move a job to ``target`` if its current state allows it; True if it moved.

        A runner passes its own pid: it may then only write a job that is unclaimed or its own.
        """
        unknown = set(fields) - _WRITABLE
        if unknown:
            raise ValueError(f"not writable job columns: {sorted(unknown)}")
        sources = tuple(s.value for s in sources_of(target))
        assignments = ", ".join(["state = ?", *(f"{column} = ?" for column in fields)])
        allowed = _marks(len(sources))
        sql = f"UPDATE jobs SET {assignments} WHERE job_id = ? AND state IN ({allowed})"
        params: list[Any] = [target.value, *fields.values(), job_id, *sources]
        if runner_pid is not None:
            sql += " AND (pid IS NULL OR pid = ?)"
            params.append(runner_pid)
        return self._conn.execute(sql, params).rowcount == 1
