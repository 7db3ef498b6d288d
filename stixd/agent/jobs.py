"""The job queue's behaviour: FIFO scheduling by GPUs, launching runners, cancelling, reaping.

Runs inside the agent's event loop; every method is quick and synchronous except the waits.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from pathlib import Path

from .procs import (
    group_members,
    is_same_process,
    kill_processes_with_env,
    signal_group,
    start_token,
)
from .pulse import Pulse
from .runner import RunnerContext, fork_runner, log_path, node_marker
from .spec import JobSpec
from .states import JobState
from .store import JobRow, JobStore

KILL_GRACE_S = 2.0
"""Between SIGTERM and SIGKILL to a cancelled job's process group."""
POLL_S = 0.05
_GPU_EPSILON = 1e-9

log = logging.getLogger("stix_agent.jobs")


class JobManager:
    def __init__(self, store: JobStore, ctx: RunnerContext, total_gpus: float) -> None:
        self.store = store
        self.ctx = ctx
        self.total_gpus = total_gpus
        self.changed = Pulse()
        """Fired whenever a job's record may have changed."""
        self._kills: dict[int, tuple[asyncio.Task[None], str | None]] = {}
        """Process groups inside their SIGTERM grace: pgid -> (escalation timer, start token)."""

    # -- queue ---------------------------------------------------------------------------

    def submit(self, spec: JobSpec) -> JobRow:
        """Queue a job; submitting an id that exists returns the existing job unchanged."""
        created = self.store.insert_job(spec, time.time())
        row = self.store.job(spec.job_id)  # as submitted: a new job is PENDING in the reply
        assert row is not None
        if created:
            log.info("job_submitted job_id=%d num_gpus=%s", spec.job_id, spec.num_gpus)
            self.schedule()
            self.changed.fire()
        return row

    def schedule(self) -> None:
        """Start pending jobs in id order while their GPUs fit; a misfit blocks those after it."""
        free = self.total_gpus - self.store.gpus_in_use()
        chosen: list[JobSpec] = []
        for job_id, gpus in self.store.pending_queue():
            if gpus > free + _GPU_EPSILON:
                break
            free -= gpus
            chosen.append(self.store.spec(job_id))
        if not chosen:
            return
        launched: list[tuple[JobSpec, int]] = []
        # A SQLite connection must not be open across fork(): the child's own connection would
        # share the library's per-file lock bookkeeping with it.
        self.store.close()
        try:
            for spec in chosen:
                try:
                    launched.append((spec, fork_runner(spec, self.ctx)))
                except OSError:
                    log.exception("fork_failed job_id=%d (retried on the next tick)", spec.job_id)
                    break
        finally:
            self.store.reopen()
        for spec, pid in launched:
            if self.store.record_launch(spec.job_id, pid, start_token(pid)):
                log.info("job_launched job_id=%d runner_pid=%d", spec.job_id, pid)
            else:
                log.warning("job_claimed_elsewhere job_id=%d runner_pid=%d", spec.job_id, pid)
        # each runner holds its job's spec: nothing restarts a job from the queue
        self.store.forget_secrets([spec.job_id for spec, _ in launched if spec.secrets])
        self.changed.fire()

    def refresh(self) -> None:
        """Take in what runners did: reap them, fail jobs whose runner vanished, start more."""
        self._reap()
        vanished = self._fail_vanished_runners()
        if self.store.changed_elsewhere() or vanished:
            self.schedule()
            self.changed.fire()

    def _reap(self) -> None:
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            log.debug("runner_reaped pid=%d", pid)

    def _fail_vanished_runners(self) -> bool:
        failed = False
        for row in self.store.active_jobs():
            if row.pid is None or is_same_process(row.pid, row.pid_start):
                continue
            # Conditional: a runner that recorded its result just before exiting keeps it.
            if self.store.transition(row.job_id, JobState.FAILED_DRIVER, ended_at=time.time()):
                log.warning("job_failed_driver job_id=%d runner_pid=%d", row.job_id, row.pid)
                self._terminate(row.pid, row.pid_start)
                failed = True
        return failed

    # -- cancelling ----------------------------------------------------------------------

    def cancel(self, job_ids: list[int] | None) -> list[int]:
        """Cancel the given jobs (all when None) that are not finished; returns those cancelled."""
        wanted = None if job_ids is None else set(job_ids)
        cancelled = []
        for row in self.store.active_jobs():
            if wanted is not None and row.job_id not in wanted:
                continue
            # Record first: a runner that is still starting then finds the job cancelled.
            if self.store.transition(row.job_id, JobState.CANCELLED, ended_at=time.time()):
                cancelled.append(row.job_id)
                log.info("job_cancelled job_id=%d runner_pid=%s", row.job_id, row.pid)
                if row.pid is not None:
                    self._terminate(row.pid, row.pid_start)
        if cancelled:
            self.store.forget_secrets(cancelled)
            self.schedule()
            self.changed.fire()
        return cancelled

    def fail_started(self, reason: str) -> list[int]:
        """End every job that has a runner as FAILED_DRIVER with ``reason`` (said in its log
        too) and stop its processes; jobs still waiting in the queue are left to run."""
        ended = []
        for row in self.store.active_jobs():
            if row.pid is None:
                continue
            if self.store.transition(
                row.job_id, JobState.FAILED_DRIVER, ended_at=time.time(), reason=reason
            ):
                ended.append(row.job_id)
                _say_in_log(log_path(self.ctx.logs_dir, row.job_id), reason)
                self._terminate(row.pid, row.pid_start)
        return ended

    def explain_lost_logs(self) -> None:
        """A job the agent ended whose log is gone gets one saying why (its old log was deleted
        with the node's files; writing this again after each deletion outlasts an `rm -rf`)."""
        for row in self.store.jobs():
            path = log_path(self.ctx.logs_dir, row.job_id)
            if row.reason and not path.exists():
                _say_in_log(path, row.reason)

    def _terminate(self, pgid: int, token: str | None) -> None:
        signal_group(pgid, token, signal.SIGTERM)
        if pgid not in self._kills or self._kills[pgid][0].done():
            task = asyncio.ensure_future(self._kill_after_grace(pgid, token))
            self._kills[pgid] = (task, token)

    async def _kill_after_grace(self, pgid: int, token: str | None) -> None:
        if not await _group_gone_within(pgid, KILL_GRACE_S):
            log.info("job_group_killed pgid=%d", pgid)
            signal_group(pgid, token, signal.SIGKILL)
            await _group_gone_within(pgid, 1.0)
        self._reap()
        self._kills.pop(pgid, None)

    async def cancel_all_and_wait(self) -> None:
        """Cancel every unfinished job and wait (a few seconds at most) for their groups to go;
        then kill what they left running outside their groups (a detached child)."""
        self.cancel(None)
        pending = [task for task, _ in self._kills.values() if not task.done()]
        if pending:
            await asyncio.wait(pending, timeout=KILL_GRACE_S + 2.0)
        marker = node_marker(self.ctx)
        for _ in range(round(2.0 / POLL_S)):
            if not kill_processes_with_env(marker):
                break
            await asyncio.sleep(POLL_S)
        self._reap()

    def kill_cancelled_now(self) -> None:
        """On exit: SIGKILL the groups still inside their grace period, and drop the timers."""
        for pgid, (task, token) in self._kills.items():
            if not task.done():
                task.cancel()
                signal_group(pgid, token, signal.SIGKILL)

    # -- waiting -------------------------------------------------------------------------

    def job(self, job_id: int) -> JobRow | None:
        return self.store.job(job_id)

    def active_count(self) -> int:
        return len(self.store.active_jobs())


async def _group_gone_within(pgid: int, seconds: float) -> bool:
    """Whether the process group empties within ``seconds``; nothing signals that, so poll."""
    for _ in range(max(1, round(seconds / POLL_S))):
        if not group_members(pgid):
            return True
        await asyncio.sleep(POLL_S)
    return not group_members(pgid)


def _say_in_log(path: Path, message: str) -> None:
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"stix-agent: {message}\n")
    except OSError:
        log.exception("job_log_note_failed path=%s", path)
