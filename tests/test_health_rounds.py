"""The health checks of many clusters are one look a tick, and wake only what changed (issue 15).

Fifty UP clusters on the fake provider, run by their real cluster actors on a real store in one
app, the way the daemon builds it, but on a `ManualClock`: each tick asks the provider once
for all fifty (``query_many``), no actor is woken and no row is written while nothing changes,
and a cluster whose nodes a preemption took is found, recorded and ended on the next tick. A
provider without ``query_many`` is asked about each cluster in the round instead, and its
unchanged clusters' actors are not woken either.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import anyio
import pytest

from stixd.actors.cluster_health import check_health
from stixd.agent_client import AgentClient
from stixd.app import App
from stixd.providers.abilities import LooksUpMany
from stixd.providers.base import CheckResult, Mount, NodeInfo, NodeLoss, ProvisionRequest
from stixd.providers.fake.provider import FakeProvider
from stixd.runtime.clock import ManualClock
from stixd.store.db import Row
from tests.app_support import app_on_store

pytestmark = pytest.mark.anyio
CLUSTERS = 50
PERIOD = 10.0  # the default health_check_seconds


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class CountedFake(FakeProvider):
    """The fake provider, counting the look-ups asked of it."""

    def __init__(self) -> None:
        super().__init__(["fake-1"], build="test")
        self.asked: list[str] = []
        self.rounds: list[int] = []

    async def query(self, cluster: str) -> list[NodeInfo]:
        self.asked.append(cluster)
        return await super().query(cluster)

    async def query_many(self, clusters: Sequence[str]) -> dict[str, list[NodeInfo]]:
        self.rounds.append(len(clusters))
        return await super().query_many(clusters)


class OneByOne:
    """The same fake cloud behind a provider that can only look at one cluster at a time."""

    name = "fake"

    def __init__(self, fake: CountedFake) -> None:
        self.fake = fake

    async def check(self) -> CheckResult:
        return await self.fake.check()

    async def launch(self, req: ProvisionRequest) -> list[NodeInfo]:
        return await self.fake.launch(req)

    async def query(self, cluster: str) -> list[NodeInfo]:
        return await self.fake.query(cluster)

    def lost_nodes(self, cluster: str) -> list[NodeLoss]:
        return self.fake.lost_nodes(cluster)

    async def stop(self, cluster: str) -> None:
        await self.fake.stop(cluster)

    async def terminate(self, cluster: str) -> None:
        await self.fake.terminate(cluster)

    async def sync(self, node: NodeInfo, mounts: list[Mount]) -> int:
        return 0

    def connector(self, node: NodeInfo) -> AgentClient:
        return self.fake.connector(node)


async def _until(ready: Callable[[], bool], what: str, within: float = 10.0) -> None:
    with anyio.fail_after(within):
        while not ready():
            await anyio.sleep(0.01)
    assert ready(), what


def _daemon(home: Path, provider: Any, clock: ManualClock) -> AbstractAsyncContextManager[App]:
    """An app as the daemon builds it (real store, supervisor, cluster actors, health checks),
    on `clock`, with `provider` as its only one."""
    return app_on_store(home, providers={"fake": provider}, clock=clock)


async def _up_clusters(app: App, fake: CountedFake) -> list[str]:
    """`CLUSTERS` clusters made on the fake cloud and stored UP, their actors started (each
    reconciles: one look of its own)."""
    names = [f"c{i:02d}" for i in range(CLUSTERS)]
    for name in names:
        nodes = await fake.launch(ProvisionRequest(name, 1, app.agent_pyz, {"region": "fake-1"}))
        row = Row(
            kind="cluster",
            id=name,
            state="UP",
            version=0,
            spec={"provider": "fake", "num_nodes": 1, "resources": "1x fake"},
            data={"uid": f"u{name}", "nodes": [n.to_dict() for n in nodes]},
        )
        app.spawn(await app.store.insert(row, "created"))
    await _until(lambda: all(app.health.watching(n) for n in names), "every cluster watched")
    return names


async def _versions(app: App, names: list[str]) -> dict[str, int]:
    rows = [await app.store.get("cluster", n) for n in names]
    return {r.id: r.version for r in rows if r is not None}


async def _tick(app: App, clock: ManualClock) -> None:
    """Move time to the next health tick and wait until its round is over (the checks sleep
    again)."""
    await clock.until_waiting(1)
    rounds = app.health.rounds
    clock.advance(PERIOD)
    await _until(lambda: app.health.rounds > rounds, "a round")
    await clock.until_waiting(1)


async def test_health_checks_of_fifty_clusters_are_one_call_a_tick_waking_only_a_changed_one(
    tmp_path: Path,
) -> None:
    clock, fake = ManualClock(), CountedFake()
    assert isinstance(fake, LooksUpMany)
    async with _daemon(tmp_path, fake, clock) as app, anyio.create_task_group() as tg:
        names = await _up_clusters(app, fake)
        assert sorted(fake.asked) == names  # the reconcile at start: a look each
        tg.start_soon(check_health, app)
        fake.asked.clear()
        before = await _versions(app, names)

        for _ in range(3):
            await _tick(app, clock)
        assert fake.rounds == [CLUSTERS] * 3  # one call a tick for all fifty
        assert fake.asked == []  # no actor was woken to look for itself
        assert await _versions(app, names) == before  # nor wrote anything

        assert fake.preempt(["c07"]) == ["c07"]
        await _tick(app, clock)
        assert fake.rounds == [CLUSTERS] * 4
        gone = await app.watch.wait_for("cluster", "c07", lambda r: r is not None and r.terminal)
        assert gone is not None and gone.state == "TERMINATED"
        events = [e.event for e in await app.store.events("cluster", "c07")]
        assert "node_preempted" in events and "found_gone" in events
        assert fake.asked == ["c07"]  # only the changed cluster's actor looked again
        after = await _versions(app, names)
        assert {n for n in names if after[n] != before[n]} == {"c07"}

        await _tick(app, clock)  # the ended cluster is no longer checked
        assert fake.rounds[-1] == CLUSTERS - 1 and fake.asked == ["c07"]
        tg.cancel_scope.cancel()


async def test_a_provider_that_looks_one_cluster_at_a_time_is_asked_in_the_round_not_by_actors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock, fake = ManualClock(), CountedFake()
    provider = OneByOne(fake)
    assert not isinstance(provider, LooksUpMany)
    async with _daemon(tmp_path, provider, clock) as app, anyio.create_task_group() as tg:
        names = await _up_clusters(app, fake)
        tg.start_soon(check_health, app)
        before = await _versions(app, names)
        woken: list[str] = []
        tell: Callable[[str, str, Any], bool] = app.supervisor.tell

        def counted(kind: str, id_: str, message: Any) -> bool:
            woken.append(id_)
            return tell(kind, id_, message)

        monkeypatch.setattr(app.supervisor, "tell", counted)
        fake.asked.clear()
        await _tick(app, clock)
        assert sorted(fake.asked) == names and woken == []
        assert await _versions(app, names) == before

        fake.preempt(["c11"])
        fake.asked.clear()
        await _tick(app, clock)
        await app.watch.wait_for("cluster", "c11", lambda r: r is not None and r.terminal)
        assert woken == ["c11"]
        assert sorted(fake.asked) == sorted([*names, "c11"])  # the round's, then its actor's
        tg.cancel_scope.cancel()
