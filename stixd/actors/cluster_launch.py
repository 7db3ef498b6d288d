"""Bringing a cluster up: the launch written as intent first, provisioning with failover across
the optimizer's choices, and `exec` of a task on a cluster already UP.
"""

from __future__ import annotations

import functools
import secrets
import time
from typing import TYPE_CHECKING, Any

import anyio
import msgspec

from stixd.actors.cluster_autostop import apply_autostop_request, schedule_autostop
from stixd.actors.cluster_observe import ensure_agents_current, schedule_health
from stixd.actors.cluster_phases import start_phase
from stixd.actors.cluster_ports import open_task_ports
from stixd.actors.cluster_retry import client_gone, give_up, is_retrying, wait_and_retry
from stixd.actors.cluster_states import C, E
from stixd.actors.failover import launch_with_failover, may_run_on
from stixd.actors.jobs_submit import create_job, infra_label
from stixd.actors.launch_spec import files_digest, spec_digest
from stixd.actors.specs import ClusterSpec, PendingLaunch, decode, encode
from stixd.actors.storage_use import prepare_storage, release_storage, remount
from stixd.actors.syncing import sync_task_files, validate_mounts
from stixd.actors.volume_mounts import launch_resources, mount_task_volumes
from stixd.planner.local_fit import check_fits_local, local_offer
from stixd.planner.target import cloud_spec, task_ports
from stixd.providers.base import NodeInfo, NodeStatus, ProvisionRequest
from stixd.runtime.actor import error_reply
from stixd.runtime.mailbox import Envelope
from stixd.storage.mount import mounts_a_bucket
from stixproto import messages as m
from stixproto import names
from stixproto.errors import (
    ClusterNotFound,
    ClusterNotUp,
    InvalidRequest,
    ProvisionError,
    StixError,
)
from stixproto.task import secret_names

if TYPE_CHECKING:
    from stixd.actors.cluster import ClusterActor
    from stixproto.task import Task


# -- launch / exec -------------------------------------------------------------------


async def launch(cluster: ClusterActor, req: m.Launch, env: Envelope) -> m.LaunchResult | None:
    validate_mounts(req.task)
    app = cluster.app
    provider, pool = app.target(req.task)
    if cluster.state is C.UP:
        here = (cluster.spec.provider, cluster.spec.pool)
        if here != (provider, pool) and not may_run_on(cluster, req.task):
            raise InvalidRequest(
                f"cluster {cluster.id!r} runs on {infra_label(*here)} but the task asks for "
                f"{infra_label(provider, pool)}; launch it on a new cluster name"
            )
        have = cluster.spec.num_nodes
        if req.task.num_nodes > have:
            raise InvalidRequest(
                f"cluster {cluster.id!r} has {have} node(s) but the task asks for "
                f"{req.task.num_nodes}; launch it on a new cluster name"
            )
        return await launch_on_up(cluster, req, env)
    if cluster.state in (C.AUTOSTOPPING,):
        raise ClusterNotUp(f"cluster {cluster.id!r} is stopping; retry when it is STOPPED")
    if is_retrying(cluster):
        raise ClusterNotUp(
            f"cluster {cluster.id!r} is still launching (waiting for capacity, "
            f"--retry-until-up); `{names.command('down', cluster.id)}` stops it"
        )
    job_id = await begin_launch(cluster, req, provider, pool)
    body = functools.partial(finish_launch, cluster, req, job_id, env)
    start_phase(cluster, "launch", body, env)  # answers when done; `down` may interrupt it
    return None


def wants_job(task: Task, with_setup: bool) -> bool:
    """A launch with nothing to run (`launch -c dev --gpus A100`) submits no job, as SkyPilot's
    does: the cluster is there to `ssh` into."""
    return task.run is not None or (with_setup and task.setup is not None)


