"""Leases on one PostgreSQL database (issue 18, item 4), at the store: the replica that inserts
a row runs it, another cannot claim it while the lease lives, takes it once it expired by the
database's clock, and the first one's writes are then refused (fenced by the epoch)."""

from __future__ import annotations

import anyio
import pytest

from stixd.store.backend import Tx
from stixd.store.chosen import open_postgres
from stixd.store.db import Row
from stixd.store.leases import Leases, LostLease
from tests.conftest import OpenStore
from tests.pg_server import PgServer

pytestmark = pytest.mark.anyio

SECONDS = 0.6


async def _expire() -> None:
    await anyio.sleep(SECONDS + 0.2)


async def test_a_row_is_run_by_the_replica_that_made_it_until_its_lease_expires(
    postgres: PgServer,
) -> None:
    url = postgres.fresh()
    async with open_postgres(url) as a, open_postgres(url) as b:
        a.leases = Leases(a.backend, "a", SECONDS)
        b.leases = Leases(b.backend, "b", SECONDS)
        row = await a.insert(Row(kind="cluster", id="c1", state="INIT", version=0), "created")
        assert a.leases.holds("cluster", "c1")
        assert not await b.leases.claim("cluster", "c1")
        assert await b.leases.claim_free(own_too=False) == []
        assert await b.leases.owner_of("cluster", "c1") == "a"
        assert await a.leases.renew() == []  # renewed: still a's
        row = await a.update(row, event="go", state="UP")

        await _expire()
        assert await b.leases.claim_free(own_too=False) == [("cluster", "c1")]
        with pytest.raises(LostLease):
            await a.update(row, event="late", state="STOPPED")
        assert (await b.get("cluster", "c1")).state == "UP"  # type: ignore[union-attr]
        assert await a.leases.renew() == []  # (already dropped by the refused write)
        fresh = await b.get("cluster", "c1")
        assert fresh is not None
        await b.update(fresh, event="go", state="STOPPED")


async def test_a_paused_replica_learns_at_its_renewal_which_leases_it_lost(
    postgres: PgServer,
) -> None:
    url = postgres.fresh()
    async with open_postgres(url) as a, open_postgres(url) as b:
        a.leases = Leases(a.backend, "a", SECONDS)
        b.leases = Leases(b.backend, "b", SECONDS)
        for n in ("1", "2"):
            await a.insert(Row(kind="cluster", id=n, state="INIT", version=0), "created")
        assert await a.leases.renew() == []  # (a lease just taken is judged from the next)
        await _expire()
        assert await b.leases.claim("cluster", "1")
        assert await a.leases.renew() == [("cluster", "1")]  # "2" is a's still: renewed
        assert not await b.leases.claim("cluster", "2")


async def test_a_lease_taken_while_a_renewal_runs_is_not_counted_lost(
    postgres: PgServer,
) -> None:
    async with open_postgres(postgres.fresh()) as a:
        leases = a.leases = Leases(a.backend, "a", 60)
        inside, commit = anyio.Event(), anyio.Event()

        async def work(tx: Tx) -> None:  # an insert's transaction, its lease taken, still open
            await leases.take(tx, "cluster", "c1")
            inside.set()
            await commit.wait()

        async with anyio.create_task_group() as tg:
            tg.start_soon(a.backend.write, work)
            await inside.wait()
            try:
                lost = await leases.renew()  # its UPDATE cannot see the lease yet
            finally:
                commit.set()
        assert lost == []
        assert await leases.renew() == [] and leases.holds("cluster", "c1")


async def test_a_restarted_replica_takes_its_own_leases_back_at_once_and_fences_its_past(
    postgres: PgServer,
) -> None:
    url = postgres.fresh()
    async with open_postgres(url) as old, open_postgres(url) as new:
        old.leases = Leases(old.backend, "a", 60)
        new.leases = Leases(new.backend, "a", 60)
        row = await old.insert(Row(kind="job", id="j", state="PENDING", version=0), "created")
        assert await new.leases.claim_free(own_too=True) == [("job", "j")]
        with pytest.raises(LostLease):
            await old.update(row, event="late", state="RUNNING")
        await new.update(row, event="go", state="RUNNING")


async def test_a_deleted_row_takes_its_lease_with_it_and_its_name_starts_afresh(
    postgres: PgServer,
) -> None:
    url = postgres.fresh()
    async with open_postgres(url) as a, open_postgres(url) as b:
        a.leases = Leases(a.backend, "a", 60)
        b.leases = Leases(b.backend, "b", 60)
        row = await a.insert(Row(kind="service", id="s", state="INIT", version=0), "created")
        assert await a.delete(row)
        assert await b.leases.owner_of("service", "s") is None
        await b.insert(Row(kind="service", id="s", state="INIT", version=0), "created")
        assert b.leases.holds("service", "s")


