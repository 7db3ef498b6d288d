"""A job pool: long-lived worker clusters that managed jobs run on without provisioning.

The pool launches its workers (each runs the pool's setup once), then hands idle workers to
managed jobs one at a time. The actor is the one place that decides who gets a worker, so two
jobs never share one: a claim is written to the pool's row before the job hears of it, jobs
that find every worker busy wait in a persisted queue, and a released worker goes to the
longest-waiting job. A worker whose cluster was lost is relaunched before it is handed out again.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import msgspec

from stixd.actors.asks import ask_cluster
from stixd.actors.jobs_submit import job_row_id
from stixd.actors.specs import (
    MAX_POOL_WORKERS as MAX_POOL_WORKERS,  # where callers find it
)
from stixd.actors.specs import (
    ClusterData,
    JobPoolData,
    JobPoolSpec,
    ManagedJobSpec,
    data_of,
    spec_or_none,
    state_of,
)
from stixd.runtime.actor import Actor
from stixd.runtime.machine import Machine
from stixd.runtime.mailbox import Envelope
from stixproto import messages as m
from stixproto.errors import InvalidRequest, StixError
from stixproto.states import ClusterStatus, JobStatus
from stixproto.states import PoolStatus as P
from stixproto.task import Task, redacted_task

if TYPE_CHECKING:
    from stixd.app import App

MANAGED = "managed_job"
JOBS_END_SECONDS = 120.0
"""How long a pool going down waits for its cancelled jobs to end before tearing down."""


class PoolEvent(enum.Enum):
    APPLY = "apply"
    WORKERS_READY = "workers_ready"
    WORKER_FAILED = "worker_failed"
    DOWN = "down"
    GONE = "gone"


E = PoolEvent
POOL_TRANSITIONS: dict[tuple[P, PoolEvent], P] = {
    (P.DOWN, E.APPLY): P.PROVISIONING,
    (P.PROVISIONING, E.APPLY): P.PROVISIONING,
    (P.READY, E.APPLY): P.PROVISIONING,
    (P.FAILED, E.APPLY): P.PROVISIONING,
    (P.PROVISIONING, E.WORKERS_READY): P.READY,
    (P.READY, E.WORKERS_READY): P.READY,
    (P.PROVISIONING, E.WORKER_FAILED): P.FAILED,
    (P.READY, E.WORKER_FAILED): P.FAILED,
    **{(s, E.DOWN): P.SHUTTING_DOWN for s in (P.PROVISIONING, P.READY, P.FAILED)},
    (P.SHUTTING_DOWN, E.GONE): P.DOWN,
}


# -- messages from managed jobs ----------------------------------------------------------


@dataclass(frozen=True)
class Acquire:
    """A managed job wants a worker; it hears back by `WorkerReady` (now or once one frees)."""

    job_id: int


@dataclass(frozen=True)
class Release:
    job_id: int
    broken: bool = False
    """The job lost the worker's cluster: relaunch it before anyone else gets it."""


@dataclass(frozen=True)
class WorkerReady:
    """Told to a managed job: this worker cluster is yours until you release it."""

    pool: str
    worker: str


@dataclass(frozen=True)
class PoolGoingDown:
    """Told to a managed job of a pool being torn down: end (CANCELLED), as `jobs cancel`."""

    pool: str


@dataclass(frozen=True)
class ApplyFor:
    """`pool apply` with who asked (stixd.control.jobs_cmds): the owner and workspace a pool
    made by it records (one that is up keeps its own)."""

    req: m.PoolApply
    owner: str
    workspace: str


class Advance:
    """Do the work of the current state (at start and after a decision)."""


@dataclass(frozen=True)
class Provisioned:
    failed: dict[str, str]
    """Worker → why it could not be made."""


class Gone:
    """Every worker is torn down."""


def _pool_of(row: Any) -> str | None:
    spec = spec_or_none(row, ManagedJobSpec)
    return spec.pool if spec is not None else None


def worker_name(pool: str, index: int) -> str:
    return f"{pool}-{index}"