async def launch_on_up(cluster: ClusterActor, req: m.Launch, env: Envelope) -> m.LaunchResult:
    """A launch on a cluster already UP: sync, then submit. `--fast` skips setup when the
    launch spec is the one the cluster was set up for, and the sync when the files are
    unchanged too."""
    spec = spec_digest(req.task)
    files = await anyio.to_thread.run_sync(files_digest, req.task)
    same_spec = req.fast and cluster.data.launch_spec == spec
    same_files = same_spec and files is not None and cluster.data.launch_files == files
    if same_spec:
        skipped = "setup and file sync" if same_files else "setup"
        note = f"Cluster {cluster.id} is UP and unchanged (--fast): {skipped} skipped."
        env.progress(m.Progress(note))
    else:
        env.progress(m.Progress(f"Cluster {cluster.id} is UP; syncing files and running the task."))
    if not same_files:
        await prepare_storage(cluster, req.task, cluster.nodes, env)
        await sync_task_files(cluster.provider, cluster.nodes, req.task, env, file_mounts=True)
    await mount_task_volumes(
        cluster.app, cluster.id, cluster.provider, cluster.nodes, req.task, env
    )
    await apply_autostop_request(cluster, req.idle_minutes, req.down)
    with_setup = not req.no_setup and not same_spec
    await note_launch_spec(cluster, req, spec, files, with_setup)
    if not wants_job(req.task, with_setup):
        return m.LaunchResult(cluster=cluster.id)
    job_id = await allocate_job_id(cluster)
    await create_job(cluster, job_id, req.task, with_setup=with_setup, task_id=req.task_id)
    env.progress(m.JobSubmitted(cluster.id, job_id))
    return m.LaunchResult(cluster=cluster.id, job_id=job_id, job_status="INIT")


async def note_launch_spec(
    cluster: ClusterActor, req: m.Launch, spec: str, files: str | None, with_setup: bool
) -> None:
    """What a later `--fast` compares with: the spec once its setup ran (or there is none);
    the files once they were synced."""
    await cluster.save(**launch_spec_data(req, spec, files, with_setup))


def launch_spec_data(
    req: m.Launch, spec: str, files: str | None, with_setup: bool
) -> dict[str, Any]:
    """The row data `note_launch_spec` writes."""
    data: dict[str, Any] = {"launch_files": files}
    if with_setup or req.task.setup is None:
        data["launch_spec"] = spec
    return data


async def first_choice(cluster: ClusterActor, req: m.Launch, provider: str) -> dict[str, Any]:
    await cluster.app.refresh_catalogs(only=[provider])
    catalog = cluster.app.planner_index()
    blocks = cluster.app.remembered_blocks()
    plan = functools.partial(
        cloud_spec,
        avoid_regions=req.avoid_regions,
        prefer_region=req.prefer_region,
    )
    spec: dict[str, Any] = await anyio.to_thread.run_sync(plan, req.task, provider, catalog, blocks)
    return spec


def target_spec(
    cluster: ClusterActor, task: Task, provider: str, pool: str | None
) -> dict[str, Any]:
    """The spec fields of a launch on (provider, pool) before a cloud's choice is added."""
    return {
        "provider": provider,
        "pool": pool,
        "resources": f"{task.num_nodes}x {infra_label(provider, pool)}",
        "hourly_price": local_offer(cluster.app.default_infra).price,  # per node: local, SSH: $0
        "placement": None,
    }


async def begin_launch(
    cluster: ClusterActor, req: m.Launch, provider: str, pool: str | None
) -> int | None:
    """Write the intent (state INIT + the request) before touching any infra."""
    data: dict[str, Any] = {"machines": None}  # the plan is the new baseline
    made_for: dict[str, Any] = {}
    if cluster.state is C.TERMINATED:  # a new launch of the name: whoever asked now owns it
        made_for = {"owner": req.owner, "workspace": req.workspace}
        data = {
            **data,
            "uid": secrets.token_hex(4),
            "next_job_id": 1,
            "launched_at": time.time(),
            "active_seconds": 0.0,
            "cost_accrued": 0.0,
            "priced_seconds": 0.0,
            "nodes": [],
            "autostop": None,
            "idle_since": None,
            "last_error": None,
        }
    spec = {
        **encode(cluster.spec),
        **target_spec(cluster, req.task, provider, pool),
        "num_nodes": req.task.num_nodes,
        "avoid_regions": list(req.avoid_regions),
        "ports": task_ports(req.task),  # a cloud's placement names the ones it opened
        **made_for,
    }
    # usable, as choose_target said: the optimizer's first choice
    if provider in cluster.app.infras.clouds():
        spec.update(await first_choice(cluster, req, provider))
    if req.plan_choice is not None and req.plan_choice != spec["resources"]:
        raise ProvisionError(
            f"the plan changed since it was shown: the launch would now provision "
            f"{spec['resources']}, not {req.plan_choice}; run the command again to see it"
        )
    job_id: int | None = None
    if wants_job(req.task, not req.no_setup):
        job_id = int(data.get("next_job_id", cluster.data.next_job_id))
        data["next_job_id"] = job_id + 1
    data["retry_round"] = None
    data["config_layers"] = [[layer.source, layer.values] for layer in req.config]
    data["pending_launch"] = PendingLaunch(request=msgspec.to_builtins(req), job_id=job_id)
    where = infra_label(provider, pool)
    await cluster.transition(
        E.LAUNCH,
        f"launch {req.task.num_nodes} node(s) on {where}",
        new_spec=decode(spec, ClusterSpec),  # in the intent's write: one write, not two
        **data,
    )
    cluster.app.metrics.launched(provider)
    return job_id


