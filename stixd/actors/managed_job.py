"""A managed job: the daemon launches its cluster, runs the task, recovers it when the cluster
is lost, and tears the cluster down at the end — SkyPilot's jobs controller, without a VM.

The actor drives one phase at a time in a helper task (bring a cluster up and submit; watch the
run; tear down), and every phase ends by telling the actor what happened, so the mailbox stays
free for `cancel` in any state. Each decision is written before it is acted on: after a
`kill -9` the actor resumes the phase of its stored state, adopting the job a launch already
made instead of starting a second one.

This module holds the actor, its stored job and its dispatch; the phases are in
`managed_job_phases`, the decisions on what a phase reports in `managed_job_decisions`, the
events, transition table and phase messages in `managed_job_events`.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from stixd.actors.job_pool import Acquire, PoolGoingDown, WorkerReady
from stixd.actors.managed_job_decisions import (
    on_ended,
    on_launch_failed,
    on_running,
    on_torn_down,
    on_up,
)
from stixd.actors.managed_job_events import (
    ACTIVE,
    MANAGED_TRANSITIONS,
    Advance,
    E,
    Ended,
    LaunchFailed,
    Running,
    TornDown,
    Up,
)
from stixd.actors.managed_job_events import MEvent as MEvent  # where callers find it
from stixd.actors.managed_job_phases import bring_up, down_cluster, teardown, watch
from stixd.actors.recovery import EAGER_NEXT_REGION
from stixd.actors.specs import ManagedJobData, ManagedJobSpec
from stixd.actors.storage_use import prune_storages
from stixd.actors.volume import prune_ephemeral
from stixd.runtime.actor import Actor
from stixd.runtime.machine import Machine
from stixd.runtime.mailbox import Envelope
from stixproto import messages as m
from stixproto.errors import InvalidRequest
from stixproto.paths import child_path
from stixproto.states import ManagedJobStatus as S
from stixproto.task import Task, redacted_task
from stixproto.task.parsing import JobRecovery
from stixproto.task.resources import recovery

if TYPE_CHECKING:
    from stixd.app import App

LOGS_DIR = "managed_jobs"


def cluster_name(name: str, job_id: int) -> str:
    """SkyPilot's ``<name>-<id>``, cut to a valid cluster name."""
    base = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:40] or "job"
    if not base[0].isalpha():
        base = f"job-{base}"
    return f"{base}-{job_id}"


def managed_task_id(spec: ManagedJobSpec, job_id: int, index: int, task: Task) -> str:
    """SkyPilot's ``sky-managed-<time>_<job-name>[_<task-name>]_<job-id>-<task-idx>``: the same
    for every run of the task, so its code can find its own checkpoints after a recovery."""
    stamp = time.strftime("%Y-%m-%d-%H-%M-%S", time.localtime(spec.submitted_at or 0.0))
    task_name = f"_{task.name}" if len(spec.tasks) > 1 and task.name else ""
    return f"sky-managed-{stamp}_{spec.name}{task_name}_{job_id}-{index}"


def without_secrets(spec: ManagedJobSpec) -> ManagedJobSpec | None:
    """The spec with every task's secret values replaced; None when it holds none. Read as
    plain data: a row whose tasks no longer decode is scrubbed too."""
    tasks = spec.tasks
    scrubbed = [redacted_task(t) for t in tasks]
    return None if scrubbed == tasks else msgspec.structs.replace(spec, tasks=scrubbed)


def logs_dir(home: Path, job_id: int) -> Path:
    return child_path(home / LOGS_DIR, str(job_id))


