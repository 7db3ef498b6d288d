"""A managed job: the daemon launches its cluster, runs the task, recovers it when the cluster
is lost, and tears the cluster down at the end — SkyPilot's jobs controller, without a VM.

The actor drives one phase at a time in a helper task (bring a cluster up and submit; watch the
run; tear down), and every phase ends by telling the actor what happened, so the mailbox stays
free for `cancel` in any state. Each decision is written before it is acted on: after a
`kill -9` the actor resumes the phase of its stored state, adopting the job a launch already
made instead of starting a second one.
"""

from __future__ import annotations

import enum
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import msgspec

from proto import messages as m
from proto.errors import InvalidConfig, InvalidRequest, InvalidTask, ProvisionError, StixError
from proto.states import JobStatus
from proto.states import ManagedJobStatus as S
from proto.task import Task
from proto.task.parsing import JobRecovery
from stixd.actors.asks import ask_cluster
from stixd.actors.job_pool import Acquire, Release, WorkerReady
from stixd.actors.joblogs import stream_job_logs
from stixd.actors.jobs_submit import job_row_id
from stixd.actors.recovery import relaunch_hints, run_place
from stixd.runtime.actor import Actor
from stixd.runtime.machine import Machine
from stixd.runtime.mailbox import Envelope

if TYPE_CHECKING:
    from stixd.app import App

LAUNCH_ATTEMPTS = 3
"""Launches tried per start or recovery before the job is FAILED_NO_RESOURCE."""
RETRY_BASE_SECONDS = 1.0
LOGS_DIR = "managed_jobs"


class MEvent(enum.Enum):
    START = "start"
    UP = "up"
    LOST = "lost"
    RESTART = "restart"
    NEXT_TASK = "next_task"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    FAILED_SETUP = "failed_setup"
    FAILED_PRECHECKS = "failed_prechecks"
    NO_RESOURCE = "no_resource"
    CANCEL = "cancel"
    CANCELLED = "cancelled"
    CONTROLLER_FAILED = "controller_failed"


E = MEvent
_LIVE = (S.PENDING, S.STARTING, S.RUNNING, S.RECOVERING)
_ENDS = {
    E.SUCCEEDED: S.SUCCEEDED,
    E.FAILED: S.FAILED,
    E.FAILED_SETUP: S.FAILED_SETUP,
}
_ACTIVE = (S.STARTING, S.RUNNING, S.RECOVERING)
"""States with a cluster in play: a run may end, or the cluster be lost, in any of them."""
MANAGED_TRANSITIONS: dict[tuple[S, MEvent], S] = {
    (S.PENDING, E.START): S.STARTING,
    (S.PENDING, E.FAILED_PRECHECKS): S.FAILED_PRECHECKS,
    (S.STARTING, E.FAILED_PRECHECKS): S.FAILED_PRECHECKS,
    (S.STARTING, E.UP): S.RUNNING,
    (S.RECOVERING, E.UP): S.RUNNING,
    (S.STARTING, E.NO_RESOURCE): S.FAILED_NO_RESOURCE,
    (S.RECOVERING, E.NO_RESOURCE): S.FAILED_NO_RESOURCE,
    **{(s, E.LOST): S.RECOVERING for s in _ACTIVE},
    **{(s, E.RESTART): S.RECOVERING for s in _ACTIVE},
    **{(s, E.NEXT_TASK): S.STARTING for s in _ACTIVE},
    **{(s, e): end for s in _ACTIVE for e, end in _ENDS.items()},
    **{(s, E.CANCEL): S.CANCELLING for s in _LIVE},
    (S.CANCELLING, E.CANCELLED): S.CANCELLED,
    **{(s, E.CONTROLLER_FAILED): S.FAILED_CONTROLLER for s in (*_LIVE, S.CANCELLING)},
}


class Advance:
    """Resume the work of the current state (at start, and after each decision)."""


@dataclass(frozen=True)
class Up:
    """A cluster took the task: its job ``job_id`` on cluster incarnation ``uid``."""

    uid: str
    job_id: int


class Running:
    """The run passed its setup and runs the task's `run` (SkyPilot's RUNNING)."""


@dataclass(frozen=True)
class LaunchFailed:
    why: str
    precheck: bool
    """The task itself cannot run anywhere (retrying cannot help)."""


@dataclass(frozen=True)
class Ended:
    """The run on the cluster reached a final state."""

    state: JobStatus
    why: str
    exit_code: int | None = None


@dataclass(frozen=True)
class TornDown:
    then: MEvent


