"""`stixctl jobs …`: managed jobs, each an actor the daemon drives to the end by itself."""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import msgspec

from stixd.actors import quarantine
from stixd.actors.job_pool import ApplyFor
from stixd.actors.managed_job import cluster_name, logs_dir
from stixd.actors.specs import (
    JobPoolData,
    JobPoolSpec,
    ManagedJobData,
    ManagedJobSpec,
    data_of,
    encode,
    spec_of,
    spec_or_none,
    state_of,
)
from stixd.app import App
from stixd.control import ownership
from stixd.runtime.mailbox import Envelope, reply_channel
from stixd.store import views
from stixd.store.db import Row, RowExists
from stixproto import messages as m
from stixproto import names
from stixproto.errors import (
    InternalError,
    InvalidRequest,
    JobNotFound,
    StixError,
    error_from_code,
)
from stixproto.states import ClusterStatus, ManagedJobStatus, PoolStatus

Emit = Callable[[Any], Awaitable[None]]
KIND = "managed_job"
POOL = "job_pool"
RECENT_ENDED = 50
"""`jobs queue` without --all: every live job and this many of the most recent ended ones."""
FOLLOW_POLL_S = 0.5


async def jobs_launch(
    app: App, req: m.JobsLaunch, emit: Emit, check: Callable[[Any], None]
) -> m.ManagedLaunched:
    if not req.tasks:
        raise InvalidRequest("jobs launch needs a task")
    if req.num_jobs < 1:
        raise InvalidRequest(f"--num-jobs must be at least 1, not {req.num_jobs}")
    if req.num_jobs > 1 and req.pool is None:
        raise InvalidRequest("--num-jobs runs several jobs on a pool: give --pool NAME too")
    for i, task in enumerate(req.tasks):
        if task.run is None and task.setup is None:
            which = "the task" if len(req.tasks) == 1 else f"task {i + 1}"
            raise InvalidRequest(f"{which} has nothing to run: a managed job needs a `run` command")
    made_for = ownership.made_for(app, [(c.source, c.values) for c in req.config])
    if req.pool is not None:
        pool = await _existing_pool(app, req.pool)
        if app.elsewhere is not None:  # its jobs run where the pool does: they talk to it
            forwarded, reply = await app.elsewhere(POOL, pool.id, req, emit)
            if forwarded:
                return reply  # type: ignore[no-any-return]
    else:
        for task in req.tasks:
            check(task)  # refused now, in validate's words, rather than FAILED_PRECHECKS later
            ownership.check_where(app, task, made_for.workspace)
    name = req.name or req.tasks[0].name or "job"
    if not names.is_valid(name, "managed job"):  # req.name was checked as the request decoded
        raise InvalidRequest(
            f"the task's name {names.shown(name)} cannot name a managed job "
            f"({names.rule('managed job')}); give the job one with -n NAME"
        )
    now = time.time()
    spec = ManagedJobSpec(
        name=name,
        tasks=[msgspec.to_builtins(t) for t in req.tasks],
        config=[msgspec.to_builtins(c) for c in req.config],
        submitted_at=now,
        resources=f"pool {req.pool}" if req.pool else _resources(req.tasks[0]),
        pool=req.pool,
        num_jobs=req.num_jobs,
        owner=made_for.owner,
        workspace=made_for.workspace,
    )
    made: list[Row] = []
    for rank in range(req.num_jobs):

        def numbered(job_id: int, rank: int = rank) -> Row:
            mine = msgspec.structs.replace(spec, job_rank=rank, cluster=cluster_name(name, job_id))
            return Row(
                kind=KIND, id=str(job_id), state=ManagedJobStatus.PENDING.value, version=0,
                spec=encode(mine), data=encode(ManagedJobData()),
            )  # fmt: skip

        # the insert is the allocation: two launches at once get different ids
        made.append(await app.store.insert_next(KIND, numbered, "submitted", f"managed job {name}"))
    for row in made:
        app.spawn(row)
    first = made[0]
    where = f"pool {req.pool}" if req.pool else f"cluster {row_cluster(first)}"
    ids = [int(r.id) for r in made]
    await emit(m.Progress(f"Managed job(s) {_ids(ids)} ({name}) submitted; {where}."))
    if req.detach or len(made) > 1:
        return m.ManagedLaunched(job_id=ids[0], name=name, status=first.state, job_ids=ids)
    state = await _follow_runs(app, first, emit)
    ended = await app.store.get(KIND, first.id)
    failure = data_of(ended, ManagedJobData).failure_reason if ended and ended.terminal else None
    return m.ManagedLaunched(job_id=ids[0], name=name, status=state, job_ids=ids, failure=failure)


