"""One function per request: read the store, or hand the request to the actor that owns it."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Awaitable, Callable, Collection
from typing import Any

import anyio
import msgspec

from stixd.actors import KINDS, quarantine
from stixd.actors.asks import ask_cluster
from stixd.actors.cluster_retry import StopRetrying
from stixd.actors.joblogs import ending, exit_code, find_job, stream_job_logs
from stixd.actors.jobs_submit import infra_label
from stixd.actors.specs import (
    ClusterData,
    ClusterSpec,
    JobData,
    JobSpec,
    data_of,
    data_or_none,
    spec_of,
)
from stixd.actors.syncing import validate_mounts
from stixd.actors.volume_mounts import check_task as check_task_volumes
from stixd.app import VERSION, App
from stixd.config import ConfigError
from stixd.control import (
    catalog_cmds,
    fake_cmds,
    identity,
    identity_cmds,
    jobs_cmds,
    leak_cmds,
    ownership,
    plan_cmds,
    serve_cmds,
    ssh_cmds,
    task_reading,
    volume_cmds,
    workspaces,
)
from stixd.control.cluster_owners import OWNER_KINDS, Owner, cluster_owners, refuse_owned
from stixd.control.task_data import check_owned
from stixd.planner.catalog import KNOWN_CLOUDS
from stixd.planner.local_fit import check_fits_local
from stixd.planner.offers import OfferIndex
from stixd.planner.target import cloud_spec
from stixd.providers.abilities import ReachedElsewhere
from stixd.providers.base import NodeInfo
from stixd.store import views
from stixd.store.db import Row
from stixproto import messages as m
from stixproto.errors import (
    ClusterNotFound,
    InvalidConfig,
    InvalidRequest,
    InvalidTask,
    ProvisionError,
    TaskFieldError,
)
from stixproto.names import command
from stixproto.states import ClusterStatus
from stixproto.task import resources as task_resources
from stixproto.task.parsing import parse_cloud

Emit = Callable[[Any], Awaitable[None]]
REFRESH_AT_ONCE = 32


def known_infras(app: App) -> tuple[str, ...]:
    """Every infra a SkyPilot user may look for and this build cannot launch on: the registry's
    planned ones, then the catalog's other clouds. (A provider its config leaves off, like
    ``fake``, is not listed.)"""
    return tuple(dict.fromkeys((*app.infras.planned(), *KNOWN_CLOUDS)))


def _check_task(app: App, task: Any, workspace: str | None = None) -> None:
    """Refuse what cannot launch, in the words `stixctl validate` warns with; with a
    `workspace`, also what its allowed infras (and the requester) may not use."""
    validate_mounts(task)  # launch_problems first: null envs/secrets, missing local paths
    app.target(task, say_why_not=True)
    if workspace is not None:
        ownership.check_where(app, task, workspace)


def _missing(name: str) -> ClusterNotFound:
    return ClusterNotFound(f"cluster {name!r} does not exist")


async def _check_cluster(app: App, name: str) -> None:
    """Refuse acting on another's cluster (`ownership.check_acts`): one read of its row."""
    row = await app.store.get("cluster", name)
    if row is not None:
        ownership.check_acts(app, row, f"cluster {name}", _missing(name))


async def _check_cloud_plan(app: App, task: Any, emit: Emit) -> None:
    """A launch on a cloud needs its catalog (fetched when missing) and an instance that fits."""
    cloud, _ = app.target(task)
    if cloud in app.clouds():
        await catalog_cmds.with_catalog(
            app, emit, lambda c: cloud_spec(task, cloud, OfferIndex(c, app.infras)), [cloud]
        )


def _fits_here(app: App, task: Any) -> bool:
    try:
        check_fits_local(task, app.infras, app.machine_max_nodes())
    except InvalidTask:
        return False
    return True


