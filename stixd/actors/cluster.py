"""A cluster: provisioned through a provider, its agents kept current, stopped when idle.

The row holds what the daemon decided (state, nodes, autostop, a launch in progress); the
provider and the agents hold the truth, which `reconcile` reads before anything is acted on.
A launch writes its intent first (`pending_launch`), so a daemon killed half-way finishes it
after restart instead of leaving a half-made cluster or a job that never ran; so do stop and
down (STOPPING, TERMINATING). Provisioning and the other long provider calls run as phases
(`cluster_phases`), so the mailbox answers `status` meanwhile and `down` or `stop` interrupt
a launch within a moment.

This module holds the actor, its dispatch, and start / cancel; the longer parts
are functions taking the actor, each in its own module: `cluster_launch` (launch, provision
with failover, exec), `cluster_observe` (provider and agent truth, lost nodes, agent upgrades),
`cluster_autostop`, `cluster_ending` (stop and down); the events and transition table are
in `cluster_states`.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import time
from typing import TYPE_CHECKING, Any

import anyio

from stixd.actors import quarantine
from stixd.actors.cluster_autostop import (
    AutostopTick,
    apply_autostop_request,
    autostop_tick,
    schedule_autostop,
    set_autostop,
)
from stixd.actors.cluster_ending import down, finish_intent, stop
from stixd.actors.cluster_launch import exec_task, launch, provision, resume_launch, retry_launch
from stixd.actors.cluster_observe import RECONCILE, HealthTick, observe, schedule_health
from stixd.actors.cluster_phases import (
    FinishIntent,
    PhaseEnded,
    Phases,
    answers_while_busy,
    busy,
    phase_ended,
    start_phase,
)
from stixd.actors.cluster_retry import TIMER as RETRY_TIMER
from stixd.actors.cluster_retry import (
    RetryLaunch,
    StopRetrying,
    end_wait,
    is_retrying,
    stop_retrying,
)
from stixd.actors.cluster_states import CLUSTER_TRANSITIONS, C, E
from stixd.actors.cluster_states import ClusterEvent as ClusterEvent  # where callers find it
from stixd.actors.job import ClusterGone, JobEvent
from stixd.actors.mount_keys import ENDED as MOUNTS_ENDED
from stixd.actors.mount_keys import RenewMountKeys, renew_due, schedule_renewal
from stixd.actors.specs import ClusterData, ClusterSpec, state_of
from stixd.actors.storage_use import remount
from stixd.agent_client import AgentError, AgentUnreachable
from stixd.providers.base import NodeInfo, Provider
from stixd.runtime.actor import Actor
from stixd.runtime.clock import Clock
from stixd.runtime.machine import Machine
from stixd.runtime.mailbox import Envelope, Mailbox
from stixproto import messages as m
from stixproto.errors import ClusterNotFound, InvalidRequest, JobNotFound, ProvisionError
from stixproto.states import ClusterStatus, JobStatus

if TYPE_CHECKING:
    from stixd.app import App
    from stixd.config import Config


class Resume:
    """Finish a launch that a daemon restart interrupted."""


class ClusterActor(Actor):
    kind = "cluster"
    machine = Machine("cluster", CLUSTER_TRANSITIONS)
    state_type = ClusterStatus
    spec_type = ClusterSpec
    data_type = ClusterData
    spec: ClusterSpec
    data: ClusterData

    def __init__(self, row: Any, app: App) -> None:
        super().__init__(row, app.store, app.log)
        self.app = app
        self.launch_waiter: Envelope | None = None
        """The request of a `--retry-until-up` launch waiting for its next round."""
        self.phases = Phases()

    @staticmethod
    def is_terminal(state: Any) -> bool:
        return ClusterStatus(state).is_terminal

    def done(self) -> bool:
        return False  # a terminated cluster's actor stays to take the next launch of its name

    async def transition(
        self,
        event: enum.Enum,
        why: str = "",
        *,
        new_spec: ClusterSpec | None = None,
        **data: Any,
    ) -> Any:
        """Only INIT resumes a launch: leaving it any other way (down, stop, found gone) drops
        the stored request too, which holds the task's secrets. Stopped or gone, the cluster
        forgets its mounts' keys (``mount_keys``)."""
        dropped = (
            self.machine.next(self.state, event) is not C.INIT
            and "pending_launch" not in data
            and self.data.pending_launch is not None
        )
        if dropped:
            data["pending_launch"] = None
        ended = self.machine.next(self.state, event) in MOUNTS_ENDED and self.data.mount_keys
        if ended:  # the mounts went with the nodes: no keys of theirs to renew
            data.setdefault("mount_keys", [])
        gone = self.machine.next(self.state, event) is C.TERMINATED and self.data.bucket_mounts
        if gone:  # kept across a stop to mount again at start; not past the nodes' end
            data.setdefault("bucket_mounts", [])
        state = await super().transition(event, why, new_spec=new_spec, **data)
        if dropped:
            end_wait(self, state)
            await self.store.forget_overwritten()
        return state

    def _config(self) -> Config:
        return self.app.config_for(self.data.config_layers)

    @property
    def provider(self) -> Provider:
        return self.app.provider(self.spec.provider)

    @property
    def nodes(self) -> list[NodeInfo]:
        return [NodeInfo.from_dict(n) for n in self.data.nodes]

    # -- reconcile -----------------------------------------------------------------------

    async def reconcile(self) -> None:
        if self.state is C.TERMINATED:
            return
        schedule_renewal(self)  # the mounts' keys, renewed when due (at once if overdue)
        if busy(self):  # a stop or down was under way
            self.tell(FinishIntent())
            return
        if self.state is C.INIT and self.data.pending_launch:
            self.tell(Resume())
            return
        await observe(self, RECONCILE)

    # -- messages ------------------------------------------------------------------------

    async def run(
        self,
        mailbox: Mailbox,
        gate: anyio.CapacityLimiter | None = None,
        clock: Clock | None = None,
    ) -> None:
        try:
            await super().run(mailbox, gate, clock)
        finally:  # a successor (after a crash) handles what this one kept
            with contextlib.suppress(Exception):
                while self.phases.kept:
                    mailbox.put(self.phases.next_kept())

    async def handle(self, message: Any) -> None:
        if isinstance(message, RetryLaunch) and message.early and busy(self):
            return  # a round runs now: it sees the freed capacity, or its failure waits again
        if busy(self) and not answers_while_busy(message):
            self.phases.keep(message)  # a timer's tick too: at most one of each waits
        elif isinstance(message, PhaseEnded):
            await phase_ended(self, message)
        elif isinstance(message, FinishIntent):
            await finish_intent(self)
        elif isinstance(message, AutostopTick):
            await autostop_tick(self)
        elif isinstance(message, RenewMountKeys):
            await renew_due(self)
        elif isinstance(message, HealthTick):
            if self.state in (C.UP, C.INIT) and not self.data.pending_launch:
                await observe(self, "health check")
        elif isinstance(message, Resume):
            if self.state is C.INIT and self.data.pending_launch:
                start_phase(self, "launch", functools.partial(resume_launch, self))
        elif isinstance(message, RetryLaunch):
            if is_retrying(self):  # an early one may come when no launch waits any more
                self.cancel_timer(RETRY_TIMER)  # it replaces the round the timer would start
                waiter = self.launch_waiter
                start_phase(self, "launch", functools.partial(retry_launch, self), waiter)
        elif isinstance(message, StopRetrying):
            await stop_retrying(self, message)
        elif isinstance(message, Envelope):
            reply = await self._request(message)
            if reply is not None:  # None: a launch waiting to retry answers later
                message.answer(reply)

    async def _request(self, env: Envelope) -> Any:
        req = env.payload
        if isinstance(req, m.Launch):
            return await launch(self, req, env)
        if isinstance(req, m.Exec):
            return await exec_task(self, req, env)
        if isinstance(req, m.Status):
            # a launch in flight has no nodes to look at yet (one waiting to retry, here), and
            # a phase under way is the one looking: answered from what is known
            looked_at = self.state is not C.TERMINATED and not busy(self)
            if looked_at and not self.data.pending_launch:
                await observe(self, "refresh")
            return m.OkReply()
        if self.state is C.TERMINATED:
            raise ClusterNotFound(f"cluster {self.id!r} does not exist")
        if isinstance(req, m.Stop):
            return await stop(self, env)
        if isinstance(req, m.Start):
            return await self._start(req, env)
        if isinstance(req, m.Down):
            return await down(self, env)
        if isinstance(req, m.Autostop):
            return await set_autostop(self, req)
        if isinstance(req, m.Cancel):
            return await self._cancel(req)
        raise InvalidRequest(f"cluster actor cannot handle {type(req).__name__}")

    # -- stop / start / down -------------------------------------------------------------

    def _accounting(self, new_state: ClusterStatus) -> dict[str, Any]:
        """Active time for cost-report: closes the UP interval when leaving UP."""
        data = self.data
        if self.state is C.UP and new_state is not C.UP and data.up_since:
            return {
                "active_seconds": data.active_seconds + time.time() - data.up_since,
                "up_since": None,
            }
        if new_state is C.UP and self.state is not C.UP:
            return {"up_since": time.time()}
        return {}

    async def _start(self, req: m.Start, env: Envelope) -> m.OkReply | None:
        if self.state is C.UP:
            return m.OkReply(f"cluster {self.id} is already UP")
        if self.state is C.STOPPED:
            await self.transition(E.START, "start requested")
        start_phase(self, "start", functools.partial(self._bring_up, req, env), env)
        return None

    async def _bring_up(self, req: m.Start, env: Envelope) -> m.OkReply:
        num_nodes = self.spec.num_nodes
        nodes = await provision(self, num_nodes, env)
        try:  # the stop unmounted the buckets: mounted again before a job can use the folders
            await remount(self, nodes, env)
        except ProvisionError as exc:  # the next launch mounts them again (not `--fast`'s skip)
            why = f"start of {self.id}: {exc.message}"
            await self.transition(E.PROVISION_FAILED, why, last_error=why, launch_files=None)
            raise ProvisionError(why) from None
        await apply_autostop_request(self, req.idle_minutes, req.down, nodes)
        await self.transition(E.PROVISIONED, "started", up_since=time.time(), last_error=None)
        schedule_autostop(self)
        schedule_health(self)
        return m.OkReply(f"cluster {self.id} is UP")

    async def _end_jobs(self, event: JobEvent, why: str, lost_rank: int | None = None) -> None:
        gone = ClusterGone(event, why, lost_rank=lost_rank)
        await quarantine.end_jobs(self.app, self.id, self.data.uid, gone)

    # -- cancel --------------------------------------------------------------------------

    async def _cancel(self, req: m.Cancel) -> m.Cancelled:
        jobs = await quarantine.cluster_jobs(self.app, self.id, self.data.uid)
        by_id = {quarantine.job_number(j.id): j for j in jobs}
        if req.all:
            wanted = [i for i, j in by_id.items() if not j.terminal]
        elif not req.job_ids:  # SkyPilot's job queue: the latest job that is RUNNING
            running = [i for i, j in by_id.items() if state_of(j, JobStatus) is JobStatus.RUNNING]
            wanted = [max(running)] if running else []
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
        for job_id in wanted:  # a quarantined job has no actor to see it end: removed here
            reason = quarantine.reason_of(self.app, by_id[job_id])
            if reason is not None:
                await quarantine.remove(self.app, by_id[job_id], reason)
        return m.Cancelled(job_ids=wanted)