def _pool(row: Row) -> str | None:
    """A managed job's pool; None also for a row whose spec no stix writes (listed, and
    removed, through quarantine)."""
    spec = spec_or_none(row, ManagedJobSpec)
    return spec.pool if spec is not None else None


def _name(row: Row) -> str | None:
    """A managed job's name; None also for a row whose spec no stix writes."""
    spec = spec_or_none(row, ManagedJobSpec)
    return spec.name if spec is not None else None


def _ids(ids: list[int]) -> str:
    return str(ids[0]) if len(ids) == 1 else f"{ids[0]}-{ids[-1]}"


async def _existing_pool(app: App, name: str) -> Row:
    row = await app.store.get(POOL, name)
    hidden = ownership.scope(app, True).hidden
    if row is None or row.terminal or ownership.workspace_of(row.spec) in hidden:
        pools = [
            r.id
            for r in await app.store.rows(POOL, include_terminal=False)
            if ownership.workspace_of(r.spec) not in hidden
        ]
        known = ", ".join(sorted(pools)) or "none"
        raise InvalidRequest(
            f"no pool {name!r} (pools: {known}); create it with `stixctl jobs pool apply`"
        )
    reason = quarantine.reason_of(app, row)
    if reason is not None:  # its jobs would wait for a worker forever
        raise quarantine.refusal(row, reason)
    return row


def _resources(task: Any) -> str:
    res = task.resources_or_default()
    parts = [f"{task.num_nodes}x"]
    if res.infra:
        parts.append(str(res.infra))
    if res.accelerators:
        parts.append(str(res.accelerators))
    if res.cpus:
        parts.append(f"cpus={res.cpus}")
    if res.use_spot:
        parts.append("[spot]")
    return " ".join(parts)


def row_cluster(row: Row) -> str:
    """The job's own cluster, stored at submission (jobs queue lists a thousand of them)."""
    spec = spec_or_none(row, ManagedJobSpec)
    stored, name = (spec.cluster, spec.name) if spec is not None else (None, None)
    if stored:
        return str(stored)
    return cluster_name(name, int(row.id)) if isinstance(name, str) and row.id.isdigit() else "-"


def _task_statuses(row: Row) -> list[str]:
    """What became of each task of a pipeline: done, this one, and the rest."""
    n, k = len(spec_of(row, ManagedJobSpec).tasks) or 1, data_of(row, ManagedJobData).task
    failed = row.terminal and state_of(row, ManagedJobStatus) is not ManagedJobStatus.SUCCEEDED
    rest = "CANCELLED" if failed else "PENDING"
    return ["SUCCEEDED"] * k + [row.state] + [rest] * (n - k - 1)


def _failed_record(row: Row, why: str) -> m.ManagedJobRecord:
    name = _name(row)
    return m.ManagedJobRecord(
        job_id=int(row.id) if row.id.isdigit() else -1,
        name=name if name is not None else "-",
        status=quarantine.FAILED_STATE[KIND],
        submitted_at=row.created_at,
        failure_reason=why,
    )


