"""A cluster: provisioned through a provider, its agents kept current, stopped when idle.

The row holds what the daemon decided (state, nodes, autostop, a launch in progress); the
provider and the agents hold the truth, which `reconcile` reads before anything is acted on.
A launch writes its intent first (`pending_launch`), so a daemon killed half-way finishes it
after restart instead of leaving a half-made cluster or a job that never ran.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import secrets
import time
from typing import TYPE_CHECKING, Any

import anyio
import msgspec

from proto import messages as m
from proto.errors import ClusterNotFound, ClusterNotUp, InvalidRequest, JobNotFound, ProvisionError
from proto.states import ClusterStatus, JobStatus
from stixd.actors.job import ClusterGone, JobEvent
from stixd.actors.jobs_submit import create_job, infra_label, job_row_id
from stixd.actors.machines import compare
from stixd.actors.syncing import sync_task_files, validate_mounts
from stixd.agent_client import AgentError, AgentUnreachable
from stixd.planner.catalog import CatalogError
from stixd.planner.local_fit import check_fits_local, local_offer
from stixd.planner.pricing import Prices, price_table
from stixd.planner.target import (
    CLOUDS,
    MAX_FAILOVERS,
    NoChoiceLeft,
    avoid_regions,
    blocked_from,
    choose_target,
    cloud_spec,
)
from stixd.providers.base import (
    CapacityError,
    NodeInfo,
    NodeLoss,
    NodeStatus,
    Provider,
    ProvisionRequest,
    ReportsLostNodes,
    ReportsMachines,
)
from stixd.runtime.actor import Actor
from stixd.runtime.machine import Machine
from stixd.runtime.mailbox import Envelope

if TYPE_CHECKING:
    from proto.task import Task
    from stixd.app import App
    from stixd.config import Config


class ClusterEvent(enum.Enum):
    LAUNCH = "launch"
    START = "start"
    PROVISIONED = "provisioned"
    PROVISION_FAILED = "provision_failed"
    AUTOSTOP = "autostop"
    STOPPED = "stopped"
    TERMINATED = "terminated"
    FOUND_UP = "found_up"
    FOUND_STOPPED = "found_stopped"
    FOUND_GONE = "found_gone"
    FOUND_DEGRADED = "found_degraded"


C, E = ClusterStatus, ClusterEvent
CLUSTER_TRANSITIONS: dict[tuple[ClusterStatus, ClusterEvent], ClusterStatus] = {
    (C.TERMINATED, E.LAUNCH): C.INIT,
    (C.INIT, E.LAUNCH): C.INIT,
    (C.INIT, E.PROVISIONED): C.UP,
    (C.INIT, E.PROVISION_FAILED): C.INIT,
    (C.INIT, E.STOPPED): C.STOPPED,
    (C.INIT, E.TERMINATED): C.TERMINATED,
    (C.INIT, E.FOUND_UP): C.UP,
    (C.INIT, E.FOUND_STOPPED): C.STOPPED,
    (C.INIT, E.FOUND_GONE): C.TERMINATED,
    (C.UP, E.AUTOSTOP): C.AUTOSTOPPING,
    (C.UP, E.STOPPED): C.STOPPED,
    (C.UP, E.TERMINATED): C.TERMINATED,
    (C.UP, E.FOUND_STOPPED): C.STOPPED,
    (C.UP, E.FOUND_GONE): C.TERMINATED,
    (C.UP, E.FOUND_DEGRADED): C.INIT,
    (C.AUTOSTOPPING, E.STOPPED): C.STOPPED,
    (C.AUTOSTOPPING, E.TERMINATED): C.TERMINATED,
    (C.AUTOSTOPPING, E.FOUND_UP): C.UP,
    (C.AUTOSTOPPING, E.FOUND_STOPPED): C.STOPPED,
    (C.AUTOSTOPPING, E.FOUND_GONE): C.TERMINATED,
    (C.AUTOSTOPPING, E.FOUND_DEGRADED): C.INIT,
    (C.STOPPED, E.LAUNCH): C.INIT,
    (C.STOPPED, E.START): C.INIT,
    (C.STOPPED, E.TERMINATED): C.TERMINATED,
    (C.STOPPED, E.FOUND_UP): C.UP,
    (C.STOPPED, E.FOUND_GONE): C.TERMINATED,
    (C.STOPPED, E.FOUND_DEGRADED): C.INIT,
}


class AutostopTick:
    """Timer message: time to look at the agents' idle clocks."""


