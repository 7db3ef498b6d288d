"""Reads on the SQLite store's read connections (stixd/store/sqlite_reads.py): they go on while
a write's transaction is open, see only committed rows, see a write once it is answered, cannot
write, and are closed with the store; and the listings read a fixed number of statements however
many clusters, jobs or services there are (no query per row)."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from stixd.control import handlers, serve_cmds
from stixd.store.backend import StoreUnavailable, Tx
from stixd.store.chosen import open_postgres
from stixd.store.db import Row, Store, open_store
from stixd.store.postgres import KEPT_FOR_READS, POOL_SIZE
from stixd.store.sqlite import SqliteBackend
from stixproto import messages as m
from tests.app_support import app_on_store
from tests.pg_server import PgServer

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _cluster(name: str, state: str = "UP") -> Row:
    return Row(kind="cluster", id=name, state=state, version=0, data={"uid": f"u{name}"})


def _fds_on(path: Path) -> int:
    """This process's open files that are the database `path` itself."""
    found = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == str(path):
                found += 1
        except OSError:  # closed since the listing
            continue
    return found


async def test_reads_go_on_while_a_write_transaction_is_held_open_and_see_it_once_answered(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    async with open_store(path) as store:
        backend = store.backend
        assert isinstance(backend, SqliteBackend) and backend.readers is not None
        first = await store.insert(_cluster("c1"), "created")
        begun, release = threading.Event(), threading.Event()

        async def held(tx: Tx) -> None:
            """A write that stays open, uncommitted, on the writer's thread."""
            await tx.execute("UPDATE actors SET state='STOPPED' WHERE kind='cluster' AND id='c1'")
            await tx.execute("INSERT INTO quarantine VALUES ('cluster', 'c9', 'x', 0)")
            begun.set()
            release.wait(60)

        try:
            with anyio.fail_after(30):  # a read that waited for the write would never end
                async with anyio.create_task_group() as tg:
                    tg.start_soon(backend.write, held)
                    await anyio.to_thread.run_sync(begun.wait)
                    now = await store.get("cluster", "c1")  # the committed row, not the open one
                    assert now is not None and now.state == "UP"
                    assert [r.id for r in await store.rows("cluster")] == ["c1"]
                    assert await store._tuples("SELECT count(*) FROM quarantine") == [(0,)]
                    async for page in store.live_rows_in_pages(page=1):
                        assert [r.state for r in page] == ["UP"]
                    assert not release.is_set()  # every read above ended while it was held
                    release.set()
        finally:
            release.set()
        # the write is answered only once committed: a read started after it sees it
        after = await store.get("cluster", "c1")
        assert after is not None and after.state == "STOPPED"
        updated = await store.update(first, event="stop", state="STOPPED")
        again = await store.get("cluster", "c1")
        assert again is not None and again.version == updated.version == 2


async def test_a_read_connection_cannot_write_and_all_close_with_the_store(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    async with open_store(path) as store:
        await store.insert(_cluster("c1"), "created")
        backend = store.backend
        assert isinstance(backend, SqliteBackend) and backend.readers is not None
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            await backend.fetch("DELETE FROM actors")
        assert [r.id for r in await store.rows("cluster")] == ["c1"]
        # the writer and each reader hold the file open
        assert _fds_on(path) == 1 + len(backend.readers)
        await store.close()  # as the daemon's stop does
        assert _fds_on(path) == 0
        with pytest.raises(StoreUnavailable, match="closed"):
            await store.get("cluster", "c1")
    assert _fds_on(path) == 0


async def test_with_no_readers_every_read_is_on_the_writer(tmp_path: Path) -> None:
    """`daemon.store_readers: 0`: the one-connection store, as before the readers."""
    path = tmp_path / "state.db"
    async with open_store(path, readers=0) as store:
        assert isinstance(store.backend, SqliteBackend) and store.backend.readers is None
        await store.insert(_cluster("c1"), "created")
        assert [r.id for r in await store.rows("cluster")] == ["c1"]
        assert _fds_on(path) == 1


# -- no query per row ----------------------------------------------------------------------


async def _fill(store: Store, clusters: int) -> None:
    for i in range(clusters):
        name = f"c{i}"
        await store.insert(_cluster(name), "created")
        for job in (1, 2):
            spec = {"cluster": name, "uid": f"u{name}", "job_id": job, "provider": "local"}
            jrow = Row(
                kind="job",
                id=f"{name}/u{name}/{job}",
                parent=f"u{name}",
                state="RUNNING",
                version=0,
                spec=spec,
            )
            await store.insert(jrow, "created")
        service = {"versions": [{"version": 1, "task": {"run": "x"}}]}
        await store.insert(
            Row(
                kind="service",
                id=f"s{i}",
                state="READY",
                version=0,
                spec=service,
                data={"version": 1},
            ),
            "created",
        )
        replica = {"service": f"s{i}", "replica_id": 1, "version": 1, "port": 8080}
        await store.insert(
            Row(
                kind="replica", id=f"s{i}/1", parent=f"s{i}", state="READY", version=0, spec=replica
            ),
            "created",
        )


async def _statements(home: Path, clusters: int) -> dict[str, int]:
    """How many statements each listing runs with `clusters` clusters (two jobs each) and as
    many services (a replica each); and checks that each lists them all."""

    async def emit(item: Any) -> None:
        pass

    async with app_on_store(home) as app:
        await _fill(app.store, clusters)
        seen: list[str] = []
        backend = app.store.backend
        assert isinstance(backend, SqliteBackend)
        await backend.trace(seen.append)
        counts = {}

        async def queue(req: m.Queue) -> int:
            return len((await handlers.queue(app, req, emit)).jobs) // 2  # two jobs a cluster

        async def status() -> int:
            return len((await handlers.status(app, m.Status(all_users=True), emit)).clusters)

        async def serve_status() -> int:
            return len((await serve_cmds.serve_status(app, m.ServeStatus(all_users=True))).services)

        names = [f"c{i}" for i in range(clusters)]
        asks: dict[str, Callable[[], Awaitable[int]]] = {
            "queue": lambda: queue(m.Queue(all_users=True)),
            "queue NAMES": lambda: queue(m.Queue(clusters=names)),  # the dashboard's cluster page
            "status": status,
            "serve status": serve_status,
        }
        for name, ask in asks.items():
            seen.clear()
            listed = await ask()
            counts[name] = len(seen)
            assert listed == clusters, name
        return counts


async def test_the_listings_read_as_many_statements_for_fifty_clusters_as_for_one(
    tmp_path: Path,
) -> None:
    one = await _statements(tmp_path / "one", 1)
    fifty = await _statements(tmp_path / "fifty", 50)
    assert fifty == one, (one, fifty)


async def test_on_postgresql_reads_go_on_while_writes_hold_every_connection_they_may(
    postgres: PgServer,
) -> None:
    async with open_postgres(postgres.fresh()) as store:
        release = anyio.Event()
        begun = 0

        async def held(tx: Tx) -> None:
            nonlocal begun
            begun += 1
            await tx.execute("INSERT INTO quarantine VALUES ('cluster', ?, 'x', 0)", (str(begun),))
            await release.wait()

        async with anyio.create_task_group() as tg:
            for _ in range(POOL_SIZE + 2):  # more writes than the pool has connections
                tg.start_soon(store.backend.write, held)
            try:
                with anyio.fail_after(30):  # a read waiting for a connection would never end
                    while begun < POOL_SIZE - KEPT_FOR_READS:
                        await anyio.sleep(0.01)
                    assert await store._tuples("SELECT count(*) FROM quarantine") == [(0,)]
                    assert begun == POOL_SIZE - KEPT_FOR_READS  # the others wait their turn
            finally:
                release.set()
        assert await store._tuples("SELECT count(*) FROM quarantine") == [(POOL_SIZE + 2,)]