async def resume_launch(cluster: ClusterActor) -> None:
    pending = cluster.data.pending_launch
    if cluster.state is not C.INIT or not pending:
        return
    try:
        req = msgspec.convert(pending.request, m.Launch)
    except InvalidRequest as exc:  # a name an earlier version took; `down` still removes it
        cluster.log.warning("resume_refused", error=exc.message)
        await cluster.save(pending_launch=None, last_error=exc.message)
        return
    cluster.log.info("resume_launch", job_id=pending.job_id)
    try:
        await finish_launch(cluster, req, pending.job_id, Envelope(payload=req))
    except ProvisionError as exc:
        cluster.log.warning("resume_failed", error=exc.message)


async def retry_launch(cluster: ClusterActor) -> None:
    """The next round of a `--retry-until-up` launch: the whole failover list again, planned
    afresh; its client (if still there) hears how it went."""
    waiter, cluster.launch_waiter = cluster.launch_waiter, None
    if not is_retrying(cluster):
        return  # ended meanwhile (down, stop, the client left)
    pending = cluster.data.pending_launch
    assert pending is not None  # is_retrying
    req = msgspec.convert(pending.request, m.Launch)
    if waiter is not None and client_gone(waiter):
        await give_up(cluster, waiter, req, "the client went away")
        return
    env = waiter or Envelope(payload=req)
    try:
        provider, pool = cluster.app.target(req.task)  # a round failed over starts over
        home = target_spec(cluster, req.task, provider, pool)
        if provider in cluster.app.infras.clouds():
            try:
                home.update(await first_choice(cluster, req, provider))
            except ProvisionError as exc:  # what failed is still remembered as blocked
                await wait_and_retry(cluster, env, exc)
                return
        if provider in cluster.app.infras.clouds() or provider != cluster.spec.provider:
            await cluster.save(spec=decode({**encode(cluster.spec), **home}, ClusterSpec))
        result = await finish_launch(cluster, req, pending.job_id, env)
    except StixError as exc:
        env.answer(error_reply(exc))
        cluster.log.warning("retry_failed", error=exc.message)
        return
    except Exception as exc:
        env.answer(error_reply(exc))
        raise
    if result is not None:
        env.answer(result)


async def finish_launch(
    cluster: ClusterActor, req: m.Launch, job_id: int | None, env: Envelope
) -> m.LaunchResult | None:
    """The launch once its intent is written; None while a `--retry-until-up` launch waits
    for its next round (the client is answered then)."""
    try:
        return await _finish_launch(cluster, req, job_id, env)
    finally:
        # the stored request (kept to resume the launch after a crash) holds the secrets until
        # the job row has them; once it is cleared, leave no copy of it in the store's files
        if secret_names(req.task) and not cluster.data.pending_launch:
            with anyio.CancelScope(shield=True):
                await cluster.store.forget_overwritten()


async def _finish_launch(
    cluster: ClusterActor, req: m.Launch, job_id: int | None, env: Envelope
) -> m.LaunchResult | None:
    try:
        nodes = await provision(
            cluster, req.task.num_nodes, env, req.task, keep_pending=req.retry_until_up
        )
    except ProvisionError as exc:
        if not req.retry_until_up:
            raise
        await wait_and_retry(cluster, env, exc)
        return None
    # the files' signature before the sync: a file edited while it runs is synced next time
    files = await anyio.to_thread.run_sync(files_digest, req.task)
    made = await prepare_storage(cluster, req.task, nodes, env)  # its own failure cleans up
    try:
        await sync_task_files(cluster.provider, nodes, req.task, env, file_mounts=True)
        await mount_task_volumes(cluster.app, cluster.id, cluster.provider, nodes, req.task, env)
        await remount(cluster, nodes, env, skip=req.task.storage_mounts())  # a stopped one's
    except BaseException:
        spec = cluster.spec
        await release_storage(cluster.app, req.task, made, cluster.id, spec.owner, spec.workspace)
        raise
    await apply_autostop_request(cluster, req.idle_minutes, req.down, nodes)
    if job_id is not None:
        await create_job(
            cluster, job_id, req.task, with_setup=not req.no_setup, task_id=req.task_id
        )
    noted = launch_spec_data(req, spec_digest(req.task), files, not req.no_setup)
    await cluster.transition(
        E.PROVISIONED,
        f"{len(nodes)} node(s) up",
        pending_launch=None,
        retry_round=None,
        up_since=time.time(),
        last_error=None,
        **noted,  # `note_launch_spec`, in the same write
    )
    schedule_autostop(cluster)
    schedule_health(cluster)
    if job_id is None:
        return m.LaunchResult(cluster=cluster.id)
    env.progress(m.JobSubmitted(cluster.id, job_id))
    return m.LaunchResult(cluster=cluster.id, job_id=job_id, job_status="INIT")


