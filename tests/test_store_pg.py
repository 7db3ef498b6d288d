"""The store on PostgreSQL (issue 18, item 4): what only a shared database can show — two
stores (two daemons' worth) on one database never both win a conditional write and never take
the same number — and the daemon's start against a database that is missing, refuses it, or
is newer. The store's other behaviour is tested on both engines by the `open_any` fixture."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import anyio
import pytest

from stixd.store import dialect
from stixd.store.backend import StoreUnavailable
from stixd.store.chosen import open_postgres
from stixd.store.db import MIGRATIONS, Row, RowExists, StaleWrite, Store
from stixd.store.postgres import migrate
from tests.conftest import OpenStore, Stix, wait_until
from tests.pg_server import PgServer

pytestmark = pytest.mark.anyio


def _row(id_: str, kind: str = "cluster") -> Row:
    return Row(kind=kind, id=id_, state="INIT", version=0)


async def test_two_stores_on_one_database_never_both_win_a_conditional_write(
    postgres: PgServer,
) -> None:
    url = postgres.fresh()
    async with open_postgres(url) as one, open_postgres(url) as two:
        row = await one.insert(_row("c"), "created")
        rounds = 40
        for n in range(rounds):
            seen = await two.get("cluster", "c")  # both decide from the same version
            assert seen is not None and seen.version == row.version
            outcomes = await _race(row, one, two, n)
            won = [o for o in outcomes if isinstance(o, Row)]
            assert len(won) == 1, outcomes
            assert sum(isinstance(o, StaleWrite) for o in outcomes) == 1, outcomes
            row = won[0]
            stored = await one.get("cluster", "c")
            assert stored is not None and (stored.state, stored.version) == (row.state, n + 2)
        history = await two.events("cluster", "c", limit=1000)
        assert len(history) == 1 + rounds  # the losers left no event


async def _race(row: Row, one: Store, two: Store, n: int) -> list[Row | Exception]:
    """Both stores write `row` (as read) at once: what each was told."""
    outcomes: list[Row | Exception] = []

    async def write(store: Store, state: str) -> None:
        try:
            outcomes.append(await store.update(row, event="step", state=state))
        except StaleWrite as exc:
            outcomes.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(write, one, f"A{n}")
        tg.start_soon(write, two, f"B{n}")
    return outcomes


async def test_two_stores_allocating_numbers_at_once_never_collide(postgres: PgServer) -> None:
    url = postgres.fresh()
    made: list[str] = []
    async with open_postgres(url) as one, open_postgres(url) as two:

        async def submit(store: Store) -> None:
            row = await store.insert_next(
                "managed_job", lambda n: _row(str(n), "managed_job"), "submitted"
            )
            made.append(row.id)

        async with anyio.create_task_group() as tg:
            for i in range(60):
                tg.start_soon(submit, one if i % 2 else two)
        listed = await one.rows("managed_job")
    assert sorted(int(i) for i in made) == list(range(1, 61))
    assert sorted(int(r.id) for r in listed) == list(range(1, 61))


async def test_replicas_starting_together_migrate_once_and_apply_every_migration(
    postgres: PgServer,
) -> None:
    url = postgres.fresh()
    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(_open_and_close, url)
    assert postgres.psql(url.rsplit("/", 1)[1], "SELECT version FROM schema_version") == str(
        len(MIGRATIONS)
    )
    # a later migration in the portable SQL the list is written in
    import asyncpg

    later = """
    CREATE TABLE later_owners (name TEXT PRIMARY KEY, created_at REAL NOT NULL);
    CREATE TABLE later_keys (
        id TEXT PRIMARY KEY, owner TEXT NOT NULL REFERENCES later_owners (name) ON DELETE CASCADE,
        hash TEXT NOT NULL UNIQUE, expires_at REAL, revoked INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX later_keys_by_owner ON later_keys (owner, expires_at);
    """
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn, [*MIGRATIONS, later])
        assert await conn.fetchval("SELECT version FROM schema_version") == len(MIGRATIONS) + 1
        kinds = dict(
            await conn.fetch(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_name = 'later_keys'"
            )
        )
        assert kinds["expires_at"] == "double precision" and kinds["revoked"] == "bigint"
    finally:
        await conn.close()


async def _open_and_close(url: str) -> None:
    async with open_postgres(url):
        pass


async def test_a_database_written_by_a_newer_stix_is_refused(postgres: PgServer) -> None:
    url = postgres.fresh()
    await _open_and_close(url)
    postgres.psql(
        url.rsplit("/", 1)[1], f"UPDATE schema_version SET version = {len(MIGRATIONS) + 1}"
    )
    with pytest.raises(StoreUnavailable, match=r"newer stix .* upgrade stix"):
        await _open_and_close(url)


async def test_an_unreachable_missing_or_refusing_database_is_one_line_that_says_so(
    postgres: PgServer,
) -> None:
    nowhere = postgres.url("x").replace(f":{postgres.port}/", ":1/")
    with pytest.raises(
        StoreUnavailable, match=re.escape("cannot reach the database stix@127.0.0.1:1/x")
    ):
        await _open_and_close(nowhere)
    with pytest.raises(StoreUnavailable, match="does not exist: create it"):
        await _open_and_close(postgres.url("no_such_db"))
    postgres.require_password("guarded", "right")
    wrong = postgres.url("postgres", "guarded:wrong")
    with pytest.raises(StoreUnavailable, match="refused the login") as refused:
        await _open_and_close(wrong)
    assert "wrong" not in str(refused.value)  # the password never reaches a message


async def test_ids_order_and_compare_byte_by_byte_as_in_sqlite(open_any: OpenStore) -> None:
    """A cluster's jobs are a range of ids (`rows_under`); PostgreSQL's locale collations
    would sort `a/1`, `a-b/2` and `A/3` otherwise: the migrations make text columns "C"."""
    async with open_any() as store:
        for id_ in ["a/1", "a-b/2", "A/3", "a/10", "a0/4", "b/5"]:
            await store.insert(_row(id_, "job"), "created")
        assert [r.id for r in await store.rows_under("job", "a/")] == ["a/1", "a/10"]
        assert [r.id for r in await store.live_rows()] == ["a/1", "a-b/2", "A/3", "a/10",
                                                          "a0/4", "b/5"]  # fmt: skip


async def test_a_row_whose_spec_is_not_json_is_returned_quarantined(postgres: PgServer) -> None:
    url = postgres.fresh()
    async with open_postgres(url) as store:
        await store.insert(_row("ok"), "created")
        await store.insert(_row("bad"), "created")
        postgres.psql(
            url.rsplit("/", 1)[1], "UPDATE actors SET spec = '{\"a\": NaN}' WHERE id = 'bad'"
        )
        rows = {r.id: r for r in await store.live_rows()}
        assert rows["ok"].quarantined is None
        assert "NaN and Infinity are not JSON numbers" in str(rows["bad"].quarantined)
        pages = [r.id async for page in store.live_rows_in_pages(page=1) for r in page]
        assert pages == ["ok", "bad"]


def test_a_daemon_on_postgresql_keeps_its_clusters_and_jobs_across_a_restart(
    stix: Stix, postgres: PgServer
) -> None:
    (stix.home / "config.yaml").write_text(f"db: {postgres.fresh()}\n")
    stix.run("launch", "-c", "pg1", "-y", "echo from-postgres", check=True)
    wait_until(lambda: stix.job_status("pg1", 1) == "SUCCEEDED", timeout=30)
    stix.run("daemon", "stop", check=True)
    assert not (stix.home / "state.db").exists()  # the state is in the database
    assert stix.clusters()["pg1"]["status"] == "UP"  # (the status starts the daemon again)
    assert stix.job_status("pg1", 1) == "SUCCEEDED"
    assert "from-postgres" in stix.run("logs", "pg1", "1", "--no-follow", check=True).stdout


def test_a_daemon_whose_database_is_unreachable_exits_with_one_line(
    stix: Stix, postgres: PgServer, tmp_path: Path
) -> None:
    (stix.home / "config.yaml").write_text("db: postgresql://stix@127.0.0.1:1/stix\n")
    ran = subprocess.run(
        [sys.executable, "-m", "stixd", "--foreground", "--home", str(stix.home)],
        capture_output=True, text=True, timeout=60, env=stix.env,
    )  # fmt: skip
    assert ran.returncode == 2
    (line,) = ran.stderr.strip().splitlines()
    assert line.startswith("stixd: cannot reach the database stix@127.0.0.1:1/stix (")
    assert line.endswith("start PostgreSQL there, or fix `db` in config.yaml")


async def test_group_commits_on_postgresql_undo_each_refused_write_alone(
    postgres: PgServer,
) -> None:
    """`PgBackend(group=True)` (measured by bench/bench_store.py): a duplicate insert and a
    stale update in a batch fail alone; the writes beside them are committed."""
    async with open_postgres(postgres.fresh(), group=True) as store:
        stale = await store.insert(_row("s"), "created")
        await store.update(stale, event="moved", state="UP")
        outcomes: dict[str, object] = {}

        async def one(key: str, write: Callable[[], Awaitable[object]]) -> None:
            try:
                outcomes[key] = await write()
            except Exception as exc:
                outcomes[key] = exc

        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(one, str(i), partial(store.insert, _row(str(i)), "created"))
            tg.start_soon(one, "dup", partial(store.insert, _row("s"), "created"))
            tg.start_soon(one, "stale", partial(store.update, stale, event="late", state="X"))
        assert isinstance(outcomes["dup"], RowExists)
        assert isinstance(outcomes["stale"], StaleWrite)
        assert len([r for r in await store.rows("cluster") if r.id != "s"]) == 20
        assert [e.event for e in await store.events("cluster", "s")] == ["created", "moved"]


def test_the_dialect_translates_what_postgresql_reads_otherwise() -> None:
    assert (
        dialect.statement(
            "SELECT a.id FROM actors a INDEXED BY actors_live WHERE CAST(a.id AS INTEGER) < ? "
            "AND x = +c.id AND a.kind = '?'"
        )
        == "SELECT a.id FROM actors a WHERE stix_int(a.id) < $1 AND x =c.id AND a.kind = '?'"
    )
    assert dialect.statement("INSERT OR IGNORE INTO q (a) VALUES (?)") == (
        "INSERT INTO q (a) VALUES ($1) ON CONFLICT DO NOTHING"
    )
    assert dialect.schema(
        "CREATE TABLE t (seq INTEGER PRIMARY KEY AUTOINCREMENT, text TEXT, at REAL, n INTEGER);"
        "CREATE INDEX i ON t (text, CAST(text AS INTEGER)) WHERE n = 0;"
    ) == (
        f'CREATE TABLE t (seq {dialect.IDENTITY}, text TEXT COLLATE "C", at DOUBLE PRECISION, '
        "n BIGINT);CREATE INDEX i ON t (text, (stix_int(text))) WHERE n = 0;"
    )


async def test_connections_the_server_drops_are_replaced_without_failing_a_write(
    postgres: PgServer,
) -> None:
    """A restart or failover of PostgreSQL closes the pool's connections: the next write and
    read are made on new ones instead of failing (an actor would count it as a crash)."""
    url = postgres.fresh()
    database = url.rsplit("/", 1)[1]
    async with open_postgres(url) as store:
        row = await store.insert(_row("c"), "created")
        await store.get("cluster", "c")  # the pool holds open connections
        dropped = postgres.psql(
            "postgres",
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            f"WHERE datname = '{database}'",
        )
        assert int(dropped) >= 1
        row = await store.update(row, event="up", state="UP")
        assert row.version == 2
        postgres.psql("postgres", "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      f"WHERE datname = '{database}'")  # fmt: skip
        got = await store.get("cluster", "c")
        assert got is not None and got.state == "UP"
