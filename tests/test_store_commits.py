"""The store's group commit (stixd/store/commits.py): writes that wait together are committed
together, each still alone in what it decides and in how it fails, and none is reported
written before it is on disk."""

from __future__ import annotations

import math
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import aiosqlite
import anyio
import pytest

from stixd.store.backend import Tx
from stixd.store.commits import GroupCommit
from stixd.store.db import Row, RowExists, StaleWrite, Unstorable, open_store
from stixd.store.sqlite import SqliteBackend, sender
from tests.conftest import OpenStore, reap


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _row(id_: str, **spec: Any) -> Row:
    return Row(kind="managed_job", id=id_, state="PENDING", version=0, spec=spec)


def test_aiosqlite_still_runs_a_function_on_its_thread() -> None:
    """`GroupCommit` sends each batch through aiosqlite's private `_execute`."""
    assert callable(getattr(aiosqlite.Connection, "_execute", None))


@pytest.mark.anyio
async def test_writes_waiting_together_share_commits_and_each_fails_alone(
    open_any: OpenStore,
) -> None:
    """(On PostgreSQL each write is a transaction of its own: all but the commits' count.)"""
    async with open_any() as store:
        heard: list[tuple[str, int]] = []
        store.on_write(lambda r: heard.append((r.id, r.version)))
        rows = [await store.insert(_row(str(i)), "submitted") for i in range(40)]
        heard.clear()
        commits: list[str] = []
        sqlite = isinstance(store.backend, SqliteBackend)
        if isinstance(store.backend, SqliteBackend):
            await store.backend.db.set_trace_callback(
                lambda sql: commits.append(sql) if sql.startswith("COMMIT") else None
            )
        stale = rows[7]
        await store.update(stale, event="bump", state="STARTING")
        heard.clear()
        commits.clear()
        outcomes: dict[str, object] = {}

        async def one(key: str, act: Any) -> None:
            try:
                outcomes[key] = await act()
            except Exception as exc:
                outcomes[key] = exc

        async with anyio.create_task_group() as tg:
            for r in rows:
                tg.start_soon(one, r.id, lambda r=r: store.update(r, event="go", state="RUNNING"))
            tg.start_soon(one, "dup", lambda: store.insert(_row("3"), "submitted"))
            tg.start_soon(
                one,
                "nan",
                lambda: store.insert_next("managed_job", lambda n: _row(str(n), x=math.nan), "s"),
            )
            tg.start_soon(
                one, "next", lambda: store.insert_next("managed_job", lambda n: _row(str(n)), "s")
            )

        assert isinstance(outcomes["7"], StaleWrite)  # lost its condition, as before
        assert isinstance(outcomes["dup"], RowExists)
        assert isinstance(outcomes["nan"], Unstorable)
        assert isinstance(outcomes["next"], Row) and outcomes["next"].id == "40"
        won = [r.id for r in rows if r.id != "7"]
        assert all(isinstance(outcomes[i], Row) for i in won)
        assert sorted(heard) == sorted([(i, 2) for i in won] + [("40", 1)])  # the winners only
        assert len(commits) <= 4 or not sqlite, commits  # 43 writes, not 43 commits
        assert (await store.get("managed_job", "7")).state == "STARTING"  # type: ignore[union-attr]
        assert (await store.get("managed_job", "0")).state == "RUNNING"  # type: ignore[union-attr]
        assert await store.get("managed_job", "41") is None
        history = await store.events("managed_job", "7")
        assert [e.event for e in history] == ["submitted", "bump"]  # the loser left no event


@pytest.mark.anyio
async def test_a_writer_cancelled_before_its_batch_writes_nothing(tmp_path: Path) -> None:
    async with open_store(tmp_path / "state.db") as store:
        first = await store.insert(_row("1"), "submitted")
        release = anyio.Event()

        backend = store.backend
        assert isinstance(backend, SqliteBackend)

        async def busy() -> None:  # a batch in flight: the writer below waits
            async with backend.commits.lock:
                await release.wait()

        async with anyio.create_task_group() as tg:
            tg.start_soon(busy)
            await anyio.wait_all_tasks_blocked()
            with anyio.move_on_after(0.05):
                await store.update(first, event="go", state="RUNNING")
            release.set()
        assert (await store.get("managed_job", "1")).version == 1  # type: ignore[union-attr]
        again = await store.update(first, event="go", state="RUNNING")  # the lead was handed on
        assert again.version == 2


@pytest.mark.anyio
async def test_a_failed_commit_fails_every_write_of_its_batch(tmp_path: Path) -> None:
    async with aiosqlite.connect(tmp_path / "x.db") as db:
        await db.executescript(
            "PRAGMA foreign_keys=ON; CREATE TABLE p (id INTEGER PRIMARY KEY);"
            "CREATE TABLE c (p INTEGER REFERENCES p(id)); CREATE TABLE t (v INTEGER);"
        )
        commits = GroupCommit(sender(db))
        outcomes: list[object] = []

        async def fine(tx: Tx) -> None:
            await tx.execute("INSERT INTO t VALUES (1)")

        async def fails_at_commit(tx: Tx) -> None:
            await tx.execute("PRAGMA defer_foreign_keys=ON")
            await tx.execute("INSERT INTO c VALUES (99)")  # no parent: refused only by the COMMIT

        async def one(work: Any) -> None:
            try:
                outcomes.append(await commits.write(work))
            except sqlite3.IntegrityError as exc:
                outcomes.append(exc)

        # both wait for the lock, so one batch takes them together
        async with anyio.create_task_group() as tg, commits.lock:
            tg.start_soon(one, fine)
            tg.start_soon(one, fails_at_commit)
            await anyio.wait_all_tasks_blocked()
        assert len(outcomes) == 2 and all(isinstance(o, sqlite3.IntegrityError) for o in outcomes)

        async def count(tx: Tx) -> int:
            found = await tx.one("SELECT count(*) FROM t")
            return int(found[0]) if found else -1

        assert await commits.write(count) == 0


_WRITER = textwrap.dedent(
    """
    import sys, anyio
    from pathlib import Path
    from stixd.store.db import Row, open_store

    async def main() -> None:
        async with open_store(Path(sys.argv[1])) as store:
            async def one(w: int) -> None:
                for i in range(100_000):
                    row = Row(kind="managed_job", id=f"{w}-{i}", state="PENDING", version=0)
                    await store.insert(row, "submitted")
                    print(row.id, flush=True)
            async with anyio.create_task_group() as tg:
                for w in range(32):
                    tg.start_soon(one, w)

    anyio.run(main)
    """
)


def test_kill_9_loses_no_write_its_caller_was_told_of(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(db)], stdout=subprocess.PIPE, text=True, env=env
    )
    told: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 30
        while len(told) < 2000 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            told.append(line.strip())
        proc.send_signal(signal.SIGKILL)
    finally:
        reap(proc)
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
    assert len(told) >= 2000, "the writer stopped early"
    conn = sqlite3.connect(db)
    try:
        stored = {r[0] for r in conn.execute("SELECT id FROM actors")}
        events = {r[0] for r in conn.execute("SELECT id FROM events")}
    finally:
        conn.close()
    assert set(told) <= stored and set(told) <= events
