"""Turning a task into a job row: everything the agents need, fixed at creation.

The submit payload is stored with the job, so a submission replayed after a crash is the same
submission (the agents deduplicate by job id). Its `secrets` names the envs that are secrets:
the job actor forgets their values once every agent has the job, and each agent once the job
has started.
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any

import msgspec

from stixd.actors.specs import JobData, JobSpec, encode
from stixd.storage.copy import node_path
from stixd.store.db import Row, RowExists
from stixproto.states import JobStatus
from stixproto.task import Task, resolved_envs, secret_names

if TYPE_CHECKING:
    from stixd.actors.cluster import ClusterActor


def infra_label(provider: str, pool: str | None) -> str:
    """How a cluster's infra is shown: `local`, `ssh/POOL`."""
    return f"{provider}/{pool}" if pool else provider


def make_task_id(cluster: str, job_id: int) -> str:
    stamp = datetime.datetime.now().strftime("%Y-%m-%d-%H-%M-%S-%f")
    return f"sky-{stamp}_{cluster}_{job_id}"


def job_row_id(cluster: str, uid: str, job_id: int) -> str:
    return f"{cluster}/{uid}/{job_id}"


def without_secrets(spec: JobSpec) -> JobSpec | None:
    """The job row's spec with its secrets' values dropped; None when it holds none."""
    submit = spec.submit
    names = set(submit.get("secrets") or ())
    envs = submit.get("envs") or {}
    if not names & set(envs):
        return None
    kept = {k: v for k, v in envs.items() if k not in names}
    return msgspec.structs.replace(spec, submit={**submit, "envs": kept})


async def create_job(
    cluster: ClusterActor,
    job_id: int,
    task: Task,
    *,
    with_setup: bool,
    task_id: str | None = None,
    cluster_mounts: bool = False,
) -> Row:
    """Insert the job row (idempotent by id) and start its actor. ``cluster_mounts``: the job
    writes through the cluster's bucket mounts too (an ``exec``'d one: its task declares none,
    its end waits for them all)."""
    uid = cluster.data.uid
    assert uid is not None  # every launch writes one before its first job
    provider = cluster.spec.provider
    nodes = cluster.nodes[: task.num_nodes]
    dests = list(task.storage_mounts())
    if cluster_mounts:
        dests += [b.dest for b in cluster.data.bucket_mounts if b.dest not in dests]
    submit: dict[str, Any] = {
        "job_id": job_id,
        "name": task.name,
        "setup": task.setup if with_setup else None,
        "run": task.run,
        "envs": resolved_envs(task),
        "secrets": secret_names(task),
        "num_gpus": 0.0,
        "task_id": task_id or make_task_id(cluster.id, job_id),
        "node_ips": [n.ip for n in nodes],
        "num_nodes": task.num_nodes,
        # a gang with a setup step: every node sets up, then all start `run` together
        "gang": task.num_nodes > 1 and with_setup and task.setup is not None,
        # each node's bucket mount paths: a job's end waits for its own mounts' writes only
        "mounts": {str(n.rank): [node_path(cluster.provider, n, d) for d in dests] for n in nodes},
        "cluster_info": {
            "cluster_name": cluster.id,
            "cloud": provider,
            "region": cluster.spec.pool or provider,
            "zone": None,
        },
    }
    row = Row(
        kind="job",
        id=job_row_id(cluster.id, uid, job_id),
        parent=uid,
        state=JobStatus.INIT.value,
        version=0,
        spec=encode(
            JobSpec(
                cluster=cluster.id,
                uid=uid,
                job_id=job_id,
                name=task.name,
                provider=provider,
                resources=f"{task.num_nodes}x {infra_label(provider, cluster.spec.pool)}",
                nodes=[n.to_dict() for n in nodes],
                submit=submit,
                owner=cluster.spec.owner,
            )
        ),
        data=encode(JobData(submitted_at=None)),
    )
    try:
        row = await cluster.store.insert(row, "created", f"job {job_id} on {cluster.id}")
    except RowExists:
        existing = await cluster.store.get("job", row.id)
        assert existing is not None
        row = existing
    if not row.terminal:
        cluster.app.spawn(row)
    return row