async def provision(
    cluster: ClusterActor,
    num_nodes: int,
    env: Envelope,
    task: Task | None = None,
    *,
    keep_pending: bool = False,
) -> list[NodeInfo]:
    """Bring the nodes up; on failure the cluster stays INIT with the error, its stored launch
    dropped unless `keep_pending` (a launch that will be retried)."""
    where = infra_label(cluster.spec.provider, cluster.spec.pool)
    env.progress(m.Progress(f"Provisioning {num_nodes} node(s) on {where} for {cluster.id}..."))
    volumes = await launch_resources(cluster.app, cluster.id, cluster.provider, task)
    remounts = bool(cluster.data.bucket_mounts)  # a stopped cluster's, mounted again
    request = ProvisionRequest(
        cluster.id,
        num_nodes,
        cluster.app.agent_pyz,
        resources={
            "pool": cluster.spec.pool,
            **(cluster.spec.placement or {}),
            "launch_id": cluster.data.uid,
            **volumes,
            **({"fuse": True} if mounts_a_bucket(task) or remounts else {}),  # rclone + FUSE
        },
        progress=lambda note: env.progress(m.Progress(note)),
    )
    try:
        nodes = await launch_with_failover(cluster, request, task, env)
        await open_task_ports(cluster, env)
    except ProvisionError as exc:
        if not cluster.data.nodes:
            await release_failed_launch(cluster, exc)
        cleared = {} if keep_pending else {"pending_launch": None}
        await cluster.transition(E.PROVISION_FAILED, exc.message, last_error=exc.message, **cleared)
        raise
    if len([n for n in nodes if n.status is NodeStatus.RUNNING]) < num_nodes:
        why = f"only {len(nodes)} of {num_nodes} nodes came up"
        cleared = {} if keep_pending else {"pending_launch": None}
        await cluster.transition(E.PROVISION_FAILED, why, last_error=why, **cleared)
        raise ProvisionError(why)
    await ensure_agents_current(cluster, nodes)
    await cluster.save(nodes=[n.to_dict() for n in nodes])
    env.progress(m.Progress(f"{num_nodes} node(s) up; agents ready."))
    return nodes


async def release_failed_launch(cluster: ClusterActor, exc: ProvisionError) -> None:
    """A first launch that failed gives back what it took (pool hosts, half-made nodes):
    otherwise a cluster that never came up holds them until someone runs `down`."""
    try:
        await cluster.provider.terminate(cluster.id)
    except (ProvisionError, OSError) as cleanup:
        cluster.log.warning("failed_launch_cleanup", error=str(cleanup), cause=exc.message)


async def exec_task(cluster: ClusterActor, req: m.Exec, env: Envelope) -> m.LaunchResult:
    if cluster.state is C.TERMINATED:
        raise ClusterNotFound(
            f"cluster {cluster.id!r} does not exist; create it with `stixctl launch`"
        )
    if cluster.state is not C.UP:
        raise ClusterNotUp(
            f"cluster {cluster.id!r} is {cluster.state.value}; "
            f"start it with `{names.command('start', cluster.id)}`"
        )
    if cluster.spec.provider == cluster.app.default_infra:
        check_fits_local(req.task, cluster.app.infras)
    have = cluster.spec.num_nodes
    if req.task.num_nodes > have:
        raise InvalidRequest(
            f"cluster {cluster.id!r} has {have} node(s) but the task asks for {req.task.num_nodes}"
        )
    if req.task.workdir:
        await sync_task_files(cluster.provider, cluster.nodes, req.task, env, file_mounts=False)
    job_id = await allocate_job_id(cluster)
    await create_job(
        cluster, job_id, req.task, with_setup=False, task_id=req.task_id, cluster_mounts=True
    )
    env.progress(m.JobSubmitted(cluster.id, job_id))
    return m.LaunchResult(cluster=cluster.id, job_id=job_id, job_status="INIT")


async def allocate_job_id(cluster: ClusterActor) -> int:
    job_id = cluster.data.next_job_id
    await cluster.save(next_job_id=job_id + 1)
    return job_id