def record(row: Row, scope: ownership.Scope | None = None) -> m.ManagedJobRecord:
    spec, data = spec_of(row, ManagedJobSpec), data_of(row, ManagedJobData)
    duration = data.job_duration
    if state_of(row, ManagedJobStatus) is ManagedJobStatus.RUNNING and data.run_started_at:
        duration += time.time() - data.run_started_at
    return m.ManagedJobRecord(
        job_id=int(row.id),
        name=spec.name,
        status=row.state,
        submitted_at=spec.submitted_at if spec.submitted_at is not None else row.created_at,
        resources=spec.resources,
        started_at=data.started_at,
        ended_at=data.ended_at,
        job_duration=round(duration, 3),
        recoveries=data.recoveries,
        restarts=data.restarts,
        failure_reason=data.failure_reason,
        cluster=None if row.terminal else (data.worker or None) if spec.pool else row_cluster(row),
        task=data.task,
        tasks=len(spec.tasks) or 1,
        recovery_reasons=list(data.recovery_reasons),
        pool=spec.pool,
        task_statuses=_task_statuses(row),
        infra=data.run_infras[-1] if data.run_infras else None,
        run_infras=list(data.run_infras),
        user=scope.user(row.spec) if scope else None,
        workspace=scope.workspace(row.spec) if scope else None,
    )


async def jobs_queue(app: App, req: m.JobsQueue, emit: Emit) -> m.ManagedJobList:
    """Newest first. `all`: every job; `limit`: the newest so many, and how many it left
    out; neither: those in progress and the `RECENT_ENDED` that ended last. With `stream`,
    the records go in chunks, and `all` reads the store a page at a time."""
    store, live_only = app.store, req.skip_finished
    scope = ownership.scope(app, req.all_users)
    where = scope.where()

    def made(row: Row) -> m.ManagedJobRecord:
        return record(row, scope)

    def records(rows: list[Row]) -> list[m.ManagedJobRecord]:
        return [quarantine.shown(app, r, made, _failed_record) for r in rows]

    async def damaged() -> list[Row]:
        return [r for r in await views.damaged_managed_jobs(store) if scope.sees(r.spec)]

    if req.all and req.stream:
        async for page in views.managed_job_pages(store, live_only=live_only, where=where):
            page = [r for r in page if scope.sees(r.spec)]  # its damaged rows are unfiltered
            for start in range(0, len(page), views.PAGE):
                await emit(m.ManagedJobRows(jobs=records(page[start : start + views.PAGE])))
        return m.ManagedJobList(jobs=[])
    hidden = 0
    if req.all or req.limit is not None:
        limit = None if req.all else req.limit
        rows = await views.newest_managed_jobs(store, live_only=live_only, limit=limit, where=where)
        if live_only and limit is None:
            rows += await damaged()
        if limit is not None and len(rows) >= limit:
            count = await views.count_managed_jobs(store, live_only=live_only, where=where)
            hidden = count - limit
    else:
        rows = await views.newest_managed_jobs(store, live_only=True, where=where)
        rows += await damaged()
        if not live_only:
            rows += await views.ended_managed_jobs(store, RECENT_ENDED, where)
        rows.sort(key=_number, reverse=True)
    jobs = records(rows)
    if req.stream:
        for start in range(0, len(jobs), views.PAGE):
            await emit(m.ManagedJobRows(jobs=jobs[start : start + views.PAGE]))
        jobs = []
    return m.ManagedJobList(jobs=jobs, hidden=max(hidden, 0))


def _number(row: Row) -> int:
    return int(row.id) if row.id.isdigit() else -1


