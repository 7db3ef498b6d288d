"""The FAKE provider's in-memory nodes and agents: for tests and benchmarks only, never real work.

A fake node runs no process. A job's life is a pure function of time: it starts when submitted
(after a gang's release), runs for its run seconds and ends SUCCEEDED, or FAILED with the exit
code its task asked for. Long polls (``wait``, ``tail``) sleep until the next change of that
function or until the node is told something (cancel, release, stop, preemption), so a thousand
fake jobs cost a thousand sleeping tasks of their callers, and no task of their own.

``FakeAgentClient.call`` keeps ``AgentClient.call``'s contract and answers with the real agent's
reply shapes, so the job and cluster actors drive fake nodes unchanged.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio

from stixd.agent_client import AgentClient, AgentError, AgentUnreachable

AGENT_PROTOCOL = 1
RUN_SECONDS_ENV = "STIX_FAKE_RUN_SECONDS"
EXIT_CODE_ENV = "STIX_FAKE_EXIT_CODE"
SETUP_SECONDS_ENV = "STIX_FAKE_SETUP_SECONDS"
MAX_WAIT_S = 3600.0
Clock = Callable[[], float]


@dataclass
class FakeJob:
    job_id: int
    name: str | None
    submitted_at: float
    setup_seconds: float | None
    """None: the job has no setup."""
    run_seconds: float
    exit_code: int
    gang: bool
    command: str
    released_at: float | None = None
    cancelled_at: float | None = None

    def setup_end(self) -> float:
        return self.submitted_at + (self.setup_seconds or 0.0)

    def run_start(self) -> float | None:
        if self.gang and self.setup_seconds is not None:
            return None if self.released_at is None else max(self.released_at, self.setup_end())
        return self.setup_end()

    def run_end(self) -> float | None:
        start = self.run_start()
        return None if start is None else start + self.run_seconds

    def state(self, now: float) -> str:
        end = self.run_end()
        if self.cancelled_at is not None and (end is None or self.cancelled_at < end):
            return "CANCELLED"
        if end is not None and now >= end:
            return "SUCCEEDED" if self.exit_code == 0 else "FAILED"
        start = self.run_start()
        if start is not None and now >= start:
            return "RUNNING"
        return "SETTING_UP" if self.setup_seconds is not None else "PENDING"

    def setup_done(self, now: float) -> bool:
        """Waiting at its gang's gate: set up, not yet released."""
        return self.gang and self.setup_seconds is not None and now >= self.setup_end()

    def next_change(self, now: float) -> float | None:
        """When ``state``/``setup_done`` next change by themselves (None: only when told)."""
        if self.cancelled_at is not None:
            return None
        times = [self.setup_end(), self.run_start(), self.run_end()]
        later = [t for t in times if t is not None and t > now]
        return min(later) if later else None

    def ended_at(self, now: float) -> float | None:
        state = self.state(now)
        if state == "CANCELLED":
            return self.cancelled_at
        if state in ("SUCCEEDED", "FAILED"):
            return self.run_end()
        return None

    def wire(self, now: float) -> dict[str, Any]:
        state = self.state(now)
        start = self.run_start()
        return {
            "job_id": self.job_id,
            "name": self.name,
            "state": state,
            "exit_code": self.exit_code if state in ("SUCCEEDED", "FAILED") else None,
            "submitted_at": self.submitted_at,
            "started_at": start if start is not None and now >= start else None,
            "ended_at": self.ended_at(now),
            "pid": None,
            "setup_done": self.setup_done(now),
        }

    def log(self, now: float, where: str) -> str:
        """What the job "printed" by `now`: a line when it runs, one when it ends."""
        state = self.state(now)
        text = ""
        if state not in ("PENDING", "SETTING_UP") or self.ended_at(now) is not None:
            text += (
                f"[fake] job {self.job_id} on {where} "
                f"runs for {self.run_seconds:g}s (nothing is executed): {self.command}\n"
            )
        if self.ended_at(now) is not None:
            text += f"[fake] job {self.job_id} ended {state} (exit code {self.exit_code})\n"
        return text


