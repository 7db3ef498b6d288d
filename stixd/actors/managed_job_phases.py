"""The phases a managed job runs in its helper task: bring a cluster up and submit (adopting
the run a launch already made), watch the run and copy its log, give the cluster up.

Each phase ends by telling the actor what happened (`Up`, `Ended`, `LaunchFailed`, ...).
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

import anyio
import msgspec

from stixd.actors.asks import ask_cluster
from stixd.actors.job_pool import Release
from stixd.actors.joblogs import stream_job_logs
from stixd.actors.jobs_submit import job_row_id
from stixd.actors.managed_job_events import (
    Advance,
    Ended,
    LaunchFailed,
    MEvent,
    Running,
    TornDown,
    Up,
)
from stixd.actors.recovery import relaunch_hints
from stixd.actors.specs import ClusterData, JobData, JobSpec, data_or_none, spec_or_none, state_of
from stixd.storage.plan import without_local_sources
from stixd.store.db import Row
from stixproto import messages as m
from stixproto.errors import InvalidConfig, InvalidRequest, InvalidTask, ProvisionError, StixError
from stixproto.states import ClusterStatus, JobStatus
from stixproto.states import ManagedJobStatus as S

if TYPE_CHECKING:
    from stixd.actors.managed_job import ManagedJobActor

LAUNCH_ATTEMPTS = 3
"""Launches tried per start or recovery before the job is FAILED_NO_RESOURCE."""
RETRY_BASE_SECONDS = 1.0


async def bring_up(managed: ManagedJobActor) -> None:
    """Adopt the run a previous launch made (daemon restarted mid-launch), else launch."""
    adopted = await adopt(managed)
    if adopted is not None:
        managed.tell(adopted)
        return
    task = managed._task()
    if managed.state is S.RECOVERING:  # its buckets were uploaded by its first launch
        task = without_local_sources(task)
    spec = managed.spec
    task_id = managed._task_id()
    req: m.Launch | m.Exec
    if managed.pool:
        req = m.Exec(cluster=managed.cluster, task=task, detach=True, task_id=task_id)
    else:
        lost = managed.data.lost_region if managed.state is S.RECOVERING else None
        avoid, prefer = relaunch_hints(managed._strategy(), lost)
        if avoid:
            managed.note(f"  relaunching outside {', '.join(avoid)} unless nothing else is left")
        elif prefer:
            managed.note(f"  relaunching in {prefer} first")
        req = m.Launch(
            task=task,
            cluster=managed.cluster,
            detach=True,
            config=[msgspec.convert(c, m.ConfigLayer) for c in spec.config],
            task_id=task_id,
            avoid_regions=avoid,
            prefer_region=prefer,
            owner=spec.owner,  # its cluster is its submitter's, in its workspace
            workspace=spec.workspace,
        )
    failures = 0
    while True:
        try:
            result: m.LaunchResult = await ask_cluster(
                managed.app, managed.cluster, req, managed._emit, create=not managed.pool
            )
        except (InvalidTask, InvalidConfig, InvalidRequest) as exc:
            managed.tell(LaunchFailed(exc.message, precheck=True))
            return
        except StixError as exc:
            if not managed.pool and not isinstance(exc, ProvisionError):
                raise
            if managed.pool:  # the worker is not usable: the pool relaunches it
                why = f"worker {managed.cluster}: {exc.message}"
                managed.tell(Ended(JobStatus.FAILED_DRIVER, why))
                return
            failures += 1
            managed.note(f"  launch attempt {failures} failed: {exc.message}")
            if failures >= LAUNCH_ATTEMPTS:
                managed.tell(LaunchFailed(exc.message, precheck=False))
                return
            await let_go(managed, managed.cluster, None, broken=False)
            await anyio.sleep(RETRY_BASE_SECONDS * 2 ** (failures - 1))
            continue
        break
    row = await managed.app.store.get("cluster", managed.cluster)
    if result.job_id is None:  # a task stored before `jobs launch` refused those
        managed.tell(LaunchFailed("the task has nothing to run", precheck=True))
        return
    if row is None or row.terminal:
        managed.tell(LaunchFailed(f"cluster {managed.cluster} went away as it came up", False))
        return
    managed.tell(Up(uid=str(_cluster_data(row).uid), job_id=result.job_id))


def _cluster_data(row: Row) -> ClusterData:
    """What a cluster row says; a damaged row (quarantined by its own actor) says nothing."""
    return data_or_none(row, ClusterData) or ClusterData()


async def adopt(managed: ManagedJobActor) -> Up | None:
    row = await managed.app.store.get("cluster", managed.cluster)
    if row is None or row.terminal:
        return None
    if _cluster_data(row).pending_launch:  # the cluster actor finishes it after a restart
        row = await managed.app.watch.wait_for(
            "cluster",
            managed.cluster,
            lambda r: r is None or not _cluster_data(r).pending_launch,
        )
        if row is None or row.terminal:
            return None
    uid = _cluster_data(row).uid
    since = managed.data.attempt_at or 0.0
    ours = managed._task_id()
    runs = [  # a pool worker also runs other jobs: only this attempt's run of this task
        spec.job_id
        for j in await managed.app.store.rows("job", parent=uid)
        if j.created_at >= since
        and (spec := spec_or_none(j, JobSpec)) is not None
        and spec.submit.get("task_id") == ours
    ]
    if not runs:
        return None
    return Up(uid=str(uid), job_id=min(runs))


async def watch(managed: ManagedJobActor) -> None:
    """Follow the run to its end, copying its log into the job's own directory."""
    data = managed.data
    assert data.cluster_uid is not None and data.cluster_job_id is not None  # `Up` wrote them
    row_id = job_row_id(managed.cluster, data.cluster_uid, data.cluster_job_id)
    copying = await _log_copy(managed, row_id, data.run or 1)  # a row from before runs counted
    if copying is None:
        managed.tell(Ended(JobStatus.FAILED_DRIVER, "the run's record is gone"))
        return
    async with anyio.create_task_group() as tg:
        tg.start_soon(tell_when_running, managed, row_id)
        await copying
        done = await managed.app.watch.wait_for("job", row_id, lambda r: r is None or r.terminal)
        tg.cancel_scope.cancel()
    if done is None:
        managed.tell(Ended(JobStatus.FAILED_DRIVER, "the run's record is gone"))
        return
    events = await managed.app.store.events("job", row_id, 1)
    why = events[-1].why if events else done.state
    ended = data_or_none(done, JobData)
    code = ended.exit_code if ended is not None else None
    managed.tell(Ended(JobStatus(done.state), why, code))