def cluster_name(name: str, job_id: int) -> str:
    """SkyPilot's ``<name>-<id>``, cut to a valid cluster name."""
    base = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:40] or "job"
    if not base[0].isalpha():
        base = f"job-{base}"
    return f"{base}-{job_id}"


def managed_task_id(spec: dict[str, Any], job_id: int, index: int, task: Task) -> str:
    """SkyPilot's ``sky-managed-<time>_<job-name>[_<task-name>]_<job-id>-<task-idx>``: the same
    for every run of the task, so its code can find its own checkpoints after a recovery."""
    stamp = time.strftime("%Y-%m-%d-%H-%M-%S", time.localtime(float(spec["submitted_at"])))
    task_name = f"_{task.name}" if len(spec["tasks"]) > 1 and task.name else ""
    return f"sky-managed-{stamp}_{spec['name']}{task_name}_{job_id}-{index}"


def logs_dir(home: Path, job_id: int) -> Path:
    return home / LOGS_DIR / str(job_id)


class ManagedJobActor(Actor):
    kind = "managed_job"
    machine = Machine("managed_job", MANAGED_TRANSITIONS)
    state_type = S

    def __init__(self, row: Any, app: App) -> None:
        super().__init__(row, app.store, app.log)
        self.app = app
        self._phase: anyio.CancelScope | None = None
        own = row.spec.get("cluster") or cluster_name(row.spec["name"], int(row.id))
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
        return [msgspec.convert(t, Task) for t in self.row.spec["tasks"]]

    @property
    def task_index(self) -> int:
        return int(self.row.data.get("task", 0))

    @property
    def pool(self) -> str | None:
        pool = self.row.spec.get("pool")
        return str(pool) if pool else None

    @property
    def cluster(self) -> str:
        """The cluster the task runs on: the job's own, or the pool worker it holds."""
        if self.pool:
            return str(self.row.data.get("worker") or "")
        return self._own_cluster

    def _task_id(self) -> str:
        index = self.task_index
        return managed_task_id(self.row.spec, self.job_id, index, self.tasks[index])

    def _task(self) -> Task:
        """The current task, with the ids SkyPilot gives a managed task's run."""
        spec = self.row.spec
        tasks = self.tasks
        ids = [managed_task_id(spec, self.job_id, i, t) for i, t in enumerate(tasks)]
        task = tasks[self.task_index]
        envs = dict(task.envs or {})
        if len(tasks) > 1:
            envs["SKYPILOT_TASK_IDS"] = "\n".join(ids)
        if self.pool:
            envs["SKYPILOT_JOB_RANK"] = str(spec.get("job_rank", 0))
            envs["SKYPILOT_NUM_JOBS"] = str(spec.get("num_jobs", 1))
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
        if self.machine.next(self.state, event).is_terminal:
            data.setdefault("ended_at", time.time())
        await self.transition(event, why, **data)
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
        await self._down_cluster()

    async def handle(self, message: Any) -> None:
        if isinstance(message, Envelope):
            message.answer(await self._request(message.payload))
        elif self.row.terminal:
            return
        elif isinstance(message, Advance):
            await self._advance()
        elif isinstance(message, Up):
            await self._up(message)
        elif isinstance(message, Running):
            await self._running()
        elif isinstance(message, LaunchFailed):
            await self._launch_failed(message)
        elif isinstance(message, Ended):
            await self._ended(message)
        elif isinstance(message, TornDown):
            await self._torn_down(message)
        elif isinstance(message, WorkerReady):
            await self._worker_ready(message)

    async def _request(self, req: Any) -> Any:
        if isinstance(req, m.JobsCancel):
            if self.row.terminal:
                return m.OkReply(f"managed job {self.job_id} already ended {self.state.value}")
            if self.state is not S.CANCELLING:
                self._stop_phase()
                held, run = self.cluster, self._run_id()
                await self.step(E.CANCEL, "cancel requested", job_duration=self._ran_seconds())
                self._run(self._teardown, E.CANCELLED, held, run)
            return m.OkReply(f"managed job {self.job_id} is cancelling")
        raise InvalidRequest(f"managed job actor cannot handle {type(req).__name__}")

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
            self._run(self._bring_up)
        elif state in (S.STARTING, S.RECOVERING) and not self.row.data.get("cluster_job_id"):
            self._run(self._bring_up)
        elif state in _ACTIVE:
            self._run(self._watch)
        elif state is S.CANCELLING:
            self._run(self._teardown, E.CANCELLED, self.cluster, self._run_id())

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
        self._run(self._bring_up)

    # -- phases --------------------------------------------------------------------------

    def _run(self, phase: Any, *args: Any) -> None:
        """Start a phase in its own cancel scope (cancel stops it); at most one at a time."""
        self._stop_phase()
        scope = anyio.CancelScope()
        self._phase = scope

        async def go() -> None:
            with scope:
                await phase(*args)

        self.start_soon(go)

    def _stop_phase(self) -> None:
        if self._phase is not None:
            self._phase.cancel()
            self._phase = None

    async def _emit(self, event: Any) -> None:
        if isinstance(event, m.Progress):
            self.note(f"  {event.message}")

    async def _bring_up(self) -> None:
        """Adopt the run a previous launch made (daemon restarted mid-launch), else launch."""
        adopted = await self._adopt()
        if adopted is not None:
            self.tell(adopted)
            return
        task = self._task()
        spec = self.row.spec
        task_id = self._task_id()
        req: m.Launch | m.Exec
        if self.pool:
            req = m.Exec(cluster=self.cluster, task=task, detach=True, task_id=task_id)
        else:
            lost = self.row.data.get("lost_region") if self.state is S.RECOVERING else None
            avoid, prefer = relaunch_hints(self._strategy(), lost)
            if avoid:
                self.note(f"  relaunching outside {', '.join(avoid)} unless nothing else is left")
            elif prefer:
                self.note(f"  relaunching in {prefer} first")
            req = m.Launch(
                task=task,
                cluster=self.cluster,
                detach=True,
                config=[msgspec.convert(c, m.ConfigLayer) for c in spec.get("config", [])],
                task_id=task_id,
                avoid_regions=avoid,
                prefer_region=prefer,
            )
        failures = 0
        while True:
            try:
                result: m.LaunchResult = await ask_cluster(
                    self.app, self.cluster, req, self._emit, create=not self.pool
                )
            except (InvalidTask, InvalidConfig, InvalidRequest) as exc:
                self.tell(LaunchFailed(exc.message, precheck=True))
                return
            except StixError as exc:
                if not self.pool and not isinstance(exc, ProvisionError):
                    raise
                if self.pool:  # the worker is not usable: the pool relaunches it
                    why = f"worker {self.cluster}: {exc.message}"
                    self.tell(Ended(JobStatus.FAILED_DRIVER, why))
                    return
                failures += 1
                self.note(f"  launch attempt {failures} failed: {exc.message}")
                if failures >= LAUNCH_ATTEMPTS:
                    self.tell(LaunchFailed(exc.message, precheck=False))
                    return
                await self._let_go(self.cluster, None, broken=False)
                await anyio.sleep(RETRY_BASE_SECONDS * 2 ** (failures - 1))
                continue
            break
        row = await self.app.store.get("cluster", self.cluster)
        assert result.job_id is not None and row is not None
        self.tell(Up(uid=row.data["uid"], job_id=result.job_id))

    async def _adopt(self) -> Up | None:
        row = await self.app.store.get("cluster", self.cluster)
        if row is None or row.terminal:
            return None
        if row.data.get("pending_launch"):  # the cluster actor finishes it after a restart
            row = await self.app.watch.wait_for(
                "cluster", self.cluster, lambda r: r is None or not r.data.get("pending_launch")
            )
            if row is None or row.terminal:
                return None
        uid = row.data.get("uid")
        since = float(self.row.data.get("attempt_at") or 0.0)
        ours = self._task_id()
        jobs = [  # a pool worker also runs other jobs: only this attempt's run of this task
            j
            for j in await self.app.store.rows("job", parent=uid)
            if j.created_at >= since and (j.spec.get("submit") or {}).get("task_id") == ours
        ]
        if not jobs:
            return None
        first = min(jobs, key=lambda j: int(j.spec["job_id"]))
        return Up(uid=str(uid), job_id=int(first.spec["job_id"]))

    async def _watch(self) -> None:
        """Follow the run to its end, copying its log into the job's own directory."""
        data = self.row.data
        row_id = job_row_id(self.cluster, data["cluster_uid"], int(data["cluster_job_id"]))
        job = await self.app.store.get("job", row_id)
        if job is None:
            self.tell(Ended(JobStatus.FAILED_DRIVER, "the run's record is gone"))
            return
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._tell_when_running, row_id)
            await self._copy_logs(job, int(data.get("run", 1)))
            done = await self.app.watch.wait_for("job", row_id, lambda r: r is None or r.terminal)
            tg.cancel_scope.cancel()
        if done is None:
            self.tell(Ended(JobStatus.FAILED_DRIVER, "the run's record is gone"))
            return
        events = await self.app.store.events("job", row_id, 1)
        why = events[-1].why if events else done.state
        code = done.data.get("exit_code")
        self.tell(Ended(JobStatus(done.state), why, code if isinstance(code, int) else None))

    async def _copy_logs(self, job: Any, run: int) -> None:
        path = self._dir() / f"run-{run}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        # after a daemon restart the run is followed again from its start: skip what is copied
        have = path.stat().st_size if path.exists() else 0
        seen = 0
        with path.open("ab") as out:

            async def copy(event: Any) -> None:
                nonlocal seen
                if not isinstance(event, m.LogChunk):
                    return
                chunk = event.data.encode()
                fresh = chunk[max(have - seen, 0) :]
                seen += len(chunk)
                if fresh:
                    out.write(fresh)
                    out.flush()

            await stream_job_logs(self.app, job, copy, follow=True)

    async def _tell_when_running(self, row_id: str) -> None:
        row = await self.app.watch.wait_for(
            "job", row_id, lambda r: r is None or r.terminal or r.state == JobStatus.RUNNING
        )
        if row is not None and row.state == JobStatus.RUNNING:
            self.tell(Running())

    async def _teardown(self, then: MEvent | None, held: str, run: int | None = None) -> None:
        with anyio.CancelScope(shield=True):
            await self._let_go(held, run, broken=False)
        if then is not None:
            self.tell(TornDown(then))

    async def _let_go(self, held: str, run: int | None, *, broken: bool) -> None:
        """Give up the cluster a run used: tear down the job's own, or stop the run on a pool
        worker and hand the worker back (to be relaunched first if it was lost)."""
        if self.pool:  # also a job still waiting for a worker: its place in the queue goes
            row = await self.app.store.get("cluster", held) if held else None
            if run is not None and row is not None and row.state == "UP" and not broken:
                try:
                    cancel = m.Cancel(cluster=held, job_ids=[run])
                    await ask_cluster(self.app, held, cancel, self._emit)
                except StixError as exc:
                    self.note(f"  could not stop the run on {held}: {exc.message}")
            await self._ask_pool(Release(self.job_id, broken=broken))
            return
        row = await self.app.store.get("cluster", held) if held else None
        if row is None or row.terminal:
            return
        try:
            await ask_cluster(self.app, held, m.Down(clusters=[held]), self._emit)
        except StixError as exc:
            self.note(f"  could not tear down {held}: {exc.message}")

    async def _down_cluster(self) -> None:
        await self._let_go(self.cluster, self._run_id(), broken=False)

    def _run_id(self) -> int | None:
        run = self.row.data.get("cluster_job_id")
        return int(run) if run is not None else None

    # -- decisions -----------------------------------------------------------------------

    async def _up(self, msg: Up) -> None:
        if self.state not in (S.STARTING, S.RECOVERING):
            return
        run = int(self.row.data.get("run", 0)) + 1
        row = await self.app.store.get("cluster", self.cluster)
        infra, region = run_place(row.spec if row is not None else {})
        await self.save(
            cluster_uid=msg.uid,
            cluster_job_id=msg.job_id,
            run=run,
            region=region,
            run_infras=[*self.row.data.get("run_infras", []), infra][-20:],
        )
        where = f"{self.cluster} ({infra})"
        self.note(f"  task {self.task_index} submitted to {where} as its job {msg.job_id}")
        self._run(self._watch)

    async def _running(self) -> None:
        if self.state not in (S.STARTING, S.RECOVERING):
            return
        extra: dict[str, Any] = {"run_started_at": time.time()}
        if not self.row.data.get("started_at"):
            extra["started_at"] = time.time()
        why = f"task {self.task_index} runs on {self.cluster}"
        await self.step(E.UP, why, **extra)

    async def _launch_failed(self, msg: LaunchFailed) -> None:
        if msg.precheck:
            await self.step(
                E.FAILED_PRECHECKS, msg.why, failure_reason=msg.why, ended_at=time.time()
            )
            self._run(self._teardown, None, self.cluster, self._run_id())
            return
        reason = f"no resources after {LAUNCH_ATTEMPTS} launch attempts: {msg.why}"
        await self.step(E.NO_RESOURCE, reason, failure_reason=reason, ended_at=time.time())
        self._run(self._teardown, None, self.cluster, self._run_id())

    async def _ended(self, msg: Ended) -> None:
        if self.state not in _ACTIVE:
            return
        ran = self._ran_seconds()
        state = msg.state
        if state is JobStatus.SUCCEEDED:
            if self.task_index + 1 < len(self.row.spec["tasks"]):
                why = f"task {self.task_index} succeeded; the next runs on a new cluster"
                held, run = self.cluster, self._run_id()
                await self.step(
                    E.NEXT_TASK,
                    why,
                    task=self.task_index + 1,
                    lost_region=None,
                    job_duration=ran,
                    attempt_at=time.time(),
                    cluster_job_id=None,
                    worker=None,
                )
                self._run(self._teardown_then_bring_up, held, run, False)
                return
            await self.step(E.SUCCEEDED, "the task succeeded", job_duration=ran)
            self._run(self._teardown, None, self.cluster, self._run_id())
            return
        if state is JobStatus.FAILED_DRIVER:
            await self._recover(msg.why, ran)
            return
        rec = self._recovery()
        recover_on = rec.recover_on_exit_codes if rec else ()
        if state is JobStatus.FAILED and msg.exit_code in recover_on:
            await self._recover(f"the task exited {msg.exit_code} (recover_on_exit_codes)", ran)
            return
        if state is JobStatus.FAILED:
            restarts = int(self.row.data.get("restarts", 0))
            limit = self._max_restarts()
            if restarts < limit:
                why = f"the task failed ({msg.why}); restart {restarts + 1} of {limit}"
                held, run = self.cluster, self._run_id()
                await self.step(
                    E.RESTART,
                    why,
                    restarts=restarts + 1,
                    lost_region=None,
                    job_duration=ran,
                    attempt_at=time.time(),
                    cluster_job_id=None,
                    worker=None,
                )
                self._run(self._teardown_then_bring_up, held, run, False)
                return
            reason = f"the task failed: {msg.why}"
            await self.step(E.FAILED, reason, failure_reason=reason, job_duration=ran)
            self._run(self._teardown, None, self.cluster, self._run_id())
            return
        if state is JobStatus.FAILED_SETUP:
            reason = f"setup failed: {msg.why}"
            await self.step(E.FAILED_SETUP, reason, failure_reason=reason, job_duration=ran)
            self._run(self._teardown, None, self.cluster, self._run_id())
            return
        # the run was cancelled under us (its cluster torn down or the job cancelled directly)
        await self._recover(f"the run ended {state.value}: {msg.why}", ran)

    async def _recover(self, why: str, ran: float) -> None:
        infras = self.row.data.get("run_infras") or []
        if infras:
            why = f"{why} (on {infras[-1]})"
        reasons = [*self.row.data.get("recovery_reasons", []), why]
        held, run = self.cluster, self._run_id()
        await self.step(
            E.LOST,
            f"cluster lost ({why}); recovering by {self._strategy()}",
            lost_region=self.row.data.get("region"),
            recoveries=int(self.row.data.get("recoveries", 0)) + 1,
            recovery_reasons=reasons[-20:],
            job_duration=ran,
            attempt_at=time.time(),
            cluster_job_id=None,
            worker=None,
        )
        self._run(self._teardown_then_bring_up, held, run, True)

    async def _teardown_then_bring_up(self, held: str, run: int | None, broken: bool) -> None:
        with anyio.CancelScope(shield=True):
            await self._let_go(held, run, broken=broken)
        if self.pool:
            self.tell(Advance())  # asks the pool for a worker again
        else:
            await self._bring_up()

    async def _torn_down(self, msg: TornDown) -> None:
        if self.machine.allows(self.state, msg.then):
            extra = {"ended_at": time.time(), "job_duration": self._ran_seconds()}
            await self.step(msg.then, "cluster torn down", **extra)

    # -- helpers -------------------------------------------------------------------------

    def _ran_seconds(self) -> float:
        data = self.row.data
        total = float(data.get("job_duration", 0.0))
        started = data.get("run_started_at")
        if self.state is S.RUNNING and started:
            total += time.time() - float(started)
        return round(total, 3)

    def _recovery(self) -> JobRecovery | None:
        return self.tasks[self.task_index].resources_or_default().recovery()

    def _strategy(self) -> str:
        rec = self._recovery()
        return rec.strategy if rec else "EAGER_NEXT_REGION"

    def _max_restarts(self) -> int:
        rec = self._recovery()
        return rec.max_restarts_on_errors if rec else 0