@dataclass
class FakeNode:
    """One in-memory node and the agent that would run on it."""

    cluster: str
    rank: int
    region: str
    address: str
    build: str
    clock: Clock
    booted_at: float
    running: bool = True
    jobs: dict[int, FakeJob] = field(default_factory=dict)
    autostop: dict[str, Any] | None = None
    autostop_set_at: float = 0.0
    _changed: anyio.Event = field(default_factory=anyio.Event)

    def changed(self) -> None:
        """Wake every long poll on this node (it re-reads the jobs)."""
        self._changed.set()
        self._changed = anyio.Event()

    def active(self, now: float) -> list[FakeJob]:
        terminal = ("SUCCEEDED", "FAILED", "CANCELLED")
        return [j for j in self.jobs.values() if j.state(now) not in terminal]

    def cancel(self, job_ids: list[int] | None) -> list[int]:
        now = self.clock()
        done = []
        for job in self.active(now):
            if job_ids is None or job.job_id in job_ids:
                job.cancelled_at = now
                done.append(job.job_id)
        if done:
            self.changed()
        return done

    def idle_since(self, now: float) -> float | None:
        if self.active(now):
            return None
        ended = [e for j in self.jobs.values() if (e := j.ended_at(now)) is not None]
        return max([self.booted_at, self.autostop_set_at, *ended])

    async def until_change(self, job: FakeJob, remaining: float) -> None:
        """Sleep until the job changes by itself, the node is told something, or `remaining`."""
        now = self.clock()
        nxt = job.next_change(now)
        pause = remaining if nxt is None else min(remaining, max(nxt - now, 0.0) + 0.001)
        with anyio.move_on_after(pause):
            await self._changed.wait()


Resolve = Callable[[str], FakeNode | None]


class FakeAgentClient(AgentClient):
    """A fake node's agent, in memory: the same ``call`` contract and replies as the real one.

    A node that is gone (preempted, terminated) or stopped does not answer: AgentUnreachable.
    """

    long_poll_s = MAX_WAIT_S
    """A node that goes away wakes its long polls at once (``FakeNode.changed``), so a poll
    may wait as long as the agent lets it: an idle job costs no wake-up until it changes."""

    def __init__(self, address: str, resolve: Resolve, default_run_seconds: float) -> None:
        super().__init__(self._no_stream, address)
        self._address = address
        self._resolve = resolve
        self._run_seconds = default_run_seconds

    @staticmethod
    async def _no_stream() -> Any:
        raise AgentUnreachable("a fake agent has no byte stream")

    def _node(self, op: str) -> FakeNode:
        node = self._resolve(self._address)
        if node is None or not node.running:
            why = "is gone (preempted or terminated)" if node is None else "is stopped"
            raise AgentUnreachable(f"fake agent {self.name} {why}; {op!r} not answered")
        return node

    async def call(self, op: str, *, deadline: float = 10.0, **fields: Any) -> dict[str, Any]:
        handler = _OPS.get(op)
        if handler is None:
            raise AgentError("unknown_op", f"unknown op {op!r}; known ops: {', '.join(_OPS)}")
        try:
            with anyio.fail_after(deadline):
                reply: dict[str, Any] = await handler(self, self._node(op), fields)
                return reply
        except TimeoutError:
            raise AgentUnreachable(
                f"fake agent {self.name} did not answer {op!r} in {deadline:g}s"
            ) from None

    # -- ops (the real agent's reply shapes) ---------------------------------------------

    async def _hello(self, node: FakeNode, f: dict[str, Any]) -> dict[str, Any]:
        now = node.clock()
        return {
            "ok": True,
            "protocol": AGENT_PROTOCOL,
            "build": node.build,
            "cluster": node.cluster,
            "rank": node.rank,
            "pid": None,
            "started_at": node.booted_at,
            "now": now,
            "idle_since": node.idle_since(now),
            "active_jobs": len(node.active(now)),
            "autostop": node.autostop,
            "num_gpus": 0.0,
        }

    async def _submit(self, node: FakeNode, f: dict[str, Any]) -> dict[str, Any]:
        job_id = _int(f, "job_id")
        job = node.jobs.get(job_id)
        if job is None:  # idempotent by id, as the real agent
            envs = f.get("envs") or {}
            setup = f.get("setup")
            job = FakeJob(
                job_id=job_id,
                name=f.get("name"),
                submitted_at=node.clock(),
                setup_seconds=_env_float(envs, SETUP_SECONDS_ENV, 0.0) if setup else None,
                run_seconds=_env_float(envs, RUN_SECONDS_ENV, self._run_seconds),
                exit_code=int(_env_float(envs, EXIT_CODE_ENV, 0)),
                gang=bool(f.get("gang")),
                command=" ".join(str(f.get("run") or "").split())[:200],
            )
            node.jobs[job_id] = job
            node.changed()
        return {"ok": True, "job": job.wire(node.clock())}

    async def _jobs(self, node: FakeNode, f: dict[str, Any]) -> dict[str, Any]:
        wanted = f.get("job_ids")
        now = node.clock()
        jobs = [j.wire(now) for i, j in sorted(node.jobs.items()) if wanted is None or i in wanted]
        return {"ok": True, "jobs": jobs}

    async def _wait(self, node: FakeNode, f: dict[str, Any]) -> dict[str, Any]:
        job = _job(node, _int(f, "job_id"))
        known, known_ready = str(f.get("state")), bool(f.get("setup_done", False))
        timeout = min(max(float(f.get("timeout") or 0.0), 0.0), MAX_WAIT_S)
        deadline = time.monotonic() + timeout
        while True:
            node = self._node("wait")  # a node preempted meanwhile stops answering
            wire = job.wire(node.clock())
            remaining = deadline - time.monotonic()
            if wire["state"] != known or wire["setup_done"] != known_ready or remaining <= 0:
                return {"ok": True, "job": wire}
            await node.until_change(job, remaining)

    async def _tail(self, node: FakeNode, f: dict[str, Any]) -> dict[str, Any]:
        job = _job(node, _int(f, "job_id"))
        offset = _int(f, "offset", 0)
        wait = min(max(float(f.get("wait") or 0.0), 0.0), MAX_WAIT_S)
        max_bytes = max(_int(f, "max_bytes", 1 << 20), 1)
        deadline = time.monotonic() + wait
        where = f"fake/{node.region} {node.cluster} node {node.rank}"
        while True:
            node = self._node("tail")
            now = node.clock()
            finished = job.ended_at(now) is not None
            text = job.log(now, where).encode()
            chunk = text[offset : offset + max_bytes]
            remaining = deadline - time.monotonic()
            if chunk or finished or remaining <= 0:
                end = offset + len(chunk)
                return {
                    "ok": True,
                    "data": chunk.decode(errors="replace"),
                    "offset": end,
                    "state": job.state(now),
                    "eof": finished and end >= len(text),
                }
            await node.until_change(job, remaining)

    async def _release(self, node: FakeNode, f: dict[str, Any]) -> dict[str, Any]:
        job = _job(node, _int(f, "job_id"))
        if job.released_at is None:
            job.released_at = node.clock()
            node.changed()
        return {"ok": True}

    async def _cancel(self, node: FakeNode, f: dict[str, Any]) -> dict[str, Any]:
        ids = f.get("job_ids")
        if f.get("all"):
            ids = None
        elif ids is None:
            raise AgentError("bad_request", 'cancel needs "job_ids" or "all": true')
        return {"ok": True, "cancelled": node.cancel(ids)}

    async def _autostop(self, node: FakeNode, f: dict[str, Any]) -> dict[str, Any]:
        minutes = f.get("idle_minutes")
        node.autostop = (
            None
            if minutes is None
            else {
                "idle_minutes": float(minutes),
                "down": bool(f.get("down")),
                "grace_minutes": float(f.get("grace_minutes") or 0.0),
            }
        )
        node.autostop_set_at = node.clock()
        return {"ok": True, "autostop": node.autostop}

    async def _upgrade(self, node: FakeNode, f: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True}  # a fake node always runs the daemon's build

    async def _shutdown(self, node: FakeNode, f: dict[str, Any]) -> dict[str, Any]:
        if f.get("kill_jobs"):
            node.cancel(None)
        node.running = False
        node.changed()
        return {"ok": True}