async def launch(app: App, req: m.Launch, emit: Emit) -> Any:
    layers = [(layer.source, layer.values) for layer in req.config]
    try:
        app.config_for(layers)
    except ConfigError as exc:
        raise InvalidConfig(str(exc)) from None
    made = ownership.made_for(app, layers)
    name = req.cluster or f"stix-{secrets.token_hex(2)}"
    existing = await app.store.get("cluster", name)
    if existing is not None and not existing.terminal:  # a relaunch: the owner's to make
        ownership.check_acts(app, existing, f"cluster {name}", _missing(name))
    alternatives = task_resources.candidates(req.task.resources_or_default())
    named = [task_resources.placement(c).cloud for c in alternatives]
    if any(named) or not _fits_here(app, req.task):  # a local launch waits on no cloud's API
        await app.refresh_catalogs(only=named)  # a context that cannot be used is refused by name
    await check_owned(app, req.task)
    _check_task(app, req.task, made.workspace)
    await check_task_volumes(app, req.task, *app.target(req.task))
    await _check_cloud_plan(app, req.task, emit)
    req = msgspec.structs.replace(req, owner=made.owner, workspace=made.workspace)
    try:
        result: m.LaunchResult = await ask_cluster(app, name, req, emit, create=True)
    except anyio.get_cancelled_exc_class():
        if req.retry_until_up:  # Ctrl-C of the client ends the retries too
            app.supervisor.tell("cluster", name, StopRetrying(req, "the launch was interrupted"))
        raise
    if req.detach_setup and not req.detach and result.job_id is not None:
        return await follow_run_only(app, result, emit)
    return await _follow_unless_detached(app, result, req.detach, emit)


async def follow_run_only(app: App, result: m.LaunchResult, emit: Emit) -> m.LaunchResult:
    """`launch -s`: setup runs detached, as part of the job; the launch follows only the run."""
    assert result.job_id is not None
    job = await find_job(app, result.cluster, result.job_id)
    if spec_of(job, JobSpec).submit.get("setup") is not None:
        hint = command("logs", result.cluster, result.job_id)
        await emit(m.Progress(f"Setup runs detached (-s); its output is in `{hint}`."))
    state = await stream_job_logs(app, job, emit, follow=True, from_run=True)
    return m.LaunchResult(cluster=result.cluster, job_id=result.job_id, job_status=state)


async def exec_(app: App, req: m.Exec, emit: Emit) -> Any:
    validate_mounts(req.task)  # the cluster checks the fit against its own infra
    await _check_cluster(app, req.cluster)
    result: m.LaunchResult = await ask_cluster(app, req.cluster, req, emit)
    return await _follow_unless_detached(app, result, req.detach, emit)


async def _follow_unless_detached(
    app: App, result: m.LaunchResult, detach: bool, emit: Emit
) -> m.LaunchResult:
    if detach or result.job_id is None:
        return result
    job = await find_job(app, result.cluster, result.job_id)
    state = await stream_job_logs(app, job, emit, follow=True)
    end = ending(await app.store.get("job", job.id))
    return m.LaunchResult(cluster=result.cluster, job_id=result.job_id, job_status=state, **end)


def _failed_cluster(row: Row, why: str) -> m.ClusterRecord:
    known = row.kind == "cluster"
    return m.ClusterRecord(
        name=row.id,
        status=quarantine.FAILED_STATE["cluster"],
        infra="-",
        num_nodes=0,
        resources="" if known else f"a stored {row.kind!r}",
        launched_at=row.created_at,
        updated_at=row.updated_at,
        last_error=why,
    )


def every_port_infras(app: App) -> set[str]:
    """The infras whose nodes share this machine's network (``ReachesEveryPort``): every
    port of their clusters is reachable. Asked once per request, of each provider's
    abilities found once (an isinstance on a runtime-checkable protocol costs some 20 us)."""
    return {name for name in app.providers if app.look_abilities(name).every_port}


def ports_reached(app: App, row: Row, rec: m.ClusterRecord) -> m.ClusterRecord:
    """``rec`` with where its ports are reached, where its provider reaches them elsewhere
    than the head's IP (``ReachedElsewhere``: a Kubernetes load balancer), or why not yet."""
    provider = app.providers.get(spec_of(row, ClusterSpec).provider or "")
    nodes = data_of(row, ClusterData).nodes
    if not isinstance(provider, ReachedElsewhere) or not nodes:
        return rec
    try:
        host = provider.reachable_address(row.id, NodeInfo.from_dict(nodes[0]))
    except ProvisionError as exc:
        return msgspec.structs.replace(rec, ports_note=exc.message)
    except (KeyError, ValueError):  # a node row of an older daemon: its IP, as before
        return rec
    return msgspec.structs.replace(rec, ports_host=host)


