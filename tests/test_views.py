"""`jobs queue` and `status` at scale: a default limit with a note of what it hides, filters
and cuts made in SQL over indexes, and `--all --json` streamed in chunks."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from stixctl.client import stream
from stixd.actors.specs import ManagedJobData, ManagedJobSpec, encode
from stixd.store import views
from stixd.store.db import NEXT_NUMBER, Row, open_store
from stixd.store.sqlite import SqliteBackend
from stixproto import messages as m
from tests.conftest import OpenStore, Stix, wait_until
from tests.test_managed_jobs_fake import fake_daemon, task


def _ended_jobs(home: Path, n: int) -> None:
    """`n` SUCCEEDED managed jobs in the store (ended: no actor runs for them)."""

    async def seed() -> None:
        async with open_store(home / "state.db") as store:
            for i in range(1, n + 1):
                spec = ManagedJobSpec(name=f"done{i}", cluster=f"done{i}-{i}", submitted_at=1.0)
                row = Row(
                    kind="managed_job", id=str(i), state="SUCCEEDED", version=0, terminal=True,
                    spec=encode(spec), data=encode(ManagedJobData(ended_at=2.0)),
                )  # fmt: skip
                await store.insert(row, "submitted")

    anyio.run(seed)


def _ids(stix: Stix, *args: str) -> list[int]:
    return [j["job_id"] for j in json.loads(stix.run(*args, "--json", check=True).stdout)]


def _table_ids(text: str) -> list[int]:
    return [int(line.split()[0]) for line in text.splitlines() if line[:1].isdigit()]


def test_jobs_queue_shows_the_newest_50_and_says_how_many_more_are_hidden(stix: Stix) -> None:
    _ended_jobs(stix.home, 60)
    out = stix.run("jobs", "queue", check=True).stdout
    assert _table_ids(out) == list(range(60, 10, -1))
    assert out.rstrip().splitlines()[-1] == (
        "Only showing the latest 50 managed jobs; 10 more hidden "
        "(use --limit N to show more, or --all to show all)"
    )
    five = stix.run("jobs", "queue", "--limit", "5", check=True).stdout
    assert _table_ids(five) == [60, 59, 58, 57, 56] and "55 more hidden" in five
    every = stix.run("jobs", "queue", "--all", check=True).stdout
    assert _table_ids(every) == list(range(60, 0, -1)) and "hidden" not in every
    # --json lists what the table lists (as `sky jobs queue -o json`); the note is on stderr
    listed = stix.run("jobs", "queue", "--json", check=True)
    assert [j["job_id"] for j in json.loads(listed.stdout)] == list(range(60, 10, -1))
    assert "10 more hidden" in listed.stderr
    assert _ids(stix, "jobs", "queue", "--all") == list(range(60, 0, -1))
    assert _ids(stix, "jobs", "queue", "--skip-finished") == []
    assert "from 1 up to" in stix.run("jobs", "queue", "--limit", "0").stderr


def test_jobs_queue_all_json_is_streamed_in_chunks_and_equals_the_whole_list(
    stix: Stix,
) -> None:
    n = 2 * views.PAGE + 7
    _ended_jobs(stix.home, n)
    whole = [msg for msg in stream(stix.home, m.JobsQueue(all=True))]
    assert [type(x) for x in whole] == [m.ManagedJobList]
    streamed = list(stream(stix.home, m.JobsQueue(all=True, stream=True)))
    chunks = [x for x in streamed if isinstance(x, m.ManagedJobRows)]
    assert len(chunks) == 3 and all(len(c.jobs) <= views.PAGE for c in chunks)
    assert streamed[-1] == m.ManagedJobList(jobs=[])
    assert [j for c in chunks for j in c.jobs] == whole[0].jobs
    cli = stix.run("jobs", "queue", "--all", "--json", check=True).stdout
    assert [j["job_id"] for j in json.loads(cli)] == list(range(n, 0, -1))


def test_status_lists_the_newest_of_your_clusters_and_of_managed_jobs_and_the_rest_on_ask(
    stix: Stix, task_file: Callable[[str], Path]
) -> None:
    fake_daemon(stix, launch_seconds="0")
    for mine in ("mine", "mine2"):
        stix.run("launch", "-c", mine, "-y", "true", check=True)
    for name in ("a", "b", "c"):
        stix.run("jobs", "launch", "-d", "-y", str(task(task_file, name)), check=True)
    owned = ["a-1", "b-2", "c-3"]
    wait_until(lambda: all(c in stix.clusters() for c in owned), timeout=60, interval=0.2)
    two = stix.run("status", "--limit", "2", check=True).stdout
    assert all(c in two for c in ["mine", "mine2", "b-2", "c-3"]) and "a-1" not in two
    assert two.rstrip().splitlines()[-1] == (
        "Only showing the latest 2 of your clusters and of managed jobs' clusters; 1 more "
        "hidden (use --limit N to show more, or --all to show all)"
    )
    assert all(c in stix.run("status", check=True).stdout for c in ["mine", "mine2", *owned])
    every = json.loads(stix.run("status", "--all", "--json", check=True).stdout)
    assert [c["name"] for c in every] == ["mine", "mine2", *owned]
    assert [c["owner"] for c in every] == [None, None, "job 1", "job 2", "job 3"]
    limited = stix.run("status", "--limit", "1", "--json", check=True)
    assert [c["name"] for c in json.loads(limited.stdout)] == ["mine2", "c-3"]
    assert "3 more hidden" in limited.stderr
    assert [j["job_id"] for j in stix.json("jobs", "queue", "--skip-finished")] == [3, 2, 1]
    # a managed job's cluster is still its own: `down` refuses it, and `down -a` leaves it
    assert "managed job 2 runs on it" in stix.run("down", "-y", "b-2").stderr
    stix.run("down", "-a", "-y", check=True)
    assert set(stix.clusters()) == set(owned)


@pytest.mark.anyio
async def test_the_default_views_read_through_indexes(tmp_path: Path) -> None:
    async with open_store(tmp_path / "state.db") as store:
        statements: list[str] = []
        assert isinstance(store.backend, SqliteBackend)
        await store.backend.trace(statements.append)
        await views.newest_managed_jobs(store, live_only=False, limit=50)
        await views.newest_managed_jobs(store, live_only=True, limit=50)
        await views.count_managed_jobs(store, live_only=True)
        await views.jobs_keeping_up(store, ["x-1"])
        await views.live_cluster_names(store)
        await views.live_rows_not_of(store, ["cluster", "job", "managed_job"])
    db = sqlite3.connect(tmp_path / "state.db")
    plans = [
        " / ".join(r[-1] for r in db.execute(f"EXPLAIN QUERY PLAN {sql}"))
        for sql in statements
        if sql.startswith("SELECT") and "terminal < 0" not in sql  # the damaged-flag look-up
    ]
    db.close()
    assert "USING INDEX managed_jobs_by_number" in plans[0]
    assert "USING INDEX live_managed_jobs_by_number" in plans[1]
    assert "COVERING INDEX" in plans[2]
    assert all("live_managed_jobs_by_cluster" in p for p in plans[3:6]), plans
    assert "USING COVERING INDEX actors_listing" in plans[5]
    assert plans[6].startswith("MULTI-INDEX OR") and "(terminal=?)" not in plans[6]  # strays
    # a scan only ever walks a number index in its order, and stops at the limit
    scans = [step for p in plans for step in p.split(" / ") if step.startswith("SCAN")]
    assert all("managed_jobs_by_number" in step for step in scans), plans
    assert not any("TEMP B-TREE" in p for p in plans[:6]), plans  # (strays: sorts none)


@pytest.mark.anyio
async def test_the_next_managed_job_number_is_one_index_probe(tmp_path: Path) -> None:
    async with open_store(tmp_path / "state.db") as store:
        for n in range(3):
            made = await store.insert_next(
                "managed_job",
                lambda number: Row(kind="managed_job", id=str(number), state="PENDING", version=0),
                "submitted",
            )
            assert made.id == str(n + 1)
    db = sqlite3.connect(tmp_path / "state.db")
    plan = [r[-1] for r in db.execute(f"EXPLAIN QUERY PLAN {NEXT_NUMBER}", ("managed_job",))]
    db.close()
    assert plan == ["SEARCH actors USING INDEX actors_number (kind=?)"], plan


@pytest.mark.anyio
async def test_the_kept_split_of_clusters_follows_every_write_that_changes_it(
    open_any: OpenStore,
) -> None:
    def cluster(name: str) -> Row:
        return Row(kind="cluster", id=name, state="UP", version=0)

    async with open_any() as store:
        split = views.ClusterSplit(store)
        mine = await store.insert(cluster("mine"), "created")
        await store.insert(cluster("job-1"), "created")
        spec = encode(ManagedJobSpec(name="job", cluster="job-1"))
        job = Row(kind="managed_job", id="1", state="RUNNING", version=0, spec=spec)
        job = await store.insert(job, "submitted")
        assert await split.names() == (["mine"], ["job-1"])
        asked: list[str] = []
        if isinstance(store.backend, SqliteBackend):
            await store.backend.db.set_trace_callback(asked.append)
        job = await store.update(job, event="ran", data={"run": 1})  # owns the same cluster
        assert await split.names() == (["mine"], ["job-1"])
        assert not [s for s in asked if "EXISTS" in s or "LIMIT 1" in s]  # kept, not asked
        await store.update(job, event="ended", state="SUCCEEDED", terminal=True)
        assert await split.names() == (["mine", "job-1"], [])
        await store.insert(cluster("new"), "created")
        assert await split.names() == (["mine", "job-1", "new"], [])
        await store.update(mine, event="down", state="TERMINATED", terminal=True)
        assert await split.names() == (["job-1", "new"], [])
        late = Row(kind="managed_job", id="2", state="PENDING", version=0,
                   spec=encode(ManagedJobSpec(name="new", cluster="new")))  # fmt: skip
        await store.insert(late, "submitted")
        assert await split.names() == (["job-1"], ["new"])


@pytest.mark.anyio
async def test_a_streamed_listing_reads_every_job_once_page_by_page(
    open_any: OpenStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(views, "READ_PAGE", 3)
    async with open_any() as store:
        for i in range(1, 11):
            spec = encode(ManagedJobSpec(name="j", cluster=f"j-{i}"))
            row = Row(kind="managed_job", id=str(i), state="RUNNING", version=0, spec=spec)
            await store.insert(row, "submitted")
        pages = [
            [int(r.id) for r in p] async for p in views.managed_job_pages(store, live_only=False)
        ]
        assert pages == [[10, 9, 8], [7, 6, 5], [4, 3, 2], [1]]