async def _fetch(client: FakeAgentClient, node: FakeNode, f: dict[str, Any]) -> dict[str, Any]:
    """A COPY mount's download: a fake node keeps no files (as its file syncs), so it only
    answers as the real agent does for the items it was handed."""
    items = f.get("items")
    if not isinstance(items, list):
        raise AgentError("bad_request", 'the field "items" must be a list')
    return {"files": len(items), "bytes": 0}


async def _mount(client: FakeAgentClient, node: FakeNode, f: dict[str, Any]) -> dict[str, Any]:
    """A bucket mount: a fake node has no FUSE; it answers as a real first mount does."""
    dest = f.get("dest")
    if not isinstance(dest, str) or not dest:
        raise AgentError("bad_request", 'the field "dest" must be a path')
    return {"dest": dest, "mounted": True}


def _int(f: dict[str, Any], name: str, default: int | None = None) -> int:
    value = f.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise AgentError("bad_request", f'the field "{name}" must be an integer')
    return value


def _env_float(envs: dict[str, Any], name: str, default: float) -> float:
    raw = envs.get(name)
    if raw is None or str(raw).strip() == "":
        return default
    try:
        return max(float(raw), 0.0)
    except ValueError:
        raise AgentError("bad_request", f"envs.{name} must be a number, not {raw!r}") from None


def _job(node: FakeNode, job_id: int) -> FakeJob:
    job = node.jobs.get(job_id)
    if job is None:
        raise AgentError("no_such_job", f"job {job_id} does not exist on this node")
    return job


_Op = Callable[[FakeAgentClient, FakeNode, dict[str, Any]], Awaitable[dict[str, Any]]]
_OPS: dict[str, _Op] = {
    "hello": FakeAgentClient._hello,
    "submit": FakeAgentClient._submit,
    "jobs": FakeAgentClient._jobs,
    "wait": FakeAgentClient._wait,
    "release": FakeAgentClient._release,
    "cancel": FakeAgentClient._cancel,
    "tail": FakeAgentClient._tail,
    "autostop": FakeAgentClient._autostop,
    "upgrade": FakeAgentClient._upgrade,
    "shutdown": FakeAgentClient._shutdown,
    "fetch": _fetch,
    "mount": _mount,
}