class ManagedJobActor(Actor):
    kind = "managed_job"
    machine = Machine("managed_job", MANAGED_TRANSITIONS)
    state_type = S
    spec_type = ManagedJobSpec
    data_type = ManagedJobData
    spec: ManagedJobSpec
    data: ManagedJobData

    def __init__(self, row: Any, app: App) -> None:
        super().__init__(row, app.store, app.log)
        self.app = app
        own = self.spec.cluster or cluster_name(self.spec.name, int(row.id))
        self._own_cluster = str(own)
        self._log_dir_made = False

    @staticmethod
    def is_terminal(state: Any) -> bool:
        return S(state).is_terminal

    # -- the stored job ------------------------------------------------------------------

    @property
    def job_id(self) -> int:
        return int(self.row.id)

    @property
    def tasks(self) -> list[Task]:
        return [msgspec.convert(t, Task) for t in self.spec.tasks]

    @property
    def task_index(self) -> int:
        return self.data.task

    @property
    def pool(self) -> str | None:
        return self.spec.pool or None

    @property
    def cluster(self) -> str:
        """The cluster the task runs on: the job's own, or the pool worker it holds."""
        if self.pool:
            return self.data.worker or ""
        return self._own_cluster

    def _task_id(self) -> str:
        index = self.task_index
        return managed_task_id(self.spec, self.job_id, index, self.tasks[index])

    def _task(self) -> Task:
        """The current task, with the ids SkyPilot gives a managed task's run."""
        spec = self.spec
        tasks = self.tasks
        ids = [managed_task_id(spec, self.job_id, i, t) for i, t in enumerate(tasks)]
        task = tasks[self.task_index]
        envs = dict(task.envs or {})
        if len(tasks) > 1:
            envs["SKYPILOT_TASK_IDS"] = "\n".join(ids)
        if self.pool:
            envs["SKYPILOT_JOB_RANK"] = str(spec.job_rank)
            envs["SKYPILOT_NUM_JOBS"] = str(spec.num_jobs)
        return msgspec.structs.replace(task, envs=envs)

    def _dir(self) -> Path:
        return logs_dir(self.app.home, self.job_id)

    def note(self, text: str) -> None:
        """A line of the controller log (`jobs logs --controller`)."""
        d = self._dir()
        if not self._log_dir_made:
            d.mkdir(parents=True, exist_ok=True)
            self._log_dir_made = True
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with (d / "controller.log").open("a") as f:
            f.write(f"{stamp} {text}\n")

    async def step(self, event: MEvent, why: str, **data: Any) -> None:
        spec = None
        if self.machine.next(self.state, event).is_terminal:
            data.setdefault("ended_at", time.time())
            spec = without_secrets(self.spec)  # kept for recoveries, and there are no more
        await self.transition(event, why, new_spec=spec, **data)
        if spec is not None:
            await self.store.forget_overwritten()
            await prune_storages(self.app)  # its non-persistent buckets end with it
            await prune_ephemeral(self.app)  # and its clusters' ephemeral volumes
        self.note(f"{self.state.value}: {why}")

    # -- lifecycle -----------------------------------------------------------------------

    async def reconcile(self) -> None:
        self.tell(Advance())

    async def given_up(self, reason: str) -> None:
        """The controller itself keeps failing on this job: end it, and its cluster."""
        self.row = await self.store.get(self.kind, self.id) or self.row
        if self.row.terminal or not self.machine.allows(self.state, E.CONTROLLER_FAILED):
            return
        await self.step(E.CONTROLLER_FAILED, reason, failure_reason=reason, ended_at=time.time())
        await down_cluster(self)

    async def handle(self, message: Any) -> None:
        if isinstance(message, Envelope):
            message.answer(await self._request(message.payload))
        elif self.row.terminal:
            return
        elif isinstance(message, Advance):
            await self._advance()
        elif isinstance(message, Up):
            await on_up(self, message)
        elif isinstance(message, Running):
            await on_running(self)
        elif isinstance(message, LaunchFailed):
            await on_launch_failed(self, message)
        elif isinstance(message, Ended):
            await on_ended(self, message)
        elif isinstance(message, TornDown):
            await on_torn_down(self, message)
        elif isinstance(message, WorkerReady):
            await self._worker_ready(message)
        elif isinstance(message, PoolGoingDown) and message.pool == self.pool:
            await self._cancel(f"pool {message.pool} is shutting down")

    async def _request(self, req: Any) -> Any:
        if isinstance(req, m.JobsCancel):
            if self.row.terminal:
                return m.OkReply(f"managed job {self.job_id} already ended {self.state.value}")
            await self._cancel("cancel requested")
            return m.OkReply(f"managed job {self.job_id} is cancelling")
        raise InvalidRequest(f"managed job actor cannot handle {type(req).__name__}")

    async def _cancel(self, why: str) -> None:
        """Stop whatever phase runs, then stop the run and give its cluster up: CANCELLED."""
        if self.state is S.CANCELLING:
            return
        self.stop_phase()
        held, run = self.cluster, self._run_id()
        await self.step(E.CANCEL, why, job_duration=self._ran_seconds())
        self.run_phase(teardown, self, E.CANCELLED, held, run)

    async def _advance(self) -> None:
        state = self.state
        if self.pool and state in (S.PENDING, S.RECOVERING) and not self.cluster:
            await self._ask_pool(Acquire(self.job_id))  # WorkerReady comes now or later
        elif state is S.PENDING:
            await self.step(
                E.START,
                f"launching cluster {self.cluster}",
                attempt_at=time.time(),
                cluster_job_id=None,
            )
            self.run_phase(bring_up, self)
        elif state in (S.STARTING, S.RECOVERING) and not self.data.cluster_job_id:
            self.run_phase(bring_up, self)
        elif state in ACTIVE:
            self.run_phase(watch, self)
        elif state is S.CANCELLING:
            self.run_phase(teardown, self, E.CANCELLED, self.cluster, self._run_id())

    async def _ask_pool(self, message: Any) -> None:
        pool = self.pool
        assert pool is not None
        if self.app.supervisor.tell("job_pool", pool, message):
            return
        row = await self.app.store.get("job_pool", pool)
        if row is None:
            if isinstance(message, Acquire):
                why = f"pool {pool} does not exist"
                await self.step(E.FAILED_PRECHECKS, why, failure_reason=why, ended_at=time.time())
            return
        self.app.spawn(row)
        self.app.supervisor.tell("job_pool", pool, message)

    async def _worker_ready(self, msg: WorkerReady) -> None:
        if msg.pool != self.pool or self.state not in (S.PENDING, S.RECOVERING):
            return
        if self.cluster and self.cluster != msg.worker:
            return
        if self.state is S.PENDING:
            await self.step(
                E.START,
                f"runs on worker {msg.worker} of pool {msg.pool}",
                worker=msg.worker,
                attempt_at=time.time(),
                cluster_job_id=None,
            )
        elif not self.cluster:
            await self.save(worker=msg.worker, attempt_at=time.time())
            self.note(f"  runs again on worker {msg.worker} of pool {msg.pool}")
        self.run_phase(bring_up, self)

    async def _emit(self, event: Any) -> None:
        if isinstance(event, m.Progress):
            self.note(f"  {event.message}")

    def _run_id(self) -> int | None:
        return self.data.cluster_job_id

    # -- helpers -------------------------------------------------------------------------

    def _ran_seconds(self) -> float:
        data = self.data
        total = data.job_duration
        started = data.run_started_at
        if self.state is S.RUNNING and started:
            total += time.time() - started
        return round(total, 3)

    def _recovery(self) -> JobRecovery | None:
        return recovery(self.tasks[self.task_index].resources_or_default())

    def _strategy(self) -> str:
        rec = self._recovery()
        return rec.strategy if rec else EAGER_NEXT_REGION

    def _max_restarts(self) -> int:
        rec = self._recovery()
        return rec.max_restarts_on_errors if rec else 0
