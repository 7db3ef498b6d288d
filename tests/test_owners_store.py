"""The store's side of owners: a listing filters by owner and workspace in its one query, the
same on SQLite and PostgreSQL, through the index of migration 7 on SQLite."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from stixd.actors.specs import ManagedJobSpec, encode
from stixd.store import views
from stixd.store.db import Row, open_store
from stixd.store.sqlite import SqliteBackend
from tests.conftest import OpenStore


def cluster(name: str, **made_for: Any) -> Row:
    return Row(kind="cluster", id=name, state="UP", version=0, spec=made_for)


def job(number: int, owner: str | None = None) -> Row:
    spec = encode(ManagedJobSpec(name=f"j{number}", cluster=f"j{number}-{number}", owner=owner))
    return Row(kind="managed_job", id=str(number), state="RUNNING", version=0, spec=spec)


@pytest.mark.anyio
async def test_listings_keep_an_owners_rows_and_leave_out_hidden_workspaces(
    open_any: OpenStore,
) -> None:
    async with open_any() as store:
        await store.insert(cluster("old"), "created")  # no owner: written before owners
        await store.insert(cluster("a1", owner="alice"), "created")
        await store.insert(cluster("a2", owner="alice", workspace="secret"), "created")
        await store.insert(cluster("b1", owner="bob", workspace="default"), "created")
        await store.insert(Row(kind="cluster", id="bad", state="UP", version=0), "created")
        for n, owner in enumerate([None, "alice", "bob"], start=1):
            await store.insert(job(n, owner), "submitted")

        def of(
            owner: str | None, *, local: bool = False, hidden: frozenset[str] = frozenset()
        ) -> Any:
            return views.owned(owner, local=local, hidden=hidden, default="default")

        assert await views.live_clusters_of(store, of("alice")) == {"a1", "a2"}
        assert await views.live_clusters_of(store, of("alice", hidden=frozenset({"secret"}))) == {
            "a1"
        }
        assert await views.live_clusters_of(store, of("me", local=True)) == {"old", "bad"}
        everyone = await views.live_clusters_of(store, of(None, hidden=frozenset({"secret"})))
        assert everyone == {"old", "a1", "b1", "bad"}
        jobs = await views.newest_managed_jobs(store, live_only=True, where=of("bob"))
        assert [r.id for r in jobs] == ["3"]
        mine = of("me", local=True)
        local_jobs = await views.newest_managed_jobs(store, live_only=False, where=mine)
        assert [r.id for r in local_jobs] == ["1"]
        assert await views.count_managed_jobs(store, live_only=True, where=of("alice")) == 1
        by_workspace = dict(await views.live_clusters_by_workspace(store))
        assert by_workspace == {None: 3, "secret": 1, "default": 1}


@pytest.mark.anyio
async def test_one_users_clusters_are_read_through_the_owner_index(tmp_path: Path) -> None:
    async with open_store(tmp_path / "state.db") as store:
        statements: list[str] = []
        assert isinstance(store.backend, SqliteBackend)
        await store.backend.trace(statements.append)
        where = views.owned("alice", local=False, hidden=(), default="default")
        await views.live_clusters_of(store, where)
    db = sqlite3.connect(tmp_path / "state.db")
    sql = next(s for s in statements if s.startswith("SELECT a.id"))
    plan = " / ".join(r[-1] for r in db.execute(f"EXPLAIN QUERY PLAN {sql}"))
    db.close()
    assert "actors_by_owner" in plan, plan