async def _select(
    app: App, ids: list[int], name: str | None, all_: bool, pool: str | None = None
) -> list[Row]:
    rows = await app.store.rows(KIND)
    if all_ or pool is not None or name is not None:  # a user's are theirs only
        rows = [r for r in rows if ownership.acts_on_all() or ownership.mine(r)]
    if all_:
        return [r for r in rows if not r.terminal]
    if pool is not None:
        return [r for r in rows if not r.terminal and _pool(r) == pool]
    if name is not None:
        named = [r for r in rows if _name(r) == name]
        if not named:
            raise JobNotFound(f"no managed job named {name!r}")
        return [r for r in named if not r.terminal] or named[-1:]
    if not ids:
        raise InvalidRequest("name the managed jobs to cancel: IDs, -n NAME, -p POOL or --all")
    by_id = {_number(r): r for r in rows}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise JobNotFound(f"no managed job {missing[0]}")
    return [by_id[i] for i in ids]


async def jobs_cancel(app: App, req: m.JobsCancel) -> m.Table:
    rows = await _select(app, req.job_ids, req.name, req.all, req.pool)
    for row in rows:
        missing = JobNotFound(f"no managed job {row.id}")
        ownership.check_acts(app, row, f"managed job {row.id}", missing)
    lines: list[str] = []
    result: list[dict[str, Any]] = []
    for row in rows:
        reason = quarantine.reason_of(app, row)
        if reason is not None:
            text = await quarantine.remove(app, row, reason)
        elif row.terminal:
            text = f"managed job {row.id} already ended {row.state}"
        else:
            reply = await _ask(app, row, m.JobsCancel(job_ids=[int(row.id)]))
            text = reply.message
        lines.append(text)
        result.append({"job_id": _number(row), "message": text})
    if not rows:
        lines.append("No managed job to cancel.")
    return m.Table(text="\n".join(lines), rows=result)


async def _no_progress(item: Any) -> None:
    """A managed job's or pool's answer is its final reply alone."""


async def _ask(app: App, row: Row, payload: Any, local: Any = None) -> Any:
    """Hand a request to the row's actor (started if needed) and wait for its answer; the
    replica that runs the actor answers, when that is another. `local`: what this replica's
    actor is told instead of `payload` (the request with what only the handler knows)."""
    what = "pool" if row.kind == POOL else "managed job"
    if app.elsewhere is not None:  # several replicas: the one that runs the actor answers
        forwarded, reply = await app.elsewhere(row.kind, row.id, payload, _no_progress)
        if forwarded:
            return m.OkReply(reply.text) if isinstance(reply, m.Table) else reply
    child = app.supervisor.get(row.kind, row.id)
    if child is not None and child.failed and row.terminal and row.quarantined is None:
        app.supervisor.forget(row.kind, row.id)  # an ended pool's name starts afresh
        child = None
    if child is None:
        child = app.spawn(row)
    reason = row.quarantined or child.failed
    if reason is not None:
        if isinstance(payload, m.PoolDown | m.JobsCancel):
            return m.OkReply(await quarantine.remove(app, row, reason))
        raise quarantine.refusal(row, reason)
    send, receive = reply_channel()
    told = Envelope(payload=payload if local is None else local, reply=send)
    if not app.supervisor.tell(row.kind, row.id, told):
        raise InternalError(f"{what} {row.id} has no actor")
    async with receive:
        async for item in receive:
            if isinstance(item, m.ErrorReply):
                raise error_from_code(item.code, item.message)
            if isinstance(item, m.FINAL_REPLIES):
                return item
    raise InternalError(f"{what} {row.id} stopped before answering")


async def jobs_logs(app: App, req: m.JobsLogs, emit: Emit) -> m.LogsEnd:
    if req.job_id is not None:
        row = await app.store.get(KIND, str(req.job_id))
        if row is None:
            raise JobNotFound(f"no managed job {req.job_id}")
    else:
        rows = await app.store.rows(KIND)
        if req.name is not None:
            rows = [r for r in rows if _name(r) == req.name]
        if not rows:
            what = f" named {req.name!r}" if req.name else ""
            raise JobNotFound(f"no managed job{what} yet")
        row = max(rows, key=_number)
    missing = JobNotFound(f"no managed job {row.id}")
    ownership.check_acts(app, row, f"managed job {row.id}", missing)
    if req.status_only:
        state = row.state
    else:
        state = await _follow_files(app, row, emit, req.follow, controller=req.controller)
    ended = await app.store.get(KIND, row.id) or row
    failure = data_of(ended, ManagedJobData).failure_reason if ended.terminal else None
    return m.LogsEnd(cluster=row_cluster(row), job_id=int(row.id), status=state, failure=failure)


