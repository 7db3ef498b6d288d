"""Which clusters a managed job or a pool owns: the daemon drives those to their end itself,
so a client's `down`/`stop`/`autostop` leaves them alone (SkyPilot keeps its controllers out
of `-a` the same way) and `status` lists them apart.

Ownership is read from the owners' own rows, never stored on the cluster: a live managed job
owns the cluster its spec names; a live pool owns its numbered workers, the workers its jobs
hold and the workers of an earlier, larger size it has yet to tear down; a live replica of a
service owns its cluster.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from stixd.actors.job_pool import JobPoolActor, worker_name
from stixd.actors.quarantine import reason_of
from stixd.actors.service_rows import REPLICA, SERVICE, ReplicaSpec, replica_cluster
from stixd.actors.specs import (
    JobPoolData,
    JobPoolSpec,
    ManagedJobSpec,
    data_of,
    spec_of,
    spec_or_none,
)
from stixd.app import App
from stixd.control.jobs_cmds import KIND, POOL, row_cluster
from stixd.store import views
from stixd.store.db import Row
from stixproto import names
from stixproto.errors import InvalidRequest


@dataclass(frozen=True)
class Owner:
    kind: str
    """The owner's row kind: a managed job's or a pool's."""
    name: str
    """The job's id, or the pool's name."""

    @property
    def label(self) -> str:
        if self.kind == SERVICE:
            return f"service {self.name}"
        return f"job {self.name}" if self.kind == KIND else f"pool {self.name}"

    def refusal(self, cluster: str, verb: str) -> str:
        if self.kind == SERVICE:
            return (
                f"cannot {verb} cluster {cluster!r}: it is a replica of service {self.name}, "
                f"which would replace it; take the service down with "
                f"`{names.command('serve', 'down', self.name)}`"
            )
        if self.kind == KIND:
            return (
                f"cannot {verb} cluster {cluster!r}: managed job {self.name} runs on it and "
                f"would bring it back; cancel the job with "
                f"`{names.command('jobs', 'cancel', self.name)}` (its cluster goes with it)"
            )
        return (
            f"cannot {verb} cluster {cluster!r}: it is a worker of pool {self.name}, which "
            f"keeps it up; tear the pool down with "
            f"`{names.command('jobs', 'pool', 'down', self.name)}`"
        )


OWNER_KINDS = (POOL, REPLICA)
"""The kinds whose live rows `cluster_owners` reads (besides the managed jobs' index)."""


async def cluster_owners(
    app: App,
    clusters: Collection[str] | None = None,
    live: Mapping[str, list[Row]] | None = None,
) -> dict[str, Owner]:
    """Cluster name → its owner, for the clusters a live managed job or pool holds: among
    `clusters` (read through the jobs' index: only the jobs that may own one of them), or
    among every live cluster when None. `live`: the live rows of `OWNER_KINDS` as the caller
    read them (`views.live_of_kinds`), else read here."""
    if clusters is None:
        clusters = [r.id for r in await app.store.rows("cluster", include_terminal=False)]
    if live is None:
        damaged = await views.damaged_rows(app.store)
        live = await views.live_of_kinds(app.store, OWNER_KINDS, damaged)
    owners: dict[str, Owner] = {}
    prefixes: dict[str, Owner] = {}
    for pool in live[POOL]:
        if reason_of(app, pool) is not None or JobPoolActor.row_problem(pool) is not None:
            continue  # quarantined (or about to be): its columns may hold anything
        owner = Owner(POOL, pool.id)
        prefixes[f"{pool.id}-"] = owner
        held = set(data_of(pool, JobPoolData).claims)
        held |= {worker_name(pool.id, i) for i in range(spec_of(pool, JobPoolSpec).workers)}
        for name in held:
            owners[name] = owner
    shrunk: dict[str, Owner] = {}
    for name in clusters:
        for prefix, owner in prefixes.items():
            if name.startswith(prefix) and name[len(prefix) :].isdigit() and name not in owners:
                shrunk[name] = owner
    for row in await views.clusters_named(app.store, list(shrunk), live_only=True):
        owners[row.id] = shrunk[row.id]  # a worker of a size since shrunk
    for replica in live[REPLICA]:
        rspec = spec_or_none(replica, ReplicaSpec)
        if rspec is not None:
            owners[replica_cluster(rspec.service, rspec.replica_id)] = Owner(SERVICE, rspec.service)
    wanted = set(clusters)
    for job in await views.jobs_keeping_up(app.store, list(wanted)):
        spec = spec_or_none(job, ManagedJobSpec)
        if reason_of(app, job) is None and spec is not None and not spec.pool:
            name = row_cluster(job)
            if name in wanted:
                owners[name] = Owner(KIND, job.id)
    return {name: owners[name] for name in wanted if name in owners}


def refuse_owned(clusters: list[str], owners: dict[str, Owner], verb: str) -> None:
    """A client may not end what a managed job or pool keeps up: it would be relaunched."""
    for cluster in clusters:
        owner = owners.get(cluster)
        if owner is not None:
            raise InvalidRequest(owner.refusal(cluster, verb))