def cluster_record(
    row: Row,
    owner: Owner | None = None,
    *,
    open_infras: Collection[str] = (),
    user: str | None = None,
    workspace: str | None = None,
) -> m.ClusterRecord:
    """`row`'s line of `status`; `open_infras`: those whose every port is reached
    (`every_port_infras`), `user` and `workspace` its columns of `status -u`."""
    data, spec = data_of(row, ClusterData), spec_of(row, ClusterSpec)
    placement = spec.placement
    autostop = data.autostop
    idle_since = data.idle_since
    minutes = autostop.idle_minutes if autostop else None
    nodes = data.nodes
    return m.ClusterRecord(
        name=row.id,
        status=ClusterStatus(row.state).shown,
        infra=infra_label(spec.provider, spec.pool),
        num_nodes=spec.num_nodes,
        resources=spec.resources,
        launched_at=float(data.launched_at or row.created_at),
        updated_at=row.updated_at,
        autostop_idle_minutes=minutes,
        autostop_down=bool(autostop and autostop.down),
        autostop_at=(idle_since + minutes * 60) if (idle_since and minutes is not None) else None,
        hourly_price=spec.hourly_price,
        head_ip=nodes[0]["ip"] if nodes else None,
        last_error=data.last_error,
        owner=owner.label if owner else None,
        ports=list((placement["ports"] if placement else spec.ports) or []),
        any_port=spec.provider in open_infras,
        activity=cluster_activity(row),
        user=user,
        workspace=workspace,
    )


def cluster_activity(row: Row) -> str | None:
    state = ClusterStatus(row.state)
    if state in (ClusterStatus.STOPPING, ClusterStatus.TERMINATING):
        return state.value.lower()
    if state is ClusterStatus.INIT and data_of(row, ClusterData).pending_launch:
        return "launching"
    return None


async def _refresh(app: App, names: list[str], req: m.Status, emit: Emit) -> None:
    """Every cluster's actor looks at its infra, up to ``REFRESH_AT_ONCE`` at the same time
    (one after another, N clusters on a cloud cost N round trips; at once, the aws provider
    asks EC2 about all of a region's in one call); the first error, in the given order, is
    raised once all are done."""
    limiter = anyio.CapacityLimiter(REFRESH_AT_ONCE)
    one_frame_at_a_time = anyio.Lock()
    errors: dict[str, Exception] = {}

    async def relay(item: Any) -> None:
        async with one_frame_at_a_time:
            await emit(item)

    async def ask(name: str) -> None:
        async with limiter:
            try:
                await ask_cluster(app, name, req, relay)
            except Exception as exc:  # raised below, after the others are done
                errors[name] = exc

    async with anyio.create_task_group() as tg:
        for name in names:
            tg.start_soon(ask, name)
    for name in names:
        if name in errors:
            raise errors[name]


async def _status_rows(
    app: App, req: m.Status, scope: ownership.Scope, live: dict[str, list[Row]]
) -> tuple[list[Row], int]:
    """The cluster rows `status` lists, and how many its limit left out. `live`: the live rows
    of `OWNER_KINDS`, and of clusters when every live one is listed (one statement for all)."""
    if req.clusters:  # named: anyone's, but never one of a private workspace of others
        rows = await views.clusters_named(app.store, req.clusters, live_only=not req.all)
        return [r for r in rows if ownership.workspace_of(r.spec) not in scope.hidden], 0
    if req.all:
        rows = await app.store.rows("cluster", include_terminal=True)
        return [r for r in rows if scope.sees(r.spec)], 0
    if req.limit is None:
        return [r for r in live["cluster"] if scope.sees(r.spec)], 0
    if app.cluster_split is None:
        app.cluster_split = views.ClusterSplit(app.store)
    own, owned = await app.cluster_split.names()
    if not scope.everything:
        keep = await views.live_clusters_of(app.store, scope.where())
        own, owned = [n for n in own if n in keep], [n for n in owned if n in keep]
    shown = [*own[-req.limit :], *owned[-req.limit :]]
    rows = await views.clusters_named(app.store, shown, live_only=True)
    return rows, len(own) + len(owned) - len(shown)


