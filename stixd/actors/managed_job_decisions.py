"""What a managed job decides when a phase tells it something: the run is up or running,
the launch failed, the run ended (next task, restart, recover, or an end state), the
cluster is torn down."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from stixd.actors.managed_job_events import ACTIVE, E, Ended, LaunchFailed, MEvent, TornDown, Up
from stixd.actors.managed_job_phases import (
    LAUNCH_ATTEMPTS,
    teardown,
    teardown_then_bring_up,
    watch,
)
from stixd.actors.recovery import run_place
from stixd.actors.specs import ClusterSpec, spec_or_none
from stixproto.states import JobStatus
from stixproto.states import ManagedJobStatus as S

if TYPE_CHECKING:
    from stixd.actors.managed_job import ManagedJobActor


# -- decisions -----------------------------------------------------------------------


async def on_up(managed: ManagedJobActor, msg: Up) -> None:
    if managed.state not in (S.STARTING, S.RECOVERING):
        return
    run = managed.data.run + 1
    row = await managed.app.store.get("cluster", managed.cluster)
    spec = spec_or_none(row, ClusterSpec) if row is not None else None
    infra, region = run_place(spec or ClusterSpec())
    await managed.save(
        cluster_uid=msg.uid,
        cluster_job_id=msg.job_id,
        run=run,
        region=region,
        run_infras=[*managed.data.run_infras, infra][-20:],
    )
    where = f"{managed.cluster} ({infra})"
    managed.note(f"  task {managed.task_index} submitted to {where} as its job {msg.job_id}")
    managed.run_phase(watch, managed)


async def on_running(managed: ManagedJobActor) -> None:
    if managed.state not in (S.STARTING, S.RECOVERING):
        return
    extra: dict[str, Any] = {"run_started_at": time.time()}
    if not managed.data.started_at:
        extra["started_at"] = time.time()
    why = f"task {managed.task_index} runs on {managed.cluster}"
    await managed.step(E.UP, why, **extra)


async def on_launch_failed(managed: ManagedJobActor, msg: LaunchFailed) -> None:
    if msg.precheck:
        await managed.step(
            E.FAILED_PRECHECKS, msg.why, failure_reason=msg.why, ended_at=time.time()
        )
        managed.run_phase(teardown, managed, None, managed.cluster, managed._run_id())
        return
    reason = f"no resources after {LAUNCH_ATTEMPTS} launch attempts: {msg.why}"
    await managed.step(E.NO_RESOURCE, reason, failure_reason=reason, ended_at=time.time())
    managed.run_phase(teardown, managed, None, managed.cluster, managed._run_id())


async def on_ended(managed: ManagedJobActor, msg: Ended) -> None:
    if managed.state not in ACTIVE:
        return
    ran = managed._ran_seconds()
    state = msg.state
    if state is JobStatus.SUCCEEDED:
        if managed.task_index + 1 < len(managed.spec.tasks):
            why = f"task {managed.task_index} succeeded; the next runs on a new cluster"
            next_task = managed.task_index + 1
            await run_again(managed, E.NEXT_TASK, why, ran, task=next_task, lost_region=None)
            return
        await managed.step(E.SUCCEEDED, "the task succeeded", job_duration=ran)
        managed.run_phase(teardown, managed, None, managed.cluster, managed._run_id())
        return
    if state is JobStatus.FAILED_DRIVER:
        await recover(managed, msg.why, ran)
        return
    rec = managed._recovery()
    recover_on = rec.recover_on_exit_codes if rec else ()
    if state is JobStatus.FAILED and msg.exit_code in recover_on:
        await recover(managed, f"the task exited {msg.exit_code} (recover_on_exit_codes)", ran)
        return
    if state is JobStatus.FAILED:
        restarts = managed.data.restarts
        limit = managed._max_restarts()
        if restarts < limit:
            why = f"the task failed ({msg.why}); restart {restarts + 1} of {limit}"
            await run_again(managed, E.RESTART, why, ran, restarts=restarts + 1, lost_region=None)
            return
        reason = f"the task failed: {msg.why}"
        await managed.step(E.FAILED, reason, failure_reason=reason, job_duration=ran)
        managed.run_phase(teardown, managed, None, managed.cluster, managed._run_id())
        return
    if state is JobStatus.FAILED_SETUP:
        reason = f"setup failed: {msg.why}"
        await managed.step(E.FAILED_SETUP, reason, failure_reason=reason, job_duration=ran)
        managed.run_phase(teardown, managed, None, managed.cluster, managed._run_id())
        return
    # the run was cancelled under us (its cluster torn down or the job cancelled directly)
    await recover(managed, f"the run ended {state.value}: {msg.why}", ran)


async def recover(managed: ManagedJobActor, why: str, ran: float) -> None:
    infras = managed.data.run_infras
    if infras:
        why = f"{why} (on {infras[-1]})"
    reasons = [*managed.data.recovery_reasons, why]
    managed.app.metrics.recovered()
    await run_again(
        managed,
        E.LOST,
        f"cluster lost ({why}); recovering by {managed._strategy()}",
        ran,
        broken=True,
        lost_region=managed.data.region,
        recoveries=managed.data.recoveries + 1,
        recovery_reasons=reasons[-20:],
    )


async def run_again(
    managed: ManagedJobActor,
    event: MEvent,
    why: str,
    ran: float,
    *,
    broken: bool = False,
    **data: Any,
) -> None:
    """Record a fresh attempt (the next task of a pipeline, a restart, a recovery), then give
    up the cluster the last run used and bring the task up again."""
    held, run = managed.cluster, managed._run_id()
    await managed.step(
        event,
        why,
        job_duration=ran,
        attempt_at=time.time(),
        cluster_job_id=None,
        worker=None,
        **data,
    )
    managed.run_phase(teardown_then_bring_up, managed, held, run, broken)


async def on_torn_down(managed: ManagedJobActor, msg: TornDown) -> None:
    if managed.machine.allows(managed.state, msg.then):
        extra = {"ended_at": time.time(), "job_duration": managed._ran_seconds()}
        await managed.step(msg.then, "cluster torn down", **extra)