class JobPoolActor(Actor):
    kind = "job_pool"
    machine = Machine("job_pool", POOL_TRANSITIONS)
    state_type = P
    spec_type = JobPoolSpec
    data_type = JobPoolData
    spec: JobPoolSpec
    data: JobPoolData

    def __init__(self, row: Any, app: App) -> None:
        super().__init__(row, app.store, app.log)
        self.app = app

    @staticmethod
    def is_terminal(state: Any) -> bool:
        return P(state).is_terminal

    def done(self) -> bool:
        return False  # a pool that is down keeps its actor for the next apply of its name

    @property
    def size(self) -> int:
        return self.spec.workers

    @property
    def workers(self) -> list[str]:
        return [worker_name(self.id, i) for i in range(self.size)]

    @property
    def claims(self) -> dict[str, int]:
        return dict(self.data.claims)

    @property
    def waiting(self) -> list[int]:
        return list(self.data.waiting)

    # -- lifecycle -----------------------------------------------------------------------

    async def reconcile(self) -> None:
        if self.row.terminal:
            return
        await self._forget_ended_jobs()
        self.tell(Advance())

    async def handle(self, message: Any) -> None:
        if isinstance(message, Envelope):
            message.answer(await self._request(message))
        elif isinstance(message, Advance):
            await self._advance()
        elif isinstance(message, Provisioned):
            await self._provisioned(message)
        elif isinstance(message, Gone):
            if self.state is P.SHUTTING_DOWN:
                spec = self._without_secrets()  # kept to launch workers, and there are no more
                await self.transition(
                    E.GONE, "every worker torn down", new_spec=spec, claims={}, waiting=[]
                )
                if spec is not None:
                    await self.store.forget_overwritten()
        elif isinstance(message, Acquire):
            await self._acquire(message.job_id)
        elif isinstance(message, Release):
            await self._release(message)

    async def _request(self, env: Envelope) -> Any:
        req = env.payload
        if isinstance(req, ApplyFor):
            return await self._apply(req.req, req.owner, req.workspace)
        if isinstance(req, m.PoolApply):
            return await self._apply(req)
        if isinstance(req, m.PoolDown):
            if self.row.terminal:
                return m.OkReply(f"pool {self.id} is already down")
            jobs = [int(r.id) for r in await self._live_jobs()]
            if self.state is not P.SHUTTING_DOWN:
                await self.transition(E.DOWN, "down requested")
                self.start_soon(self._tear_down)
            if not jobs:
                return m.OkReply(f"pool {self.id} is shutting down")
            ids = ", ".join(map(str, sorted(jobs)))
            return m.OkReply(f"pool {self.id} is shutting down; cancelling its job(s) {ids}")
        raise InvalidRequest(f"pool actor cannot handle {type(req).__name__}")

    async def _apply(
        self, req: m.PoolApply, owner: str | None = None, workspace: str | None = None
    ) -> m.OkReply:
        workers = int((req.task.pool or {}).get("workers", 0) or 0)
        if self.state is P.SHUTTING_DOWN:
            raise InvalidRequest(
                f"pool {self.id} is still shutting down; apply it again once "
                f"`stixctl jobs pool status` no longer lists it"
            )
        task = msgspec.structs.replace(req.task, pool=None)
        if not self.row.terminal:  # a pool that is up keeps whose and where it is
            owner, workspace = self.spec.owner, self.spec.workspace
        spec = JobPoolSpec(
            workers=workers,
            task=msgspec.to_builtins(task),
            config=[msgspec.to_builtins(c) for c in req.config],
            owner=owner,
            workspace=workspace,
        )
        await self.save(spec=spec)
        await self.transition(E.APPLY, f"{workers} worker(s)", failed={})
        self.tell(Advance())
        return m.OkReply(f"pool {self.id}: {workers} worker(s) being prepared")

    async def _advance(self) -> None:
        if self.state is P.PROVISIONING:
            self.start_soon(self._provision)
        elif self.state is P.SHUTTING_DOWN:
            self.start_soon(self._tear_down)
        elif self.state is P.READY:
            await self._hand_out()

    # -- workers -------------------------------------------------------------------------

    def _without_secrets(self) -> JobPoolSpec | None:
        task = self.spec.task
        scrubbed = redacted_task(task)
        return None if scrubbed == task else msgspec.structs.replace(self.spec, task=scrubbed)

    def _launch_request(self, worker: str) -> m.Launch:
        spec = self.spec
        return m.Launch(
            task=msgspec.convert(spec.task, Task),
            cluster=worker,
            detach=True,
            config=[msgspec.convert(c, m.ConfigLayer) for c in spec.config],
        )

    async def _emit(self, event: Any) -> None:
        """Progress of worker launches goes to the daemon log, not to a client."""

    async def _worker_up(self, worker: str) -> str | None:
        """Make ``worker`` UP with the pool's setup done; None, or why it could not be."""
        row = await self.app.store.get("cluster", worker)
        try:
            if row is None or state_of(row, ClusterStatus) is not ClusterStatus.UP:
                if row is not None and not row.terminal:
                    await ask_cluster(self.app, worker, m.Down(clusters=[worker]), self._emit)
                result = await ask_cluster(
                    self.app, worker, self._launch_request(worker), self._emit, create=True
                )
                crow = await self.app.store.get("cluster", worker)
                assert crow is not None
                if result.job_id is None:
                    return None  # no setup to run: the worker is ready as it is
                setup = await self.app.watch.wait_for(
                    "job",
                    job_row_id(worker, str(data_of(crow, ClusterData).uid), result.job_id),
                    lambda r: r is None or r.terminal,
                )
                if setup is None or state_of(setup, JobStatus) is not JobStatus.SUCCEEDED:
                    state = setup.state if setup else "gone"
                    return f"its setup ended {state}"
        except StixError as exc:
            return exc.message
        return None

    async def _provision(self) -> None:
        failed: dict[str, str] = {}

        async def one(worker: str) -> None:
            problem = await self._worker_up(worker)
            if problem:
                failed[worker] = problem

        async with anyio.create_task_group() as tg:
            for worker in self.workers:
                if worker not in self.claims:
                    tg.start_soon(one, worker)
            for extra in await self._extra_workers():
                tg.start_soon(self._down_worker, extra)
        self.tell(Provisioned(failed))

    async def _extra_workers(self) -> list[str]:
        """Workers of a larger earlier size that no job holds (a pool that was shrunk)."""
        prefix = f"{self.id}-"
        names = [
            r.id
            for r in await self.app.store.rows("cluster", include_terminal=False)
            if r.id.startswith(prefix) and r.id[len(prefix) :].isdigit()
        ]
        return [n for n in names if n not in self.workers and n not in self.claims]

    async def _down_worker(self, worker: str) -> None:
        row = await self.app.store.get("cluster", worker)
        if row is not None and not row.terminal:
            try:
                await ask_cluster(self.app, worker, m.Down(clusters=[worker]), self._emit)
            except StixError as exc:
                self.log.warning("worker_down_failed", worker=worker, error=exc.message)

    async def _provisioned(self, msg: Provisioned) -> None:
        if self.state is not P.PROVISIONING:
            return
        if msg.failed:
            why = "; ".join(f"{w}: {p}" for w, p in sorted(msg.failed.items()))
            await self.transition(E.WORKER_FAILED, why, failed=msg.failed)
            return
        await self.transition(E.WORKERS_READY, f"{self.size} worker(s) ready", failed={})
        await self._hand_out()

    async def _live_jobs(self) -> list[Any]:
        rows = await self.app.store.rows(MANAGED, include_terminal=False)
        return [r for r in rows if _pool_of(r) == self.id]

    async def _end_jobs(self) -> None:
        """Cancel every job of the pool and wait (bounded) for them to end: each stops its
        run and hands its worker back before the workers go, so none is left waiting for a
        worker that will never come."""
        jobs = await self._live_jobs()
        for row in jobs:
            if not self.app.supervisor.tell(MANAGED, row.id, PoolGoingDown(self.id)):
                self.app.spawn(row)
                self.app.supervisor.tell(MANAGED, row.id, PoolGoingDown(self.id))
        with anyio.move_on_after(JOBS_END_SECONDS):
            for row in jobs:
                await self.app.watch.wait_for(MANAGED, row.id, lambda r: r is None or r.terminal)

    async def _tear_down(self) -> None:
        await self._end_jobs()
        async with anyio.create_task_group() as tg:
            for worker in {*self.workers, *await self._extra_workers(), *self.claims}:
                tg.start_soon(self._down_worker, worker)
        self.tell(Gone())

    # -- handing out workers -------------------------------------------------------------

    async def _acquire(self, job_id: int) -> None:
        if self.state in (P.SHUTTING_DOWN, P.DOWN):  # no worker will come: the job ends
            self.app.supervisor.tell(MANAGED, str(job_id), PoolGoingDown(self.id))
            return
        for worker, holder in self.claims.items():
            if holder == job_id:  # asked again after a restart: it already has one
                self._tell_job(job_id, worker)
                return
        if job_id not in self.waiting:
            await self.save(waiting=[*self.waiting, job_id])
        await self._hand_out()

    async def _release(self, msg: Release) -> None:
        claims = {w: j for w, j in self.claims.items() if j != msg.job_id}
        waiting = [j for j in self.waiting if j != msg.job_id]
        broken = [w for w, j in self.claims.items() if j == msg.job_id and msg.broken]
        await self.save(claims=claims, waiting=waiting)
        if broken and self.state in (P.PROVISIONING, P.READY, P.FAILED):  # not when going down
            await self.transition(E.APPLY, f"relaunching {', '.join(broken)}: its cluster was lost")
            self.tell(Advance())
            return
        await self._hand_out()

    async def _hand_out(self) -> None:
        """Give idle workers to waiting jobs, longest waiting first."""
        if self.state is not P.READY:
            return
        await self._forget_ended_jobs()
        claims, waiting = self.claims, self.waiting
        idle = [w for w in self.workers if w not in claims]
        given: list[tuple[int, str]] = []
        while idle and waiting:
            job_id, worker = waiting.pop(0), idle.pop(0)
            claims[worker] = job_id
            given.append((job_id, worker))
        if not given:
            return
        await self.save(claims=claims, waiting=waiting)  # written before any job hears of it
        for job_id, worker in given:
            self._tell_job(job_id, worker)

    def _tell_job(self, job_id: int, worker: str) -> None:
        if not self.app.supervisor.tell(MANAGED, str(job_id), WorkerReady(self.id, worker)):
            self.log.warning("job_not_running", job_id=job_id, worker=worker)

    async def _forget_ended_jobs(self) -> None:
        """Claims and places in the queue of jobs that ended (or vanished) are void."""
        ids = {*self.claims.values(), *self.waiting}
        if not ids:
            return
        ended = set()
        for job_id in ids:
            row = await self.app.store.get(MANAGED, str(job_id))
            if row is None or row.terminal:
                ended.add(job_id)
        if ended:
            await self.save(
                claims={w: j for w, j in self.claims.items() if j not in ended},
                waiting=[j for j in self.waiting if j not in ended],
            )
