"""`stixctl fake preempt`: spot preemptions on the `fake` provider, for tests and benchmarks."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from stixd.actors.asks import ask_cluster
from stixd.app import App
from stixd.providers.abilities import SimulatesPreemption
from stixproto import messages as m
from stixproto.errors import InvalidRequest, StixError

Emit = Callable[[Any], Awaitable[None]]


def _fake(app: App) -> SimulatesPreemption:
    for provider in app.providers.values():
        if isinstance(provider, SimulatesPreemption):
            return provider
    raise InvalidRequest(
        "the fake provider is not enabled in this daemon (it is for tests and benchmarks "
        "only: start the daemon with fake.enabled: true or STIX__FAKE__ENABLED=true)"
    )


async def fake_preempt(app: App, req: m.FakePreempt, emit: Emit) -> m.Table:
    """Preempt, then report it to each cluster hit, as a cloud's interruption notice does:
    the cluster finds its nodes gone and ends its jobs (a managed job then recovers)."""
    provider = _fake(app)
    if not req.clusters and req.count <= 0:
        raise InvalidRequest("name the fake clusters to preempt, or give --count N")
    regions = {c: provider.region_of(c) for c in req.clusters}
    unknown = [c for c, region in regions.items() if region is None]
    if unknown:
        raise InvalidRequest(f"no fake cluster {unknown[0]!r} has nodes to preempt")
    before = {c: provider.region_of(c) for c in provider.clusters()}
    hit = provider.preempt(req.clusters, req.count)
    app.log.info("fake_preempted", clusters=len(hit))

    async def report(cluster: str) -> None:
        try:
            await ask_cluster(app, cluster, m.Status(clusters=[cluster], refresh=True), emit)
        except StixError as exc:  # a cluster without a record: nothing to tell
            app.log.warning("fake_preempt_report_failed", cluster=cluster, error=exc.message)

    async with anyio.create_task_group() as tg:
        for cluster in hit:
            tg.start_soon(report, cluster)
    rows = [{"cluster": c, "region": before.get(c)} for c in hit]
    text = "\n".join(f"preempted {r['cluster']} in {r['region']}" for r in rows)
    return m.Table(text=text or "nothing to preempt", rows=rows)
