"""A service going down: every replica shut down by its own actor (its cluster torn down),
the balancer stopped, then the rows forgotten; a replica that cannot be torn down leaves the
service FAILED_CLEANUP until `serve down --purge`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from stixd.actors.replica import Shutdown
from stixd.actors.service_rounds import TornDownAll
from stixd.actors.service_rows import REPLICA
from stixd.actors.service_states import SE
from stixd.actors.service_view import replicas_of
from stixproto.states import ReplicaStatus as R
from stixproto.states import ServiceStatus as S
from stixproto.task import redacted_task

if TYPE_CHECKING:
    from stixd.actors.service import ServiceActor


async def begin_down(actor: ServiceActor, purge: bool) -> None:
    if actor.state is not S.SHUTTING_DOWN:
        await actor.transition(SE.DOWN, "down requested", purge=purge)
    elif purge and not actor.data.purge:
        await actor.save(purge=True)
    actor.cancel_timer("round")
    actor.start_soon(_tear_down, actor)


async def _tear_down(actor: ServiceActor) -> None:
    purge = actor.data.purge
    app = actor.app
    for replica in await replicas_of(actor):
        if replica.status.is_terminal:
            continue
        if not app.supervisor.tell(REPLICA, replica.row.id, Shutdown(purge)):
            app.spawn(replica.row)
            app.supervisor.tell(REPLICA, replica.row.id, Shutdown(purge))
    for replica in await replicas_of(actor):
        child = app.supervisor.get(REPLICA, replica.row.id)
        if child is not None and child.failed is not None:
            continue  # its actor cannot run (a damaged row): forgotten with the rest below
        await app.watch.wait_for(REPLICA, replica.row.id, lambda r: r is None or r.terminal)
    if app.balancers is not None:
        try:
            await app.balancers.stop(actor.id)
        except Exception:
            actor.log.exception("balancer_stop_failed")
    actor.tell(TornDownAll())


async def _without_secrets(actor: ServiceActor) -> None:
    """Its versions' secret values (kept to launch replicas, and there are no more) are
    overwritten, and no copy is left in the store's files, before its row goes."""
    versions = actor.spec.versions
    scrubbed = [msgspec.structs.replace(v, task=redacted_task(v.task)) for v in versions]
    if scrubbed != versions:
        await actor.save(spec=msgspec.structs.replace(actor.spec, versions=scrubbed))
        await actor.store.forget_overwritten()


async def all_down(actor: ServiceActor) -> None:
    if actor.state is not S.SHUTTING_DOWN:
        return
    replicas = await replicas_of(actor)
    stuck = [r for r in replicas if r.status is R.FAILED_CLEANUP]
    if stuck and not actor.data.purge:
        ids = ", ".join(str(r.spec.replica_id) for r in stuck)
        why = f"replica(s) {ids} could not be torn down; `serve down --purge` forgets them"
        await actor.transition(SE.CLEANUP_FAILED, why, failure_reason=why)
        return
    await _without_secrets(actor)
    for row in await actor.store.rows(REPLICA, parent=actor.id):
        await actor.store.delete(row, "service down")
    await actor.store.delete(actor.row, "service down")
    actor.gone = True
    actor.log.info("service_removed")