class Resume:
    """Finish a launch that a daemon restart interrupted."""


class HealthTick:
    """Timer message: query the provider for the truth about every node."""


RECONCILE = "reconcile at start"


def autostop_period(idle_minutes: float) -> float:
    return min(max(idle_minutes * 60 / 10, 0.25), 15.0)


class ClusterActor(Actor):
    kind = "cluster"
    machine = Machine("cluster", CLUSTER_TRANSITIONS)
    state_type = ClusterStatus

    def __init__(self, row: Any, app: App) -> None:
        super().__init__(row, app.store, app.log)
        self.app = app

    @staticmethod
    def is_terminal(state: Any) -> bool:
        return ClusterStatus(state).is_terminal

    def done(self) -> bool:
        return False  # a terminated cluster's actor stays to take the next launch of its name

    def _config(self) -> Config:
        return self.app.config_for(self.row.data.get("config_layers") or [])

    @property
    def provider(self) -> Provider:
        return self.app.provider(self.row.spec.get("provider", "local"))

    @property
    def nodes(self) -> list[NodeInfo]:
        return [NodeInfo.from_dict(n) for n in self.row.data.get("nodes", [])]

    # -- reconcile -----------------------------------------------------------------------

    async def reconcile(self) -> None:
        if self.state is C.TERMINATED:
            return
        if self.state is C.INIT and self.row.data.get("pending_launch"):
            self.tell(Resume())
            return
        await self._observe(RECONCILE)

    async def _observe(self, why: str) -> None:
        before = self.state
        nodes = await self.provider.query(self.id)
        losses = self._losses()
        await self._note_machines()
        expected = int(self.row.spec.get("num_nodes", 1))
        running = [n for n in nodes if n.status is NodeStatus.RUNNING]
        unreachable = [n for n in nodes if n.status is NodeStatus.UNREACHABLE]
        down = [n for n in nodes if n.status is not NodeStatus.RUNNING]
        problem = self._node_problems(down) if running or unreachable else None
        if not nodes:
            event = E.FOUND_GONE
        elif unreachable:
            event = E.FOUND_DEGRADED  # a host that does not answer is not a stopped one
        elif len(running) >= expected:
            event = E.FOUND_UP
        elif not running:
            event = E.FOUND_STOPPED
        else:
            event = E.FOUND_DEGRADED
        lost = "; ".join(f"node {x.rank} {x.why}" for x in losses)
        if self.machine.allows(self.state, event):
            detail = f"{why}: {len(running)}/{expected} nodes running"
            if problem or lost:
                detail += f"; {problem or lost}"
            await self.transition(
                event,
                detail,
                last_error=problem or lost or None,
                **self._accounting(self.machine.next(self.state, event)),
            )
        elif problem != self.row.data.get("last_error") and (problem or event is E.FOUND_UP):
            await self.save(last_error=problem)
        if losses:
            await self._lost(losses)
        elif self.row.data.get("losses"):
            await self.save(losses=None)
        if self.state in (C.STOPPED, C.TERMINATED):
            why_ended = lost or f"cluster found {self.state.value}"
            await self._end_jobs(JobEvent.FAILED_DRIVER, why_ended)
        if self.state is C.TERMINATED and before is not C.TERMINATED and losses:
            await self._release_remains()
        if self.state is C.UP and (before is not C.UP or why == RECONCILE):
            await self._ensure_agents_current(self.nodes)
            await self._stop_jobs_ended_meanwhile(self.nodes)
            self._schedule_autostop()
        self._schedule_health()

    async def _note_machines(self) -> None:
        """Record what the machines are now; a resize made outside stix changes the cluster's
        resources and price (from now on) and is recorded as an event."""
        if not isinstance(self.provider, ReportsMachines):
            return
        data = self.row.data
        active = float(data.get("active_seconds") or 0.0)
        if data.get("up_since"):
            active += time.time() - float(data["up_since"])
        cloud = str(self.row.spec.get("provider"))

        def prices() -> Prices:
            try:
                return price_table(self.app.planner_catalog(), cloud)
            except CatalogError:
                return {}

        seen = compare(self.row.spec, data, self.provider.machines(self.id), prices, active)
        if seen is None:
            return
        for change in seen.changes:
            await self.store.record(
                self.kind, self.id, "machine_changed", f"{change} (made outside stix)"
            )
        await self.save(spec=seen.spec, **seen.data)

    def _losses(self) -> list[NodeLoss]:
        """Nodes of a live cluster whose machines the cloud took away (a spot preemption, a
        stop or termination from outside stix), as the provider's last query found them."""
        if not isinstance(self.provider, ReportsLostNodes) or self.state not in (C.UP, C.INIT):
            return []
        return self.provider.lost_nodes(self.id)

    async def _lost(self, losses: list[NodeLoss]) -> None:
        """Record each new loss as an event, and end the cluster's jobs now: the machine is not
        coming back, so waiting out the node grace would only delay a managed job's recovery."""
        seen = set(self.row.data.get("losses") or [])
        for loss in losses:
            if loss.why not in seen:
                event = "node_preempted" if loss.preempted else "node_lost"
                await self.store.record(self.kind, self.id, event, f"node {loss.rank} {loss.why}")
        if seen != {x.why for x in losses}:
            await self.save(losses=[x.why for x in losses])
        why = "; ".join(f"node {x.rank} {x.why}" for x in losses)
        all_lost = len(losses) >= int(self.row.spec.get("num_nodes", 1))
        # with some nodes left, the job's other ranks are stopped (a gang dies together)
        await self._end_jobs(
            JobEvent.FAILED_DRIVER, why, lost_rank=None if all_lost else losses[0].rank
        )

    async def _release_remains(self) -> None:
        """Every machine of the cluster is gone: delete what the provider made around them (an
        AWS security group), so it is not left behind as a leak."""
        try:
            await self.provider.terminate(self.id)
        except ProvisionError as exc:
            self.log.warning("release_remains_failed", error=exc.message)

    def _node_problems(self, down: list[NodeInfo]) -> str | None:
        """One sentence per node that is not running, for status and events."""
        if not down:
            return None
        reasons = getattr(self.provider, "last_error", {}).get(self.id, {})

        def say(n: NodeInfo) -> str:
            if n.status is NodeStatus.UNREACHABLE:
                return f"node {n.rank} ({n.ip}) is unreachable: {reasons.get(n.rank, 'no answer')}"
            return f"node {n.rank} ({n.ip}) does not answer (its agent is not running)"

        return "; ".join(say(n) for n in down)

    def _schedule_health(self) -> None:
        """Look at every node of a live cluster now and then (a host may die unseen)."""
        if self.state in (C.UP, C.INIT) and not self.row.data.get("pending_launch"):
            self.after("health", self.app.config.daemon.health_check_seconds, HealthTick())

    # -- messages ------------------------------------------------------------------------

    async def handle(self, message: Any) -> None:
        if isinstance(message, AutostopTick):
            await self._autostop_tick()
        elif isinstance(message, HealthTick):
            if self.state in (C.UP, C.INIT) and not self.row.data.get("pending_launch"):
                await self._observe("health check")
        elif isinstance(message, Resume):
            await self._resume_launch()
        elif isinstance(message, Envelope):
            message.answer(await self._request(message))

    async def _request(self, env: Envelope) -> Any:
        req = env.payload
        if isinstance(req, m.Launch):
            return await self._launch(req, env)
        if isinstance(req, m.Exec):
            return await self._exec(req, env)
        if isinstance(req, m.Status):
            if self.state is not C.TERMINATED:
                await self._observe("refresh")
            return m.OkReply()
        if self.state is C.TERMINATED:
            raise ClusterNotFound(f"cluster {self.id!r} does not exist")
        if isinstance(req, m.Stop):
            return await self._stop(env)
        if isinstance(req, m.Start):
            return await self._start(req, env)
        if isinstance(req, m.Down):
            return await self._down(env)
        if isinstance(req, m.Autostop):
            return await self._set_autostop(req)
        if isinstance(req, m.Cancel):
            return await self._cancel(req)
        raise InvalidRequest(f"cluster actor cannot handle {type(req).__name__}")

    # -- launch / exec -------------------------------------------------------------------

    async def _launch(self, req: m.Launch, env: Envelope) -> m.LaunchResult:
        validate_mounts(req.task)
        provider, pool = choose_target(req.task, self.app.ssh_pool_sizes(), self.app.clouds())
        if self.state is C.UP:
            here = (self.row.spec.get("provider", "local"), self.row.spec.get("pool"))
            if here != (provider, pool):
                raise InvalidRequest(
                    f"cluster {self.id!r} runs on {infra_label(*here)} but the task asks for "
                    f"{infra_label(provider, pool)}; launch it on a new cluster name"
                )
            have = int(self.row.spec.get("num_nodes", 1))
            if req.task.num_nodes > have:
                raise InvalidRequest(
                    f"cluster {self.id!r} has {have} node(s) but the task asks for "
                    f"{req.task.num_nodes}; launch it on a new cluster name"
                )
            env.progress(
                m.Progress(f"Cluster {self.id} is UP; syncing files and running the task.")
            )
            await sync_task_files(self.provider, self.nodes, req.task, env, file_mounts=True)
            await self._apply_autostop_request(req.idle_minutes, req.down)
            job_id = await self._allocate_job_id()
            await create_job(
                self, job_id, req.task, with_setup=not req.no_setup, task_id=req.task_id
            )
            env.progress(m.JobSubmitted(self.id, job_id))
            return m.LaunchResult(cluster=self.id, job_id=job_id, job_status="INIT")
        if self.state in (C.AUTOSTOPPING,):
            raise ClusterNotUp(f"cluster {self.id!r} is stopping; retry when it is STOPPED")
        job_id = await self._begin_launch(req, provider, pool)
        return await self._finish_launch(req, job_id, env)

    async def _begin_launch(self, req: m.Launch, provider: str, pool: str | None) -> int:
        """Write the intent (state INIT + the request) before touching any infra."""
        data: dict[str, Any] = {"machines": None}  # the plan is the new baseline
        if self.state is C.TERMINATED:
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
            **self.row.spec,
            "provider": provider,
            "pool": pool,
            "num_nodes": req.task.num_nodes,
            "resources": f"{req.task.num_nodes}x {infra_label(provider, pool)}",
            "hourly_price": local_offer().price,  # per node: local and SSH hosts cost $0
            "placement": None,
            "avoid_regions": list(req.avoid_regions),
        }
        if provider in CLOUDS:  # usable, as choose_target said: the optimizer's first choice
            catalog = self.app.planner_catalog()
            blocks = self.app.remembered_blocks()
            plan = functools.partial(
                cloud_spec,
                avoid=self._avoided(provider, req.avoid_regions),
                prefer_region=req.prefer_region,
            )
            spec.update(await anyio.to_thread.run_sync(plan, req.task, provider, catalog, blocks))
        self.row = await self.store.update(self.row, event="save", spec=spec, record_event=False)
        job_id = int({**self.row.data, **data}.get("next_job_id", 1))
        data["next_job_id"] = job_id + 1
        data["config_layers"] = [[layer.source, layer.values] for layer in req.config]
        data["pending_launch"] = {"request": msgspec.to_builtins(req), "job_id": job_id}
        where = infra_label(provider, pool)
        await self.transition(E.LAUNCH, f"launch {req.task.num_nodes} node(s) on {where}", **data)
        return job_id

    async def _resume_launch(self) -> None:
        pending = self.row.data.get("pending_launch")
        if self.state is not C.INIT or not pending:
            return
        req = msgspec.convert(pending["request"], m.Launch)
        self.log.info("resume_launch", job_id=pending["job_id"])
        try:
            await self._finish_launch(req, int(pending["job_id"]), Envelope(payload=req))
        except ProvisionError as exc:
            self.log.warning("resume_failed", error=exc.message)

    async def _finish_launch(self, req: m.Launch, job_id: int, env: Envelope) -> m.LaunchResult:
        nodes = await self._provision(req.task.num_nodes, env, req.task)
        await sync_task_files(self.provider, nodes, req.task, env, file_mounts=True)
        await self._apply_autostop_request(req.idle_minutes, req.down, nodes)
        await create_job(self, job_id, req.task, with_setup=not req.no_setup, task_id=req.task_id)
        await self.transition(
            E.PROVISIONED,
            f"{len(nodes)} node(s) up",
            pending_launch=None,
            up_since=time.time(),
            last_error=None,
        )
        self._schedule_autostop()
        self._schedule_health()
        env.progress(m.JobSubmitted(self.id, job_id))
        return m.LaunchResult(cluster=self.id, job_id=job_id, job_status="INIT")

    async def _provision(
        self, num_nodes: int, env: Envelope, task: Task | None = None
    ) -> list[NodeInfo]:
        where = infra_label(self.row.spec.get("provider", "local"), self.row.spec.get("pool"))
        env.progress(m.Progress(f"Provisioning {num_nodes} node(s) on {where} for {self.id}..."))
        request = ProvisionRequest(
            self.id,
            num_nodes,
            self.app.agent_pyz,
            resources={
                "pool": self.row.spec.get("pool"),
                **(self.row.spec.get("placement") or {}),
                "launch_id": self.row.data.get("uid"),
            },
        )
        try:
            nodes = await self._launch_with_failover(request, task, env)
        except ProvisionError as exc:
            if not self.row.data.get("nodes"):
                await self._release_failed_launch(exc)
            await self.transition(
                E.PROVISION_FAILED, exc.message, last_error=exc.message, pending_launch=None
            )
            raise
        if len([n for n in nodes if n.status is NodeStatus.RUNNING]) < num_nodes:
            why = f"only {len(nodes)} of {num_nodes} nodes came up"
            await self.transition(E.PROVISION_FAILED, why, last_error=why, pending_launch=None)
            raise ProvisionError(why)
        await self._ensure_agents_current(nodes)
        await self.save(nodes=[n.to_dict() for n in nodes])
        env.progress(m.Progress(f"{num_nodes} node(s) up; agents ready."))
        return nodes

    async def _launch_with_failover(
        self, request: ProvisionRequest, task: Task | None, env: Envelope
    ) -> list[NodeInfo]:
        """Launch; on a capacity or quota error on a cloud, block what it names and take the
        optimizer's next choice there (the provider tries a region's zones itself)."""
        cloud = self.row.spec.get("provider", "local")
        failed: list[str] = []
        blocks = self.app.remembered_blocks()
        while True:
            try:
                return await self.provider.launch(request)
            except CapacityError as exc:
                if task is None or cloud not in self.app.clouds() or len(failed) >= MAX_FAILOVERS:
                    raise
                failed.append(f"{self.row.spec.get('resources', cloud)}: {exc.message}")
                blocked = blocked_from(exc.block, getattr(exc, "aws_code", "") or exc.message)
                blocks.append(blocked)
                self.app.remember_block(blocked, float(getattr(exc, "remember_s", 0.0)))
                await self.store.record(self.kind, self.id, "failover", failed[-1])
                catalog = self.app.planner_catalog()
                avoid = self._avoided(cloud, self.row.spec.get("avoid_regions") or [])
                plan = functools.partial(cloud_spec, avoid=avoid)
                try:
                    spec = await anyio.to_thread.run_sync(plan, task, cloud, catalog, blocks)
                except NoChoiceLeft:
                    tried = "; ".join(failed)
                    raise NoChoiceLeft(f"every choice on {cloud} failed: {tried}") from None
                env.progress(m.Progress(f"{failed[-1]}; trying {spec['resources']} next."))
                self.row = await self.store.update(
                    self.row, event="save", spec={**self.row.spec, **spec}, record_event=False
                )
                placement = spec["placement"]
                request = dataclasses.replace(request, resources={**request.resources, **placement})

    @staticmethod
    def _avoided(cloud: str, regions: list[str]) -> list[Any]:
        return avoid_regions(cloud, regions, "a managed job was lost there (EAGER_NEXT_REGION)")

    async def _release_failed_launch(self, exc: ProvisionError) -> None:
        """A first launch that failed gives back what it took (pool hosts, half-made nodes):
        otherwise a cluster that never came up holds them until someone runs `down`."""
        try:
            await self.provider.terminate(self.id)
        except (ProvisionError, OSError) as cleanup:
            self.log.warning("failed_launch_cleanup", error=str(cleanup), cause=exc.message)

    async def _exec(self, req: m.Exec, env: Envelope) -> m.LaunchResult:
        if self.state is C.TERMINATED:
            raise ClusterNotFound(
                f"cluster {self.id!r} does not exist; create it with `stixctl launch`"
            )
        if self.state is not C.UP:
            raise ClusterNotUp(
                f"cluster {self.id!r} is {self.state.value}; "
                f"start it with `stixctl start {self.id}`"
            )
        if self.row.spec.get("provider", "local") == "local":
            check_fits_local(req.task)
        have = int(self.row.spec.get("num_nodes", 1))
        if req.task.num_nodes > have:
            raise InvalidRequest(
                f"cluster {self.id!r} has {have} node(s) but the task asks for {req.task.num_nodes}"
            )
        if req.task.workdir:
            await sync_task_files(self.provider, self.nodes, req.task, env, file_mounts=False)
        job_id = await self._allocate_job_id()
        await create_job(self, job_id, req.task, with_setup=False, task_id=req.task_id)
        env.progress(m.JobSubmitted(self.id, job_id))
        return m.LaunchResult(cluster=self.id, job_id=job_id, job_status="INIT")

    async def _allocate_job_id(self) -> int:
        job_id = int(self.row.data.get("next_job_id", 1))
        await self.save(next_job_id=job_id + 1)
        return job_id

    # -- agents --------------------------------------------------------------------------

    async def _ensure_agents_current(self, nodes: list[NodeInfo]) -> None:
        """Upgrade agents of another build in place: same process, running jobs untouched."""
        for node in nodes:
            client = self.provider.connector(node)
            try:
                hello = await client.call("hello", deadline=5)
                if hello.get("build") != self.app.agent_build:
                    self.log.info("agent_upgrade", rank=node.rank, old=hello.get("build"))
                    await client.call("upgrade", deadline=5, pyz=str(self.app.agent_pyz))
                    await self.store.record(
                        self.kind,
                        self.id,
                        "agent_upgraded",
                        f"node {node.rank}: {hello.get('build')} -> {self.app.agent_build}",
                    )
            except (AgentUnreachable, AgentError) as exc:
                self.log.warning("agent_check_failed", rank=node.rank, error=str(exc))

    async def _stop_jobs_ended_meanwhile(self, nodes: list[NodeInfo]) -> None:
        """A node back from an outage may still run a job the daemon ended while it was away
        (FAILED_DRIVER after the grace): stop it, so the node's truth matches the record."""
        uid = self.row.data.get("uid")
        if not uid:
            return
        for node in nodes:
            client = self.provider.connector(node)
            try:
                listed = await client.call("jobs", deadline=5)
                live = [
                    int(j["job_id"])
                    for j in listed.get("jobs", [])
                    if not JobStatus(j["state"]).is_terminal
                ]
                ended = []
                for job_id in live:
                    row = await self.store.get("job", job_row_id(self.id, uid, job_id))
                    if row is not None and row.terminal:
                        ended.append(job_id)
                if not ended:
                    continue
                await client.call("cancel", deadline=10, job_ids=ended, all=False)
            except (AgentUnreachable, AgentError) as exc:
                self.log.warning("ended_jobs_check_failed", rank=node.rank, error=str(exc))
                continue
            await self.store.record(
                self.kind,
                self.id,
                "ended_jobs_stopped",
                f"node {node.rank}: job(s) {', '.join(map(str, ended))} ended while it was away",
            )

    # -- stop / start / down -------------------------------------------------------------

    def _accounting(self, new_state: ClusterStatus) -> dict[str, Any]:
        """Active time for cost-report: closes the UP interval when leaving UP."""
        data = self.row.data
        if self.state is C.UP and new_state is not C.UP and data.get("up_since"):
            return {
                "active_seconds": data.get("active_seconds", 0.0) + time.time() - data["up_since"],
                "up_since": None,
            }
        if new_state is C.UP and self.state is not C.UP:
            return {"up_since": time.time()}
        return {}

    async def _stop(self, env: Envelope) -> m.OkReply:
        if self.state is C.STOPPED:
            return m.OkReply(f"cluster {self.id} is already stopped")
        env.progress(m.Progress(f"Stopping {self.id}..."))
        await self.provider.stop(self.id)
        await self.transition(E.STOPPED, "stop requested", **self._accounting(C.STOPPED))
        await self._end_jobs(JobEvent.CANCELLED, "cluster stopped")
        self.cancel_timer("autostop")
        return m.OkReply(f"cluster {self.id} stopped")

    async def _start(self, req: m.Start, env: Envelope) -> m.OkReply:
        if self.state is C.UP:
            return m.OkReply(f"cluster {self.id} is already UP")
        if self.state is C.STOPPED:
            await self.transition(E.START, "start requested")
        num_nodes = int(self.row.spec.get("num_nodes", 1))
        nodes = await self._provision(num_nodes, env)
        await self._apply_autostop_request(req.idle_minutes, req.down, nodes)
        await self.transition(E.PROVISIONED, "started", up_since=time.time(), last_error=None)
        self._schedule_autostop()
        self._schedule_health()
        return m.OkReply(f"cluster {self.id} is UP")

    async def _down(self, env: Envelope) -> m.OkReply:
        env.progress(m.Progress(f"Terminating {self.id}..."))
        await self.provider.terminate(self.id)
        await self.transition(
            E.TERMINATED, "down requested", nodes=[], **self._accounting(C.TERMINATED)
        )
        await self._end_jobs(JobEvent.CANCELLED, "cluster terminated")
        self.cancel_timer("autostop")
        return m.OkReply(f"cluster {self.id} terminated")

    async def _end_jobs(self, event: JobEvent, why: str, lost_rank: int | None = None) -> None:
        uid = self.row.data.get("uid")
        if not uid:
            return
        gone = ClusterGone(event, why, lost_rank=lost_rank)
        for job in await self.store.rows("job", parent=uid, include_terminal=False):
            if not self.app.supervisor.tell("job", job.id, gone):
                self.app.spawn(job)
                self.app.supervisor.tell("job", job.id, gone)

    # -- cancel --------------------------------------------------------------------------

    async def _cancel(self, req: m.Cancel) -> m.Cancelled:
        uid = self.row.data.get("uid")
        jobs = await self.store.rows("job", parent=uid)
        by_id = {int(j.spec["job_id"]): j for j in jobs}
        if req.all:
            wanted = [i for i, j in by_id.items() if not j.terminal]
        else:
            missing = [i for i in req.job_ids if i not in by_id]
            if missing:
                raise JobNotFound(f"cluster {self.id!r} has no job {missing[0]}")
            wanted = [i for i in req.job_ids if not by_id[i].terminal]
        if wanted and self.state is C.UP:
            for node in self.nodes:
                try:
                    await self.provider.connector(node).call(
                        "cancel", deadline=15, job_ids=wanted, all=False
                    )
                except (AgentUnreachable, AgentError) as exc:
                    self.log.warning("cancel_failed", rank=node.rank, error=str(exc))
        return m.Cancelled(job_ids=wanted)

    # -- autostop ------------------------------------------------------------------------

    async def _apply_autostop_request(
        self, idle_minutes: float | None, down: bool, nodes: list[NodeInfo] | None = None
    ) -> None:
        if idle_minutes is None:
            idle_minutes = self._config().autostop.default_idle_minutes
            if idle_minutes is None and not down:
                await self._push_autostop(nodes)
                return
            if idle_minutes is None:
                idle_minutes = 0.0  # --down alone: torn down as soon as its jobs are done
        setting = {"idle_minutes": float(idle_minutes), "down": down} if idle_minutes >= 0 else None
        await self.save(autostop=setting, idle_since=None)
        await self._push_autostop(nodes)

    async def _set_autostop(self, req: m.Autostop) -> m.OkReply:
        if req.cancel or (req.idle_minutes is not None and req.idle_minutes < 0):
            await self.save(autostop=None, idle_since=None)
            await self._push_autostop()
            self.cancel_timer("autostop")
            return m.OkReply(f"autostop cancelled for {self.id}")
        minutes = req.idle_minutes if req.idle_minutes is not None else 5.0
        await self.save(
            autostop={"idle_minutes": float(minutes), "down": req.down}, idle_since=None
        )
        await self._push_autostop()
        self._schedule_autostop()
        action = "torn down" if req.down else "stopped"
        return m.OkReply(f"{self.id} will be {action} after {minutes:g} idle minute(s)")

    async def _push_autostop(self, nodes: list[NodeInfo] | None = None) -> None:
        """The agents keep the setting too: their dead-man's switch needs no daemon."""
        setting = self.row.data.get("autostop")
        grace = self._config().autostop.grace_minutes
        for node in nodes if nodes is not None else self.nodes:
            try:
                await self.provider.connector(node).call(
                    "autostop",
                    deadline=5,
                    idle_minutes=setting["idle_minutes"] if setting else None,
                    down=bool(setting and setting["down"]),
                    grace_minutes=grace,
                )
            except (AgentUnreachable, AgentError) as exc:
                self.log.warning("autostop_push_failed", rank=node.rank, error=str(exc))

    def _schedule_autostop(self) -> None:
        setting = self.row.data.get("autostop")
        if setting and self.state is C.UP:
            self.after("autostop", autostop_period(setting["idle_minutes"]), AutostopTick())

    async def _idle_since(self) -> float | None:
        """When the whole cluster became idle, or None while any node is busy or unreachable."""
        latest = 0.0
        for node in self.nodes:
            try:
                hello = await self.provider.connector(node).call("hello", deadline=5)
            except (AgentUnreachable, AgentError):
                return None
            since = hello.get("idle_since")
            if since is None:
                return None
            latest = max(latest, float(since))
        return latest or None

    async def _autostop_tick(self) -> None:
        setting = self.row.data.get("autostop")
        if not setting or self.state is not C.UP:
            return
        since = await self._idle_since()
        if since != self.row.data.get("idle_since"):
            await self.save(idle_since=since)
        limit = setting["idle_minutes"] * 60
        if since is None or time.time() - since < limit:
            self._schedule_autostop()
            return
        down = bool(setting.get("down"))
        await self.transition(
            E.AUTOSTOP,
            f"idle for {(time.time() - since) / 60:.2f} min (limit {setting['idle_minutes']:g})",
        )
        if down:
            await self.provider.terminate(self.id)
            await self.transition(
                E.TERMINATED, "autostop --down", nodes=[], **self._accounting(C.TERMINATED)
            )
        else:
            await self.provider.stop(self.id)
            await self.transition(E.STOPPED, "autostop", **self._accounting(C.STOPPED))
        await self._end_jobs(JobEvent.CANCELLED, "cluster autostopped")