async def _log_copy(
    managed: ManagedJobActor, row_id: str, run: int
) -> Coroutine[Any, Any, str] | None:
    """The copy of the run's log, to await; None if the run's row is gone. The row is read
    here and not kept: the copy holds only the few fields it needs for the run's whole life."""
    job = await managed.app.store.get("job", row_id)
    return None if job is None else copy_logs(managed, job, run)


def copy_logs(managed: ManagedJobActor, job: Any, run: int) -> Coroutine[Any, Any, str]:
    path = managed._dir() / f"run-{run}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    # after a daemon restart the run is followed again from its start: skip what is copied
    have = path.stat().st_size if path.exists() else 0
    seen = 0
    target = str(path)  # a str is kept for the run's life, not a Path and its parts

    async def copy(event: Any) -> None:
        nonlocal seen
        if not isinstance(event, m.LogChunk):
            return
        chunk = event.data.encode()
        fresh = chunk[max(have - seen, 0) :]
        seen += len(chunk)
        if fresh:
            # opened per chunk: a run that prints nothing for hours holds no descriptor and
            # no buffer (ten thousand running jobs would need ten thousand of each)
            _append(target, fresh)

    return stream_job_logs(managed.app, job, copy, follow=True)


def _append(path: str, data: bytes) -> None:
    with open(path, "ab", buffering=0) as out:
        out.write(data)


async def tell_when_running(managed: ManagedJobActor, row_id: str) -> None:
    row = await managed.app.watch.wait_for(
        "job",
        row_id,
        lambda r: r is None or r.terminal or state_of(r, JobStatus) is JobStatus.RUNNING,
    )
    if row is not None and state_of(row, JobStatus) is JobStatus.RUNNING:
        managed.tell(Running())


async def teardown(
    managed: ManagedJobActor, then: MEvent | None, held: str, run: int | None = None
) -> None:
    with anyio.CancelScope(shield=True):
        await let_go(managed, held, run, broken=False)
    if then is not None:
        managed.tell(TornDown(then))


async def let_go(managed: ManagedJobActor, held: str, run: int | None, *, broken: bool) -> None:
    """Give up the cluster a run used: tear down the job's own, or stop the run on a pool
    worker and hand the worker back (to be relaunched first if it was lost)."""
    if managed.pool:  # also a job still waiting for a worker: its place in the queue goes
        row = await managed.app.store.get("cluster", held) if held else None
        up = row is not None and state_of(row, ClusterStatus) is ClusterStatus.UP
        if run is not None and up and not broken:
            try:
                cancel = m.Cancel(cluster=held, job_ids=[run])
                await ask_cluster(managed.app, held, cancel, managed._emit)
            except StixError as exc:
                managed.note(f"  could not stop the run on {held}: {exc.message}")
        await managed._ask_pool(Release(managed.job_id, broken=broken))
        return
    row = await managed.app.store.get("cluster", held) if held else None
    if row is None or row.terminal:
        return
    try:
        await ask_cluster(managed.app, held, m.Down(clusters=[held]), managed._emit)
    except StixError as exc:
        managed.note(f"  could not tear down {held}: {exc.message}")


async def down_cluster(managed: ManagedJobActor) -> None:
    await let_go(managed, managed.cluster, managed._run_id(), broken=False)


async def teardown_then_bring_up(
    managed: ManagedJobActor, held: str, run: int | None, broken: bool
) -> None:
    with anyio.CancelScope(shield=True):
        await let_go(managed, held, run, broken=broken)
    if managed.pool:
        managed.tell(Advance())  # asks the pool for a worker again
    else:
        await bring_up(managed)