async def status(app: App, req: m.Status, emit: Emit) -> m.ClusterList:
    scope = ownership.scope(app, req.all_users)
    # The live rows of damaged flag, read once for every look-up below that lists them.
    damaged = await views.damaged_rows(app.store)
    every = not req.clusters and not req.all and req.limit is None
    kinds = ("cluster", *OWNER_KINDS) if every else OWNER_KINDS
    live = await views.live_of_kinds(app.store, kinds, damaged)
    rows, hidden = await _status_rows(app, req, scope, live)
    if req.refresh:
        await _refresh(app, [r.id for r in rows if not r.terminal], req, emit)
        now = {
            r.id: r
            for r in await views.clusters_named(app.store, [r.id for r in rows], live_only=False)
        }
        rows = [now[r.id] for r in rows if r.id in now]
        if not req.all:
            rows = [r for r in rows if not r.terminal]
        damaged = await views.damaged_rows(app.store)  # the others too, as they are now
        live = await views.live_of_kinds(app.store, OWNER_KINDS, damaged)
    owners = await cluster_owners(app, [r.id for r in rows], live)
    open_all = every_port_infras(app)
    one = len(req.clusters) == 1  # `status --endpoint(s) NAME`: where its ports are reached

    def made(r: Row) -> m.ClusterRecord:
        user, workspace = scope.user(r.spec), scope.workspace(r.spec)  # None without -u
        rec = cluster_record(
            r, owners.get(r.id), open_infras=open_all, user=user, workspace=workspace
        )
        return ports_reached(app, r, rec) if one and rec.ports else rec

    def records(some: list[Row]) -> list[m.ClusterRecord]:
        return quarantine.shown_each(app, some, made, _failed_cluster, m.ClusterRecord)

    strays: list[m.ClusterRecord] = []
    admin = scope.principal.role is identity.Role.ADMIN  # damaged rows are an admin's to remove
    for stray in await views.live_rows_not_of(app.store, KINDS, damaged) if admin else []:
        if not req.clusters or stray.id in req.clusters:
            why = stray.quarantined or f"no actor kind is called {stray.kind!r}"
            strays.append(_failed_cluster(stray, quarantine.explain(stray.kind, stray.id, why)))
    report = app.leak_report
    if req.stream:
        for start in range(0, len(rows), views.PAGE):
            chunk = records(rows[start : start + views.PAGE])
            await emit(m.ClusterRows(clusters=chunk))
        if strays:
            await emit(m.ClusterRows(clusters=strays))
    return m.ClusterList(
        clusters=[] if req.stream else [*records(rows), *strays],
        leaks=report.leaks if report else [],
        leaks_scanned_at=report.scanned_at if report else None,
        hidden=hidden,
    )


def _failed_job(row: Row, why: str) -> m.JobRecord:
    cluster, _ = quarantine.job_parts(row.id)
    return m.JobRecord(
        cluster=cluster,
        job_id=quarantine.job_number(row.id),
        name=None,
        status=quarantine.FAILED_STATE["job"],
        submitted_at=row.created_at,
        failure_reason=why,
    )


def job_record(row: Row) -> m.JobRecord:
    spec, data = spec_of(row, JobSpec), data_of(row, JobData)
    return m.JobRecord(
        cluster=spec.cluster,
        job_id=spec.job_id,
        name=spec.name,
        status=row.state,
        submitted_at=row.created_at,
        started_at=data.started_at,
        ended_at=data.ended_at,
        exit_code=exit_code(row),
        resources=spec.resources,
        failed_rank=data.failed_rank,
    )


def _uid(crow: Row) -> str | None:
    """Which launch of its name a cluster row is; None for a damaged row (shown failed by
    `status`, its jobs ended when it is removed)."""
    data = data_or_none(crow, ClusterData)
    return data.uid if data is not None else None


def _jobs_prefix(crow: Row) -> str | None:
    """What the ids of a cluster's jobs start with (`job_row_id`); None without a readable
    uid (a damaged row: no jobs listed, as `quarantine.cluster_jobs`)."""
    uid = _uid(crow)
    return f"{crow.id}/{uid}/" if isinstance(uid, str) and uid else None


def _prefixes_of(row_id: str) -> list[str]:
    """Every `a/b/...` prefix of a job's id ending at a slash: its cluster's among them."""
    return [row_id[: i + 1] for i, c in enumerate(row_id) if c == "/"][1:]