async def test_without_leases_the_store_writes_as_before(open_any: OpenStore) -> None:
    async with open_any() as store:
        assert store.leases is None
        row = await store.insert(Row(kind="cluster", id="c", state="INIT", version=0), "made")
        await store.update(row, event="go", state="UP")


async def test_a_dead_replicas_pools_and_services_land_with_their_jobs_and_replicas_among_three(
    postgres: PgServer,
) -> None:
    url = postgres.fresh()
    async with (
        open_postgres(url) as dead,
        open_postgres(url) as a,
        open_postgres(url) as b,
        open_postgres(url) as c,
    ):
        dead.leases = Leases(dead.backend, "dead", SECONDS)
        groups: dict[str, list[str]] = {}
        number = 0
        for pool in ("p1", "p2", "p3", "p4"):
            await dead.insert(Row(kind="job_pool", id=pool, state="READY", version=0), "made")
            for _ in range(3):
                number += 1
                job = Row(kind="managed_job", id=str(number), state="PENDING", version=0)
                job.spec = {"pool": pool}
                await dead.insert(job, "made")
                groups.setdefault(pool, []).append(str(number))
        await dead.insert(Row(kind="service", id="web", state="READY", version=0), "made")
        for n in ("1", "2", "3"):
            replica = Row(kind="replica", id=f"web/{n}", state="READY", version=0, parent="web")
            await dead.insert(replica, "made")
        for alone in ("c1", "c2"):
            await dead.insert(Row(kind="cluster", id=alone, state="UP", version=0), "made")
            for n in ("1", "2"):
                job = Row(kind="job", id=f"{alone}/u{alone}/{n}", state="RUNNING", version=0)
                job.parent = f"u{alone}"
                await dead.insert(job, "made")
        await dead.insert(Row(kind="cluster", id="c3", state="UP", version=0), "made")
        await dead.insert(Row(kind="cluster", id="c3x", state="UP", version=0), "made")
        job = Row(kind="job", id="c3x/u/1", state="RUNNING", version=0, parent="u")
        await dead.insert(job, "made")  # of c3x, not of c3 (a prefix of its name)
        orphan = Row(kind="managed_job", id="99", state="PENDING", version=0)
        orphan.spec = {"pool": "gone"}  # its pool is no more: any replica runs it
        await dead.insert(orphan, "made")
        survivors = {"a": a, "b": b, "c": c}
        held = {name: Leases(store.backend, name, 60) for name, store in survivors.items()}
        for name, store in survivors.items():
            store.leases = held[name]
        await _expire()

        assert await held["a"].claim("job_pool", "p1")  # (as a request's spawn does)
        assert await held["a"].claim("service", "web")
        assert await held["a"].claim("cluster", "c1")
        assert not await held["b"].claim("job", "c1/uc1/1")  # c1 is a's
        assert not await held["b"].claim("managed_job", groups["p1"][0])  # p1 is a's
        assert not await held["c"].claim("replica", "web/1")  # and so is web
        taken: dict[str, list[tuple[str, str]]] = {}

        async def sweep(name: str) -> None:
            taken[name] = await held[name].claim_free(own_too=False)

        async with anyio.create_task_group() as tg:  # b and c split the rest between them
            tg.start_soon(sweep, "b")
            tg.start_soon(sweep, "c")
        followers = {("managed_job", j) for j in groups["p1"]}
        followers |= {("replica", f"web/{n}") for n in ("1", "2", "3")}
        followers |= {("job", f"c1/uc1/{n}") for n in ("1", "2")}
        assert not followers & {*taken["b"], *taken["c"]}
        await sweep("a")
        assert set(taken["a"]) == followers  # a's sweep takes the followers of what it holds

        owners = dict(
            ((str(k), str(i)), str(o))
            for k, i, o in await a.backend.fetch("SELECT kind, id, owner FROM leases")
        )
        assert len(owners) == 4 + 12 + 4 + 2 + 4 + 2 + 1 + 1 and "dead" not in owners.values()
        for cluster in ("c1", "c2", "c3x"):
            runners = {
                o
                for (kind, i), o in owners.items()
                if kind == "job" and i.startswith(f"{cluster}/")
            }
            assert runners == {owners[("cluster", cluster)]}
        for pool, jobs in groups.items():
            assert {owners[("managed_job", j)] for j in jobs} == {owners[("job_pool", pool)]}
        replicas = {o for (kind, _), o in owners.items() if kind == "replica"}
        assert replicas == {owners[("service", "web")]}
        assert owners[("job_pool", "p1")] == "a"
        for name, leases in held.items():
            assert set(leases.held) == {k for k, o in owners.items() if o == name}
