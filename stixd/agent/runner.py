"""The runner: a process forked from the agent per job, leading its own process group.

It runs the job's setup then run with ``/bin/bash -c``, appends their output to the job's log and
records each state itself, so a job keeps running and its result is recorded while the agent is
down. Forking (instead of starting a new interpreter) keeps submit-to-RUNNING latency to a few ms.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import NoReturn

from . import gate
from .mount import flush_all
from .procs import close_inherited_fds, start_token
from .spec import JobSpec, job_environment
from .states import JobState
from .store import JobStore

# Signals the agent handles in Python. They are blocked across fork() so that none reaches the
# child before it has dropped the agent's handlers (which would wake the agent's event loop).
_HANDLED_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGCHLD})
_RUNNER_BUG_EXIT = 70


@dataclasses.dataclass(frozen=True)
class RunnerContext:
    node_dir: Path
    db_path: Path
    logs_dir: Path
    notify_fd: int
    """Write end of the agent's wake-up pipe; the runner writes a byte after each state change."""
    job_umask: int = 0o022
    """What setup and run get; the agent and runner keep 077 for their own files."""


GATE_POLL_S = 0.02
NODE_MARKER = "STIX_NODE_DIR"
"""Set in every job's environment to the agent's node directory: how a shutdown that kills the
node's jobs finds their detached children too (they leave the job's process group)."""


def node_marker(ctx: RunnerContext) -> str:
    return f"{NODE_MARKER}={ctx.node_dir}"


def log_path(logs_dir: Path, job_id: int) -> Path:
    return logs_dir / f"{job_id}.log"


def run_mark_path(logs_dir: Path, job_id: int) -> Path:
    """Where the job's run starts in its log (a byte offset), written once setup is over."""
    return logs_dir / f"{job_id}.run"


def read_run_mark(logs_dir: Path, job_id: int) -> int | None:
    try:
        text = run_mark_path(logs_dir, job_id).read_text()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _mark_run_start(ctx: RunnerContext, job_id: int) -> None:
    """Setup's output ends here (its process has exited): a reader that wants only the run's
    output (`launch -s`) starts at this offset."""
    path = run_mark_path(ctx.logs_dir, job_id)
    tmp = path.with_name(path.name + ".tmp")
    with contextlib.suppress(OSError):  # without it the reader shows the whole log
        tmp.write_text(str(os.fstat(1).st_size))
        os.replace(tmp, path)


def fork_runner(spec: JobSpec, ctx: RunnerContext) -> int:
    """Fork a runner for ``spec`` and return its pid. The caller must hold no SQLite connection."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _HANDLED_SIGNALS)
    try:
        pid = os.fork()
        if pid == 0:
            _runner_main(spec, ctx, previous)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    return pid


def _runner_main(spec: JobSpec, ctx: RunnerContext, sigmask: set[int | signal.Signals]) -> NoReturn:
    """Never returns: the runner ends with os._exit and never touches the agent's event loop."""
    code = _RUNNER_BUG_EXIT
    try:
        signal.set_wakeup_fd(-1)
        for sig in _HANDLED_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        os.setsid()
        signal.pthread_sigmask(signal.SIG_SETMASK, sigmask)
        _detach_from_agent(ctx, spec.job_id)
        code = _run_job(spec, ctx)
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
    finally:
        os._exit(code)


