"""Reading a job's logs from the agents: follow with long polls, or print what is there.

Shared by the `logs` request and the managed-job actor, which keeps a copy of its runs' logs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from stixd.actors import quarantine
from stixd.actors.jobs_submit import job_row_id
from stixd.actors.specs import ClusterData, JobData, JobSpec, data_of, spec_of, state_of
from stixd.agent_client import AgentError, AgentUnreachable
from stixd.providers.base import NodeInfo
from stixd.store.db import Row
from stixproto import messages as m
from stixproto.errors import ClusterNotFound, InvalidRequest, JobNotFound
from stixproto.states import JobStatus

if TYPE_CHECKING:
    from stixd.app import App

Emit = Callable[[Any], Awaitable[None]]
POLL_WAIT = 10.0
CHUNK = 1 << 20
SETTLE_SECONDS = 30.0
FAILED_STATES = (JobStatus.FAILED, JobStatus.FAILED_SETUP, JobStatus.FAILED_DRIVER)


async def find_job(app: App, cluster: str, job_id: int | None) -> Row:
    crow = await app.store.get("cluster", cluster)
    if crow is not None and crow.quarantined is not None:
        raise quarantine.refusal(crow, crow.quarantined)
    uid = data_of(crow, ClusterData).uid if crow is not None else None
    if crow is None or not uid:
        raise ClusterNotFound(f"cluster {cluster!r} does not exist")
    if job_id is None:
        jobs = await quarantine.cluster_jobs(app, cluster, uid)
        if not jobs:
            raise JobNotFound(f"cluster {cluster!r} has no jobs yet")
        return max(jobs, key=lambda j: quarantine.job_number(j.id))
    row = await app.store.get("job", job_row_id(cluster, uid, job_id))
    if row is None:
        raise JobNotFound(f"cluster {cluster!r} has no job {job_id}")
    return row


def failure_text(row: Row | None) -> str | None:
    """What failed a job, in a few words for the client's finish line: the rank (of a gang)
    and its exit code, or why the agent or the daemon ended it."""
    state = state_of(row, JobStatus) if row is not None else None
    if row is None or state not in FAILED_STATES:
        return None
    data = data_of(row, JobData)
    rank, code, reason = data.failed_rank, data.exit_code, data.reason
    gang = len(spec_of(row, JobSpec).nodes) > 1
    who = f"rank {rank}" if gang and rank is not None else ""
    if reason:
        return f"{who}: {reason}" if who else str(reason)
    if code is None:
        return f"on {who}" if who else None
    stage = "setup" if state is JobStatus.FAILED_SETUP else ""
    if who and stage:
        return f"{who}'s setup exited with code {code}"
    if who or stage:
        return f"{who or stage} exited with code {code}"
    return f"exit code {code}"


def exit_code(row: Row) -> int | None:
    """The job's exit code: its failed rank's, 0 for a success, none for a cancelled job (a
    build before this one stored 0 for it too) or one that has not ended."""
    code = data_of(row, JobData).exit_code
    if not row.terminal or code is None:
        return None
    return None if state_of(row, JobStatus) is JobStatus.CANCELLED and code == 0 else code


def ending(row: Row | None) -> dict[str, Any]:
    """The fields of a followed job's final reply that say how it ended."""
    if row is None:
        return {}
    return {
        "exit_code": exit_code(row),
        "failed_rank": data_of(row, JobData).failed_rank,
        "failure": failure_text(row),
    }


def _prefixer(node: NodeInfo, num_nodes: int) -> Callable[[str], str]:
    if num_nodes <= 1:
        return lambda text: text
    label = "head" if node.rank == 0 else f"worker{node.rank}"
    prefix = f"({label}, rank={node.rank}) "

    def add(text: str) -> str:
        lines = text.splitlines(keepends=True)
        return "".join(prefix + line for line in lines)

    return add


def stream_job_logs(
    app: App,
    job: Row,
    emit: Emit,
    *,
    follow: bool,
    tail: int | None = None,
    node: int | None = None,
    from_run: bool = False,
) -> Coroutine[Any, Any, str]:
    """Send the job's log to `emit` (every rank's, or one `node`'s); with `follow`, until the
    job ends; with `from_run`, none of setup's output. Returns its state.

    Not a coroutine itself: what it awaits holds the few fields it reads, not the row (a
    managed job follows its run's log for as long as the run lasts, ten thousands at once)."""
    spec = spec_of(job, JobSpec)
    nodes = [NodeInfo.from_dict(n) for n in spec.nodes]
    if node is not None and node not in {n.rank for n in nodes}:
        raise InvalidRequest(
            f"job {spec.job_id} runs on ranks 0..{len(nodes) - 1}; there is no node {node}"
        )
    ranks = [n for n in nodes if node is None or n.rank == node]
    return _stream(
        app,
        _Source(job.id, job.state, spec.job_id, spec.provider, len(nodes)),
        ranks,
        emit,
        follow=follow,
        tail=tail,
        from_run=from_run,
    )


@dataclass(frozen=True, slots=True)
class _Source:
    """What following a job's log needs of its row."""

    row_id: str
    state: str
    job_id: int
    provider: str
    num_nodes: int


async def _stream(
    app: App,
    job: _Source,
    ranks: list[NodeInfo],
    emit: Emit,
    *,
    follow: bool,
    tail: int | None,
    from_run: bool,
) -> str:
    provider = app.provider(job.provider)
    job_id = job.job_id

    async def job_over() -> bool:
        row = await app.store.get("job", job.row_id)
        return row is None or row.terminal

    async def one_rank(node: NodeInfo) -> None:
        client = provider.connector(node)
        prefix = _prefixer(node, job.num_nodes)
        offset = 0
        backlog: list[str] | None = [] if tail is not None else None
        poll = client.long_poll_s or POLL_WAIT
        while True:
            catching_up = backlog is not None
            try:
                reply = await client.call(
                    "tail",
                    deadline=poll + 10,
                    job_id=job_id,
                    offset=offset,
                    wait=poll if follow and not catching_up else 0.0,
                    max_bytes=CHUNK,
                    **({"from_run": True} if from_run else {}),
                )
            except AgentUnreachable:
                if not follow or await job_over():
                    await emit(
                        m.Progress(f"node {node.rank} is unreachable; its log is not available")
                    )
                    return
                with anyio.move_on_after(1.0):  # the node may be back, or the job end, first
                    await app.watch.wait_for("job", job.row_id, lambda r: r is None or r.terminal)
                continue
            except AgentError as exc:
                if exc.code == "no_such_job" and follow and not await job_over():
                    await anyio.sleep(0.1)
                    continue
                return
            data: str = reply["data"]
            offset = int(reply["offset"])
            if backlog is not None:
                backlog.append(data)
                if data and not reply["eof"]:
                    continue
                lines = "".join(backlog).splitlines(keepends=True)
                data = "".join(lines[-tail:]) if tail else ""
                backlog = None
            if data:
                await emit(m.LogChunk(prefix(data)))
            if reply["eof"] or (not follow and not data):
                return

    if len(ranks) == 1:  # most jobs: no task group and task of their own to keep
        await one_rank(ranks[0])
    else:
        async with anyio.create_task_group() as tg:
            for info in ranks:
                tg.start_soon(one_rank, info)
    if follow:
        with anyio.move_on_after(SETTLE_SECONDS):
            row = await app.watch.wait_for("job", job.row_id, lambda r: r is None or r.terminal)
            return row.state if row else JobStatus.FAILED_DRIVER.value
    row = await app.store.get("job", job.row_id)
    return row.state if row else job.state