async def queue(app: App, req: m.Queue, emit: Emit) -> m.JobList:
    """Every cluster's jobs from one read of the clusters and one of their jobs (a query per
    500 clusters), never a query per cluster."""
    scope = ownership.scope(app, req.all_users)
    if req.clusters:  # named: anyone's, but never one of a private workspace of others
        found = await views.clusters_named(app.store, req.clusters, live_only=True)
        by_name = {r.id: r for r in found if ownership.workspace_of(r.spec) not in scope.hidden}
        for name in req.clusters:
            if name not in by_name:
                raise _missing(name)
        clusters = [by_name[name] for name in req.clusters]
    else:
        live = await app.store.rows("cluster", include_terminal=False)
        clusters = [r for r in live if scope.sees(r.spec)]
    prefixes = {crow.id: _jobs_prefix(crow) for crow in clusters}
    wanted = {p for p in prefixes.values() if p is not None}
    jobs_of: dict[str, list[Row]] = {}
    for jrow in await views.rows_under_each(app.store, "job", sorted(wanted)):
        for prefix in _prefixes_of(jrow.id):
            if prefix in wanted:
                jobs_of.setdefault(prefix, []).append(jrow)
    jobs: list[m.JobRecord] = []
    for crow in clusters:
        rows = jobs_of.get(prefixes[crow.id] or "", [])
        user = scope.user(crow.spec)
        for jrow in sorted(rows, key=lambda j: -quarantine.job_number(j.id)):
            if req.skip_finished and jrow.terminal:
                continue
            rec = quarantine.shown(app, jrow, job_record, _failed_job)
            jobs.append(msgspec.structs.replace(rec, user=user) if user else rec)
    return m.JobList(jobs=jobs)


async def logs(app: App, req: m.Logs, emit: Emit) -> m.LogsEnd:
    job = await find_job(app, req.cluster, req.job_id)
    ownership.check_acts(app, job, f"cluster {req.cluster}", _missing(req.cluster))
    reason = quarantine.reason_of(app, job)
    if reason is not None:  # where its log is (its nodes) is what the row no longer says
        raise quarantine.refusal(job, reason)
    job_id = spec_of(job, JobSpec).job_id
    if req.status_only:
        return m.LogsEnd(cluster=req.cluster, job_id=job_id, status=job.state, **ending(job))
    state = await stream_job_logs(app, job, emit, follow=req.follow, tail=req.tail, node=req.node)
    end = ending(await app.store.get("job", job.id))
    return m.LogsEnd(cluster=req.cluster, job_id=job_id, status=state, **end)


VERBS: dict[type, str] = {m.Down: "tear down", m.Stop: "stop", m.Autostop: "set autostop on"}


async def _each_cluster(app: App, names: list[str], all_: bool, req: Any, emit: Emit) -> m.OkReply:
    """`-a` acts on every cluster but those a managed job or pool keeps up, and with none left
    does nothing, quietly; a cluster such an owner keeps up is refused by name."""
    guarded = type(req) in VERBS
    if all_:
        rows = await app.store.rows("cluster", include_terminal=False)
        if not ownership.acts_on_all():  # a user's `-a` is every cluster of theirs
            rows = [r for r in rows if ownership.mine(r)]
        owners = await cluster_owners(app, [r.id for r in rows]) if guarded else {}
        names = [r.id for r in rows if r.id not in owners]
        if not names:
            return m.OkReply("")
    if not names:
        raise InvalidRequest("name at least one cluster, or pass --all")
    if not all_:
        for row in await views.clusters_named(app.store, names, live_only=False):
            ownership.check_acts(app, row, f"cluster {row.id}", _missing(row.id))
        owners = await cluster_owners(app, names) if guarded else {}
    refuse_owned(names, owners, VERBS.get(type(req), ""))
    messages = []
    for name in names:
        reply = await ask_cluster(app, name, req, emit)
        if reply.message:
            await emit(m.Progress(reply.message))
            messages.append(reply.message)
    return m.OkReply("\n".join(messages))


async def cancel(app: App, req: m.Cancel, emit: Emit) -> Any:
    """No ids and no `all`: the latest running job, as SkyPilot's `sky cancel CLUSTER`."""
    await _check_cluster(app, req.cluster)
    return await ask_cluster(app, req.cluster, req, emit)


async def cost_report(app: App, req: m.CostReportReq, emit: Emit) -> m.CostReport:
    now = time.time()
    rows_out = []
    for row in await app.store.rows("cluster"):
        if quarantine.reason_of(app, row) is not None:
            continue  # `status` shows it, with how to remove it; it has no cost to report
        try:
            item = _cost_row(row, now)
        except Exception as exc:  # one damaged row leaves the report, logged
            app.log.warning("row_unshowable", kind=row.kind, id=row.id, reason=repr(exc))
            continue
        if not req.all and item.launched_at < now - req.days * 86400:
            continue
        if item.launched_at:
            rows_out.append(item)
    return m.CostReport(rows=rows_out, total=sum(r.cost for r in rows_out))