async def _follow_runs(app: App, row: Row, emit: Emit) -> str:
    return await _follow_files(app, row, emit, True, controller=False)


def _files(d: Path, controller: bool) -> list[Path]:
    if controller:
        return [d / "controller.log"]
    runs = [p for p in d.glob("run-*.log") if p.stem[4:].isdigit()]
    return sorted(runs, key=lambda p: int(p.stem[4:]))


async def _follow_files(app: App, row: Row, emit: Emit, follow: bool, *, controller: bool) -> str:
    """Send the job's log files (each run's output, or the controller's decisions) and, with
    `follow`, what they gain until the job ends. The files outlive the job's clusters."""
    d = logs_dir(app.home, int(row.id))
    offsets: dict[Path, int] = {}
    many = not controller

    async def drain() -> None:
        for path in _files(d, controller):
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue
            at = offsets.get(path)
            if at is None:
                at = 0
                if many and len(offsets) > 0:
                    await emit(m.Progress(f"{path.stem}: the task runs again"))
            if size > at:
                with path.open("rb") as f:
                    f.seek(at)
                    data = f.read(size - at)
                await emit(m.LogChunk(data.decode(errors="replace")))
            offsets[path] = size

    while True:
        current = await app.store.get(KIND, row.id)
        over = current is None or current.terminal or quarantine.reason_of(app, current) is not None
        await drain()
        if over or not follow:
            return current.state if current else row.state
        with anyio.move_on_after(FOLLOW_POLL_S):
            await app.watch.wait_for(KIND, row.id, lambda r: r is None or r.terminal)


# -- pools ---------------------------------------------------------------------------------


async def _ask_pool(
    app: App, name: str, payload: Any, *, create: bool = False, local: Any = None
) -> Any:
    row = await app.store.get(POOL, name)
    if row is not None and not (create and row.terminal):  # (a name that is down starts afresh)
        missing = JobNotFound(f"no pool {name!r}")
        ownership.check_acts(app, row, f"pool {name}", missing, shared_if_ownerless=True)
    if row is None:
        if not create:
            raise JobNotFound(f"no pool {name!r}")
        try:
            row = await app.store.insert(
                Row(kind=POOL, id=name, state=PoolStatus.DOWN.value, terminal=True, version=0),
                "created",
            )
        except RowExists:
            row = await app.store.get(POOL, name)
            assert row is not None
    return await _ask(app, row, payload, local)


async def pool_apply(app: App, req: m.PoolApply, check: Callable[[Any], None]) -> m.OkReply:
    if not re.fullmatch(r"[a-z][a-z0-9-]{0,40}", req.name):
        raise InvalidRequest(
            f"pool name {req.name!r}: use lowercase letters, digits and '-', starting with a letter"
        )
    if req.task.pool is None:
        raise InvalidRequest("a pool file needs a `pool:` section (e.g. `pool: {workers: 2}`)")
    check(req.task)
    made = ownership.made_for(app, [(c.source, c.values) for c in req.config])
    applied = ApplyFor(req, made.owner, made.workspace)
    reply: m.OkReply = await _ask_pool(app, req.name, req, create=True, local=applied)
    return reply