def _detach_from_agent(ctx: RunnerContext, job_id: int) -> None:
    """Drop the agent's sockets, lock and files; point stdio at /dev/null and the job's log."""
    logging.root.handlers.clear()
    logging.disable(logging.CRITICAL)
    close_inherited_fds(keep={ctx.notify_fd})
    devnull = os.open(os.devnull, os.O_RDONLY)
    log_fd = os.open(
        str(log_path(ctx.logs_dir, job_id)), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600
    )
    os.dup2(devnull, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(devnull)
    os.close(log_fd)


def _notify(ctx: RunnerContext) -> None:
    # OSError: the agent that forked us is gone or busy; its successor polls the database.
    with contextlib.suppress(OSError):
        os.write(ctx.notify_fd, b"\0")


def _run_stage(script: str, env: dict[str, str], cwd: Path, umask: int) -> int:
    private = os.umask(umask)  # Popen's umask= needs Python 3.9; nodes may have 3.7
    try:
        proc = subprocess.Popen(
            ["/bin/bash", "-c", script], cwd=str(cwd), env=env, stdin=subprocess.DEVNULL
        )
    finally:
        os.umask(private)
    returncode = proc.wait()
    return 128 - returncode if returncode < 0 else returncode


def _environment(spec: JobSpec, ctx: RunnerContext, *, setup: bool) -> dict[str, str]:
    return {**job_environment(spec, os.environ, setup=setup), NODE_MARKER: str(ctx.node_dir)}


def _workdir(spec: JobSpec, ctx: RunnerContext) -> Path:
    if spec.workdir is None:  # HOME: never stix's own node directory, which a job could clean
        return Path(os.path.expanduser("~"))
    path = Path(os.path.expanduser(spec.workdir))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _wait_at_gate(spec: JobSpec, ctx: RunnerContext, store: JobStore) -> bool:
    """After setup, wait for the daemon to release the whole gang; False if the job ended."""
    gate.mark_ready(ctx.node_dir, spec.job_id)
    _notify(ctx)
    while not gate.released(ctx.node_dir, spec.job_id):
        row = store.job(spec.job_id)
        if row is None or row.state.terminal:
            return False
        time.sleep(GATE_POLL_S)
    return True


def _flushed(spec: JobSpec, ctx: RunnerContext, final: JobState) -> JobState:
    """A job counts as finished once the buckets its task mounts on its node hold what it
    wrote (MOUNT_CACHED writes back later): wait for their write-back queues to empty; one that
    does not within the bound fails the job, saying so in its log."""
    problem = flush_all(ctx.node_dir, dests=spec.mounts)
    if problem is None:
        return final
    print(f"stix-agent: {problem}; the job is marked failed", file=sys.stderr, flush=True)
    return JobState.FAILED if final is JobState.SUCCEEDED else final


def _run_job(spec: JobSpec, ctx: RunnerContext) -> int:
    me = os.getpid()
    store = JobStore(ctx.db_path)
    job_id = spec.job_id

    def move(target: JobState, **fields: object) -> bool:
        moved = store.transition(job_id, target, runner_pid=me, **fields)
        if moved:
            _notify(ctx)
        return moved

    claim = {"pid": me, "pid_start": start_token(me)}
    try:
        cwd = _workdir(spec, ctx)
    except OSError as exc:
        print(f"stix-agent: cannot use workdir {spec.workdir!r}: {exc}", file=sys.stderr)
        move(JobState.FAILED_DRIVER, ended_at=time.time(), **claim)
        return 0

    if spec.setup is not None:
        if not move(JobState.SETTING_UP, **claim):
            return 0  # cancelled, or another runner claimed the job first
        code = _run_stage(spec.setup, _environment(spec, ctx, setup=True), cwd, ctx.job_umask)
        if code != 0:
            final = _flushed(spec, ctx, JobState.FAILED_SETUP)
            move(final, exit_code=code, ended_at=time.time())
            return 0
        if spec.gang and not _wait_at_gate(spec, ctx, store):
            return 0  # the job ended (cancelled) while its gang was still setting up
    if spec.run is None:
        move(_flushed(spec, ctx, JobState.SUCCEEDED), exit_code=0, ended_at=time.time(), **claim)
        return 0
    _mark_run_start(ctx, job_id)
    if not move(JobState.RUNNING, started_at=time.time(), **claim):
        return 0
    code = _run_stage(spec.run, _environment(spec, ctx, setup=False), cwd, ctx.job_umask)
    final = _flushed(spec, ctx, JobState.SUCCEEDED if code == 0 else JobState.FAILED)
    move(final, exit_code=code, ended_at=time.time())
    return 0