def _cost_row(row: Row, now: float) -> m.CostRow:
    data = data_of(row, ClusterData)
    launched = data.launched_at or 0.0
    active = data.active_seconds
    if data.up_since:
        active += now - data.up_since
    rec = cluster_record(row)
    # a price changed by a resize outside stix holds from then on; before it, the old one
    priced = data.priced_seconds
    cost = data.cost_accrued
    cost += max(active - priced, 0.0) / 3600 * rec.hourly_price * rec.num_nodes
    return m.CostRow(
        name=row.id,
        status=row.state,
        infra=rec.infra,
        num_nodes=rec.num_nodes,
        resources=rec.resources,
        launched_at=launched,
        duration_seconds=active,
        hourly_price=rec.hourly_price,
        cost=cost,
    )


def _infra_name(text: str) -> str:
    """An infra as a task names it (``k8s`` is ``kubernetes``); as given when it is none."""
    try:
        return parse_cloud(text, "check")
    except TaskFieldError:
        return text.strip().lower()


async def check(app: App, req: m.Check, emit: Emit) -> m.CheckReply:
    allowed = app.config.allowed_clouds
    out = []
    for name, provider in app.providers.items():
        result = await provider.check()
        enabled = result.enabled and (allowed is None or name in allowed)
        reason = result.reason if enabled or allowed is None else "left out by allowed_clouds"
        details = list(result.details)
        out.append(m.InfraCheck(infra=name, enabled=enabled, reason=reason, details=details))
    for name in known_infras(app):
        if name in app.providers:
            continue
        out.append(m.InfraCheck(infra=name, enabled=False, reason=m.NOT_SUPPORTED))
    if req.infras:
        wanted = {_infra_name(i) for i in req.infras}
        unknown = wanted - {c.infra for c in out}
        if unknown:
            raise InvalidRequest(
                f"unknown infra {sorted(unknown)[0]!r}; known: {', '.join(c.infra for c in out)}"
            )
        out = [c for c in out if c.infra in wanted]
    return m.CheckReply(infras=out)


async def events(app: App, req: m.Events, emit: Emit) -> m.EventList:
    name = req.name
    if req.kind == "job" and (req.job_id is not None or "/" not in name):
        name = (await find_job(app, name, req.job_id)).id  # `queue`'s id on cluster `name`
    elif req.job_id is not None:
        raise InvalidRequest("a job id is for a job's history: use --kind job (or leave it out)")
    rows = await app.store.events(req.kind, name, req.limit)
    if not rows:
        raise ClusterNotFound(f"no history for {req.kind} {req.name!r}")
    return m.EventList(
        events=[
            m.EventRecord(
                at=e.at,
                kind=e.kind,
                id=e.id,
                event=e.event,
                from_state=e.from_state,
                to_state=e.to_state,
                why=e.why,
            )
            for e in rows
        ]
    )


JOBS_REQUESTS = (
    m.JobsLaunch,
    m.JobsQueue,
    m.JobsCancel,
    m.JobsLogs,
    m.PoolApply,
    m.PoolStatusReq,
    m.PoolDown,
)


async def _jobs(app: App, req: Any, emit: Emit) -> Any:
    if isinstance(req, m.JobsLaunch):
        try:
            app.config_for([(layer.source, layer.values) for layer in req.config])
        except ConfigError as exc:
            raise InvalidConfig(str(exc)) from None
        for task in req.tasks if req.pool is None else []:
            await check_owned(app, task)
            await check_task_volumes(app, task, *app.target(task))
        return await jobs_cmds.jobs_launch(app, req, emit, lambda task: _check_task(app, task))
    if isinstance(req, m.JobsQueue):
        return await jobs_cmds.jobs_queue(app, req, emit)
    if isinstance(req, m.JobsCancel):
        return await jobs_cmds.jobs_cancel(app, req)
    if isinstance(req, m.PoolApply):
        await check_owned(app, req.task)
        return await jobs_cmds.pool_apply(app, req, lambda task: _check_task(app, task))
    if isinstance(req, m.PoolStatusReq):
        return await jobs_cmds.pool_status(app, req)
    if isinstance(req, m.PoolDown):
        return await jobs_cmds.pool_down(app, req)
    return await jobs_cmds.jobs_logs(app, req, emit)


