"""A job on a cluster: submitted to every node's agent, watched until it ends.

The agents run the job and are the truth about it; this actor submits (idempotently, by job
id), follows each rank with long polls, folds the ranks into one state, and stops the other
ranks of a gang when one fails.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from stixd.actors.jobs_submit import without_secrets
from stixd.actors.specs import JobData, JobSpec
from stixd.agent_client import AgentClient, AgentError, AgentUnreachable
from stixd.providers.base import NodeInfo
from stixd.runtime.actor import Actor
from stixd.runtime.machine import Machine
from stixd.store.db import Row
from stixproto.states import JobStatus

if TYPE_CHECKING:
    from stixd.app import App


class JobEvent(enum.Enum):
    SUBMITTED = "submitted"
    SETUP_STARTED = "setup_started"
    RUN_STARTED = "run_started"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    FAILED_SETUP = "failed_setup"
    FAILED_DRIVER = "failed_driver"
    CANCELLED = "cancelled"


J, E = JobStatus, JobEvent
_ENDINGS = {
    E.SUCCEEDED: J.SUCCEEDED,
    E.FAILED: J.FAILED,
    E.FAILED_SETUP: J.FAILED_SETUP,
    E.FAILED_DRIVER: J.FAILED_DRIVER,
    E.CANCELLED: J.CANCELLED,
}
# A job may be observed late, so it can skip forward (PENDING straight to SUCCEEDED), but it
# never moves back, and nothing leaves a terminal state.
JOB_TRANSITIONS: dict[tuple[JobStatus, JobEvent], JobStatus] = {
    (J.INIT, E.SUBMITTED): J.PENDING,
    (J.INIT, E.SETUP_STARTED): J.SETTING_UP,
    (J.INIT, E.RUN_STARTED): J.RUNNING,
    (J.PENDING, E.SETUP_STARTED): J.SETTING_UP,
    (J.PENDING, E.RUN_STARTED): J.RUNNING,
    (J.SETTING_UP, E.RUN_STARTED): J.RUNNING,
    **{(s, e): end for s in (J.INIT, J.PENDING, J.SETTING_UP) for e, end in _ENDINGS.items()},
    **{(J.RUNNING, e): end for e, end in _ENDINGS.items() if e is not E.FAILED_SETUP},
}

_EVENT_FOR_STATE = {
    J.PENDING: E.SUBMITTED,
    J.SETTING_UP: E.SETUP_STARTED,
    J.RUNNING: E.RUN_STARTED,
    **{end: e for e, end in _ENDINGS.items()},
}
_FAILURES = (J.FAILED_SETUP, J.FAILED, J.FAILED_DRIVER)
SUBMIT_ATTEMPTS = 30
WAIT_SECONDS = 20.0


@dataclass(frozen=True)
class Observed:
    rank: int
    job: dict[str, Any]


@dataclass(frozen=True)
class Submit:
    attempt: int


class ReleaseGang:
    """Timer message: retry releasing a gang whose release did not reach every node."""


@dataclass(frozen=True)
class ClusterGone:
    """The cluster under this job stopped or vanished; the job ends with `event`."""

    event: JobEvent
    why: str
    lost_rank: int | None = None
    """Set when one node stopped answering: the other ranks are still up and must be stopped."""


def fold(ranks: dict[int, JobStatus]) -> JobStatus:
    """One state for a gang from the state of each rank."""
    states = [ranks[r] for r in sorted(ranks)]
    for s in states:
        if s in _FAILURES:
            return s
    if J.CANCELLED in states:
        return J.CANCELLED
    if all(s is J.SUCCEEDED for s in states):
        return J.SUCCEEDED
    if any(s in (J.INIT, J.PENDING) for s in states):
        return J.PENDING
    if J.SETTING_UP in states:
        return J.SETTING_UP
    return J.RUNNING


class JobActor(Actor):
    kind = "job"
    machine = Machine("job", JOB_TRANSITIONS)
    state_type = JobStatus
    spec_type = JobSpec
    data_type = JobData
    spec: JobSpec
    data: JobData

    def __init__(self, row: Any, app: App) -> None:
        super().__init__(row, app.store, app.log)
        self.app = app
        self.nodes = [NodeInfo.from_dict(n) for n in self.spec.nodes]
        self.ranks: dict[int, JobStatus] = {n.rank: J.INIT for n in self.nodes}
        self.rank_jobs: dict[int, dict[str, Any]] = {}
        self.set_up: set[int] = set()  # ranks waiting at the gang gate after their setup
        self.released = False

    @staticmethod
    def is_terminal(state: Any) -> bool:
        return JobStatus(state).is_terminal

    async def transition(
        self,
        event: enum.Enum,
        why: str = "",
        *,
        new_spec: JobSpec | None = None,
        **data: Any,
    ) -> Any:
        """Every move leaves INIT or follows one: the agents hold the job (and start it from
        their own copy) or it ended, so the row forgets its secrets in the same write."""
        scrubbed = without_secrets(new_spec or self.spec)
        state = await super().transition(event, why, new_spec=scrubbed or new_spec, **data)
        if scrubbed is not None:
            await self.store.forget_overwritten()
        return state

    @classmethod
    def parent_of(cls, row: Row) -> str | None:
        """The cluster's uid, the middle part of the row's id (`job_row_id`)."""
        parts = row.id.rsplit("/", 2)
        return parts[1] if len(parts) == 3 else None

    def client(self, node: NodeInfo) -> AgentClient:
        return self.app.provider(self.spec.provider).connector(node)

    async def reconcile(self) -> None:
        if self.state is J.INIT:
            self.tell(Submit(attempt=1))
        else:
            self._watch_all()

    def _watch_all(self) -> None:
        for node in self.nodes:
            self.start_soon(self._watch, node)

    async def handle(self, message: Any) -> None:
        if isinstance(message, Submit):
            await self._submit(message.attempt)
        elif isinstance(message, Observed):
            await self._observed(message)
        elif isinstance(message, ReleaseGang) and not self.row.terminal:
            await self._release_gang_when_set_up()
        elif isinstance(message, ClusterGone) and not self.row.terminal:
            culprit: dict[str, Any] = {}
            if _ENDINGS[message.event] in _FAILURES:  # said on the finish line of a follower
                culprit = {"failed_rank": message.lost_rank, "reason": message.why}
            await self.transition(message.event, message.why, ended_at=time.time(), **culprit)
            if message.lost_rank is not None:
                self.ranks[message.lost_rank] = J.FAILED_DRIVER  # nothing to ask it to stop
                await self._stop_other_ranks(J.FAILED_DRIVER)

    async def _submit(self, attempt: int) -> None:
        if self.state is not J.INIT:
            return
        payload = self.spec.submit
        try:
            for node in self.nodes:
                await self.client(node).call(
                    "submit", deadline=15, **payload, node_rank=node.rank, workdir=node.workdir
                )
        except (AgentUnreachable, AgentError) as exc:
            if attempt >= SUBMIT_ATTEMPTS:
                await self.transition(
                    E.FAILED_DRIVER, f"could not submit to the agents: {exc}", ended_at=time.time()
                )
                return
            self.log.warning("submit_retry", attempt=attempt, error=str(exc))
            self.after("submit", min(0.2 * attempt, 2.0), Submit(attempt + 1))
            return
        await self.transition(E.SUBMITTED, "submitted to every node")
        self._watch_all()

    async def _watch(self, node: NodeInfo) -> None:
        known = "INIT"
        known_ready = False
        failures = 0
        lost_since: float | None = None
        grace = self.app.config.daemon.node_grace_seconds
        client = self.client(node)
        longest = client.long_poll_s or WAIT_SECONDS
        while True:
            poll, deadline = longest, longest + 10
            if lost_since is not None:  # no reconnect backoff or long poll stretches the grace
                poll = 0.0
                deadline = min(deadline, max(grace - (time.monotonic() - lost_since), 1.0))
            try:
                reply = await client.call(
                    "wait",
                    deadline=deadline,
                    job_id=self.spec.job_id,
                    state=known,
                    setup_done=known_ready,
                    timeout=poll,
                )
            except AgentUnreachable as exc:
                failures += 1
                lost_since = lost_since or time.monotonic()
                if failures in (1, 10) or failures % 100 == 0:
                    self.log.warning("agent_unreachable", rank=node.rank, error=str(exc))
                if time.monotonic() - lost_since >= grace:
                    why = f"node {node.rank} ({node.ip}) unreachable for {grace:g}s: {exc}"
                    self.tell(ClusterGone(E.FAILED_DRIVER, why, lost_rank=node.rank))
                    return
                left = grace - (time.monotonic() - lost_since)
                await anyio.sleep(max(min(0.1 * 2**failures, 5.0, left), 0.0))
                continue
            except AgentError as exc:
                self.log.warning("agent_error", rank=node.rank, error=str(exc))
                await anyio.sleep(1.0)
                continue
            failures, lost_since = 0, None  # back within the grace period: re-attached
            job = reply["job"]
            ready = bool(job.get("setup_done"))
            if job["state"] != known or ready != known_ready:
                known, known_ready = job["state"], ready
                self.tell(Observed(node.rank, job))
            if JobStatus(known).is_terminal:
                return

    async def _observed(self, message: Observed) -> None:
        self.ranks[message.rank] = JobStatus(message.job["state"])
        self.rank_jobs[message.rank] = message.job
        if message.job.get("setup_done"):
            self.set_up.add(message.rank)
        if self.row.terminal:
            return
        await self._release_gang_when_set_up()
        folded = fold(self.ranks)
        if folded.is_terminal and not all(s.is_terminal for s in self.ranks.values()):
            await self._stop_other_ranks(folded)
        if folded is self.state:
            return
        event = _EVENT_FOR_STATE[folded]
        if not self.machine.allows(self.state, event):
            return  # a rank lagging behind the others: the gang state does not move back
        await self.transition(event, self._why(folded), **self._times())

    def _culprit(self, state: JobStatus) -> int | None:
        """The rank that failed the gang: of those that ended `state`, the first to end."""
        bad = [r for r, s in self.ranks.items() if s is state]
        if not bad:
            return None
        return min(bad, key=lambda r: (self.rank_jobs.get(r, {}).get("ended_at") or 0.0, r))

    def _why(self, state: JobStatus) -> str:
        if state in _FAILURES:
            rank = self._culprit(state)
            job = self.rank_jobs.get(rank, {}) if rank is not None else {}
            said = f"rank {'?' if rank is None else rank} ended {state.value}"
            if job.get("reason"):  # the agent ended it, and says why
                return f"{said}: {job['reason']}"
            return f"{said} (exit code {job.get('exit_code')})"
        return f"ranks: {', '.join(f'{r}={s.value}' for r, s in sorted(self.ranks.items()))}"

    def _times(self) -> dict[str, Any]:
        """Start and end times; at the end, which rank ended the gang with what exit code.
        A cancelled job has no exit code (its processes were killed, none exited by itself)."""
        jobs = list(self.rank_jobs.values())
        started = [j["started_at"] for j in jobs if j.get("started_at")]
        ended = [j["ended_at"] for j in jobs if j.get("ended_at")]
        out: dict[str, Any] = {}
        if started:
            out["started_at"] = min(started)
        folded = fold(self.ranks)
        if folded.is_terminal:
            out["ended_at"] = max(ended) if ended else time.time()
            out["exit_code"] = 0 if folded is J.SUCCEEDED else None
            if folded in _FAILURES:
                rank = self._culprit(folded)
                job = self.rank_jobs.get(rank, {}) if rank is not None else {}
                code = job.get("exit_code")
                out["exit_code"] = code if isinstance(code, int) else None
                out["failed_rank"] = rank
                out["reason"] = job.get("reason")
        return out

    async def _release_gang_when_set_up(self) -> None:
        """Every node has run its setup: let them all start `run` together (idempotent)."""
        if self.released or not self.spec.submit.get("gang"):
            return
        if self.set_up != {n.rank for n in self.nodes}:
            return
        for node in self.nodes:
            try:
                await self.client(node).call("release", deadline=10, job_id=self.spec.job_id)
            except (AgentUnreachable, AgentError) as exc:
                self.log.warning("gang_release_failed", rank=node.rank, error=str(exc))
                self.after("release", 1.0, ReleaseGang())
                return
        self.released = True
        self.log.info("gang_released", ranks=len(self.nodes))

    async def _stop_other_ranks(self, folded: JobStatus) -> None:
        """A gang lives and dies together: one failed rank ends the others."""
        for node in self.nodes:
            if not self.ranks.get(node.rank, J.INIT).is_terminal:
                try:
                    await self.client(node).call(
                        "cancel", deadline=10, job_ids=[self.spec.job_id], all=False
                    )
                except (AgentUnreachable, AgentError) as exc:
                    self.log.warning("gang_cancel_failed", rank=node.rank, error=str(exc))
        self.log.info("gang_stopped", reason=folded.value)