async def pool_status(app: App, req: m.PoolStatusReq) -> m.Table:
    hidden = ownership.scope(app, True).hidden  # every visible pool, with an owner or none
    rows = [
        r
        for r in await app.store.rows(POOL, include_terminal=False)
        if ownership.workspace_of(r.spec) not in hidden
    ]
    if req.names:
        wanted = set(req.names)
        missing = wanted - {r.id for r in rows}
        if missing:
            raise JobNotFound(f"no pool {sorted(missing)[0]!r}")
        rows = [r for r in rows if r.id in wanted]
    jobs = [j for j in await app.store.rows(KIND, include_terminal=False) if _pool(j)]
    out: list[dict[str, Any]] = []
    lines: list[str] = []
    for row in rows:
        reason = quarantine.reason_of(app, row)
        if reason is None:
            try:
                entry, text = await _pool_entry(app, row, jobs)
                msgspec.msgpack.encode(entry)  # every number fits the wire
            except Exception as exc:  # the row's own damage, shown on its line and logged
                reason = f"the stored row cannot be shown: {type(exc).__name__}: {exc}"
                app.log.warning("row_unshowable", kind=row.kind, id=row.id, reason=reason)
        if reason is not None:
            why = quarantine.explain(POOL, row.id, reason)
            state = quarantine.FAILED_STATE[POOL]
            entry = {"pool": row.id, "status": state, "workers": [], "ready": 0,
                     "queued_jobs": [], "failed": {}, "failure_reason": why}  # fmt: skip
            text = [f"Pool {row.id}: {state}, {why}"]
        out.append(entry)
        lines += text
    if not rows:
        lines.append("No pools.")
    return m.Table(text="\n".join(lines), rows=out)


async def _pool_entry(app: App, row: Row, jobs: list[Row]) -> tuple[dict[str, Any], list[str]]:
    """One pool's `pool status` entry and lines."""
    spec, data = spec_of(row, JobPoolSpec), data_of(row, JobPoolData)
    claims = dict(data.claims)
    size = spec.workers
    workers = []
    ready = 0
    for i in range(size):
        name = f"{row.id}-{i}"
        crow = await app.store.get("cluster", name)
        cstate = state_of(crow, ClusterStatus) if crow is not None else None
        workers.append(
            {
                "worker": name,  # in-flight STOPPING/TERMINATING show as SkyPilot's INIT
                "status": cstate.shown if cstate is not None else (crow.state if crow else "-"),
                "job_id": claims.get(name),
            }
        )
        ready += cstate is ClusterStatus.UP
    queued = [
        _number(j)
        for j in jobs
        if _pool(j) == row.id and state_of(j, ManagedJobStatus) is ManagedJobStatus.PENDING
    ]
    failed = data.failed
    entry = {
        "pool": row.id,
        "status": row.state,
        "workers": workers,
        "ready": ready,
        "queued_jobs": queued,
        "failed": failed,
    }
    lines = [
        f"Pool {row.id}: {row.state}, {ready}/{len(workers)} worker(s) up, "
        f"{len(claims)} busy, {len(queued)} job(s) waiting"
    ]
    for w in workers:
        job = f"job {w['job_id']}" if w["job_id"] is not None else "idle"
        lines.append(f"  {w['worker']:<24} {w['status']:<12} {job}")
    for worker, why in sorted(failed.items()):
        lines.append(f"  {worker}: {why}")
    return entry, lines


def _may_act(app: App, row: Row) -> bool:
    try:
        ownership.check_acts(app, row, "pool", JobNotFound("pool"), shared_if_ownerless=True)
    except StixError:
        return False
    return True


async def pool_down(app: App, req: m.PoolDown) -> m.Table:
    if req.all:  # every pool the caller may tear down (an admin's: every one)
        names = [
            r.id for r in await app.store.rows(POOL, include_terminal=False) if _may_act(app, r)
        ]
    elif req.names:
        names = req.names
    else:
        raise InvalidRequest("name the pools to tear down, or --all")
    lines = []
    for name in names:
        reply = await _ask_pool(app, name, req)
        lines.append(reply.message)
    return m.Table(text="\n".join(lines) or "No pools.", rows=[{"pool": n} for n in names])