async def daemon_status(app: App, req: m.DaemonStatus, emit: Emit) -> m.DaemonInfo:
    from stixproto import PROTOCOL_VERSION

    return m.DaemonInfo(
        pid=os.getpid(),
        version=VERSION,
        protocol=PROTOCOL_VERSION,
        home=str(app.home),
        started_at=app.started_at,
        actors=app.supervisor.counts(),
    )


async def shutdown(app: App, req: m.Shutdown, emit: Emit) -> m.OkReply:
    return m.OkReply("stixd is shutting down")  # the server stops once this is sent


async def dispatch(app: App, req: Any, emit: Emit) -> Any:
    principal = identity.PRINCIPAL.get()
    identity.authorize(principal, req)  # every request, whichever server took it
    needed = workspaces.needed(principal, req)  # what its checks read (one query)
    loaded = workspaces.LOADED.set(await workspaces.load(app) if needed else None)
    try:
        return await _handle(app, req, emit)
    finally:
        workspaces.LOADED.reset(loaded)


async def _handle(app: App, req: Any, emit: Emit) -> Any:
    if isinstance(req, identity_cmds.IDENTITY_REQUESTS):
        return await identity_cmds.dispatch(app, req, emit)
    if isinstance(req, JOBS_REQUESTS):
        return await _jobs(app, req, emit)
    if isinstance(req, serve_cmds.SERVE_REQUESTS):
        if isinstance(req, m.ServeUp | m.ServeUpdate):
            try:
                app.config_for([(layer.source, layer.values) for layer in req.config])
            except ConfigError as exc:
                raise InvalidConfig(str(exc)) from None
            await check_owned(app, req.task)
        return await serve_cmds.dispatch(app, req, emit, lambda task: _check_task(app, task))
    if isinstance(req, m.Launch):
        return await launch(app, req, emit)
    if isinstance(req, m.ReadTask):
        return await task_reading.read_task(req, emit)
    if isinstance(req, m.Exec):
        return await exec_(app, req, emit)
    if isinstance(req, m.Status):
        return await status(app, req, emit)
    if isinstance(req, m.Queue):
        return await queue(app, req, emit)
    if isinstance(req, m.Logs):
        return await logs(app, req, emit)
    if isinstance(req, m.Cancel):
        return await cancel(app, req, emit)
    if isinstance(req, m.Stop | m.Down | m.Autostop):
        return await _each_cluster(app, req.clusters, req.all, req, emit)
    if isinstance(req, m.Start):
        return await _each_cluster(app, req.clusters, False, req, emit)
    if isinstance(req, m.CostReportReq):
        return await cost_report(app, req, emit)
    if isinstance(req, m.Check):
        return await check(app, req, emit)
    if isinstance(req, m.Events):
        return await events(app, req, emit)
    if isinstance(req, m.Leaks):
        return await leak_cmds.leaks_cmd(app, req, emit)
    if isinstance(req, m.StorageLs | m.StorageDelete):
        from stixd.control import storage_cmds

        return await storage_cmds.dispatch(app, req, emit)
    if isinstance(req, m.PlanRequest):
        return await plan_cmds.plan_cmd(app, req, emit)
    if isinstance(req, m.NodeShell):
        await _check_cluster(app, req.cluster)
        return await ssh_cmds.node_shell(app, req)
    if isinstance(req, m.SshPools):

        async def down(cluster: str) -> Any:
            return await ask_cluster(app, cluster, m.Down(clusters=[cluster]), emit)

        return await ssh_cmds.ssh_pools_cmd(app, req, emit, down)
    if isinstance(req, m.ShowGpus):
        return await catalog_cmds.show_gpus_cmd(app, req, emit)
    if isinstance(req, m.CatalogUpdate):
        return await catalog_cmds.catalog_update(app, req, emit)
    if isinstance(req, m.CatalogStatus):
        return await catalog_cmds.catalog_status(app, req, emit)
    if isinstance(req, m.DaemonStatus):
        return await daemon_status(app, req, emit)
    if isinstance(req, m.WorkspacesList):
        return await workspaces.workspaces_list(app, identity.PRINCIPAL.get())
    if isinstance(req, volume_cmds.VOLUME_REQUESTS):
        return await volume_cmds.dispatch(app, req, emit)
    if isinstance(req, m.Shutdown):
        return await shutdown(app, req, emit)
    if isinstance(req, m.FakePreempt):
        return await fake_cmds.fake_preempt(app, req, emit)
    raise InvalidRequest(f"unknown request {type(req).__name__}")
