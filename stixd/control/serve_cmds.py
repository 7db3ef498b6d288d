"""`stixctl serve …`: services, each a service actor with a replica actor per replica."""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import msgspec

from stixd.actors.replica import Shutdown
from stixd.actors.service_rounds import NO_BALANCERS, service_port
from stixd.actors.service_rows import (
    REPLICA,
    SERVICE,
    ReplicaData,
    ReplicaSpec,
    ServiceData,
    ServiceSpec,
    ServiceVersion,
    replica_cluster,
)
from stixd.actors.service_view import replicas_of
from stixd.actors.specs import data_or_none, encode, spec_or_none, state_of
from stixd.app import App
from stixd.control import ownership, reached, serve_logs
from stixd.runtime.mailbox import Envelope, reply_channel
from stixd.store import views
from stixd.store.db import Row, RowExists
from stixproto import messages as m
from stixproto import names
from stixproto.errors import (
    InternalError,
    InvalidRequest,
    ServiceNotFound,
    error_from_code,
)
from stixproto.states import ReplicaStatus, ServiceStatus
from stixproto.states import ServiceStatus as S
from stixproto.task import Task
from stixproto.task.service import effective_scaling

Emit = Callable[[Any], Awaitable[None]]
UP_WAIT_SECONDS = 60.0
"""How long `serve up` waits for the balancer to answer before it returns anyway."""
DOWN_WAIT_SECONDS = 600.0
FOLLOW_POLL_S = 0.5
SHOWN_ENDED_REPLICAS = 10
"""Ended (failed, preempted) replicas `serve status` lists per service, newest first."""
SHOWN_KNOWN = 10
"""Services a "no service" answer names, so the line stays one line."""
MAX_TLS_FILE_BYTES = 1 << 20
"""A PEM key or certificate chain is a few KB; a larger file is not one (or is `/dev/zero`)."""


def _checked_service(task: Task) -> None:
    if task.service is None:
        raise InvalidRequest(
            "the task has no `service:` section; add one (at least `service: {readiness_probe: /}`"
            " and a port) to serve it"
        )
    if task.run is None:
        raise InvalidRequest("a service needs a `run` command that serves on its port")
    service_port(task)


def tls_problem(tls: dict[str, Any]) -> str | None:
    """Why the balancer could not serve TLS with the service's `tls` files, or None. Read here,
    as the user whose request it is (the socket's peer is the daemon's own user), before
    anything is stored: a missing, unreadable or non-PEM file is refused at `serve up`."""
    import os
    import ssl
    import stat

    paths = {key: str(tls.get(key) or "") for key in ("keyfile", "certfile")}
    for key, path in paths.items():
        where = f"service.tls.{key}"
        if not os.path.isabs(path):
            return f"{where}: expected an absolute path, got {names.shown(path)}"
        try:
            info = os.stat(path)
        except OSError as exc:
            return f"{where}: cannot read {names.shown(path)}: {exc.strerror}"
        if not stat.S_ISREG(info.st_mode):
            return f"{where}: {names.shown(path)} is not a regular file"
        if info.st_size > MAX_TLS_FILE_BYTES:
            return f"{where}: {names.shown(path)} is {info.st_size} bytes, not a PEM file"
        if not os.access(path, os.R_OK):
            return f"{where}: cannot read {names.shown(path)}: permission denied"
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:  # a password callback: an encrypted key fails here instead of asking a terminal
        context.load_cert_chain(paths["certfile"], paths["keyfile"], password=lambda: b"")
    except ssl.SSLError as exc:  # before OSError: it is one
        why = exc.reason or str(exc)
        return _unloadable(why)
    except (OSError, ValueError) as exc:
        why = (exc.strerror if isinstance(exc, OSError) else None) or str(exc)
        return _unloadable(why)
    return None


def _unloadable(why: str) -> str:
    return (
        f"service.tls: the key and certificate do not load together ({why}); give an "
        "unencrypted PEM key and the PEM certificate made for it"
    )


async def _checked_tls(task: Task) -> None:
    tls = task.service.tls if task.service is not None else None
    if tls:
        problem = await anyio.to_thread.run_sync(tls_problem, tls)
        if problem is not None:
            raise InvalidRequest(problem)


async def serve_up(
    app: App, req: m.ServeUp, emit: Emit, check: Callable[[Any], None]
) -> m.ServiceUp:
    if app.balancers is None:
        raise InvalidRequest(NO_BALANCERS)
    task = req.task
    _checked_service(task)
    check(task)
    await _checked_tls(task)
    made = ownership.made_for(app, [(c.source, c.values) for c in req.config])
    ownership.check_where(app, task, made.workspace)
    name = req.name or task.name or f"sky-service-{secrets.token_hex(2)}"
    if not names.is_valid(name, "service"):
        raise InvalidRequest(
            f"the task's name {names.shown(name)} cannot name a service "
            f"({names.rule('service')}); give it one with -n NAME"
        )
    now = time.time()
    spec = ServiceSpec(
        versions=[ServiceVersion(version=1, task=msgspec.to_builtins(task), at=now)],
        config=[msgspec.to_builtins(c) for c in req.config],
        created_at=now,
        owner=made.owner,
        workspace=made.workspace,
    )
    row = Row(
        kind=SERVICE,
        id=name,
        state=ServiceStatus.CONTROLLER_INIT.value,
        version=0,
        spec=encode(spec),
        data=encode(ServiceData()),
    )
    try:
        row = await app.store.insert(row, "submitted", f"service {name}")
    except RowExists:
        raise InvalidRequest(
            f"service {name!r} already exists; change it with "
            f"`{names.command('serve', 'update', name, 'FILE')}` or take it down first"
        ) from None
    app.spawn(row)
    await emit(m.Progress(f"Service {name} submitted; starting its load balancer."))
    with anyio.move_on_after(UP_WAIT_SECONDS):
        row = (
            await app.watch.wait_for(
                SERVICE, name, lambda r: r is None or state_of(r, S) is not S.CONTROLLER_INIT
            )
            or row
        )
    data = data_or_none(row, ServiceData) or ServiceData()
    if state_of(row, S) is S.CONTROLLER_FAILED:
        raise InvalidRequest(f"service {name}: {data.failure_reason or 'its balancer failed'}")
    endpoint = reached.for_client(data.endpoint, app.config.daemon.balancer_host)
    return m.ServiceUp(name=name, version=1, endpoint=endpoint, status=row.state)


async def _service_row(app: App, name: str) -> Row:
    row = await app.store.get(SERVICE, name)
    if row is None:
        ids = [r.id for r in await app.store.rows(SERVICE)]
        known = ", ".join(ids[:SHOWN_KNOWN]) or "none"
        more = f" and {len(ids) - SHOWN_KNOWN} more" if len(ids) > SHOWN_KNOWN else ""
        raise ServiceNotFound(f"no service {names.shown(name)} (services: {known}{more})")
    return row


def _check_acts(app: App, row: Row) -> None:
    missing = ServiceNotFound(f"no service {names.shown(row.id)}")
    ownership.check_acts(app, row, f"service {row.id}", missing)


async def _no_progress(item: Any) -> None:
    """A service actor's answer is its final reply alone."""


async def elsewhere(app: App, row: Row, payload: Any, emit: Emit) -> tuple[bool, Any]:
    """With several replicas: (True, the reply) of the replica that runs the service, when it
    is another live one; (False, None) when this replica runs it (or is to)."""
    if app.elsewhere is None:
        return False, None
    return await app.elsewhere(SERVICE, row.id, payload, emit)


async def ask_service(app: App, row: Row, payload: Any) -> Any:
    """Hand a request to the service's actor (started if needed) and wait for its answer;
    the replica that runs it answers, when that is another."""
    forwarded, reply = await elsewhere(app, row, payload, _no_progress)
    if forwarded:
        return reply
    child = app.supervisor.get(SERVICE, row.id)
    if child is None:
        child = app.spawn(row)
    if child.failed is not None:
        raise InternalError(f"service {row.id} cannot run: {child.failed}")
    send, receive = reply_channel()
    if not app.supervisor.tell(SERVICE, row.id, Envelope(payload=payload, reply=send)):
        raise InternalError(f"service {row.id} has no actor")
    async with receive:
        async for item in receive:
            if isinstance(item, m.ErrorReply):
                raise error_from_code(item.code, item.message)
            if isinstance(item, m.FINAL_REPLIES):
                return item
    raise InternalError(f"service {row.id} stopped before answering")


async def serve_update(app: App, req: m.ServeUpdate, check: Callable[[Any], None]) -> m.ServiceUp:
    _checked_service(req.task)
    check(req.task)
    row = await _service_row(app, req.name)
    _check_acts(app, row)
    await _checked_tls(req.task)
    reply: m.ServiceUp = await ask_service(app, row, req)
    endpoint = reached.for_client(reply.endpoint, app.config.daemon.balancer_host)
    return msgspec.structs.replace(reply, endpoint=endpoint)


# -- status ------------------------------------------------------------------------------------


def _policy(spec: ServiceSpec, data: ServiceData) -> tuple[str, str]:
    task = _task(spec, data.version)
    if task is None or task.service is None:
        return "-", "-"
    scaling = effective_scaling(task.service)
    if scaling.autoscales:
        words = f"Autoscaling from {scaling.min_replicas} to {scaling.max_replicas} replicas"
    else:
        words = f"Fixed {scaling.min_replicas} replica{'s' if scaling.min_replicas != 1 else ''}"
    return words, task.service.lb_policy


def _task(spec: ServiceSpec, version: int) -> Task | None:
    for v in spec.versions:
        if v.version == version:
            return msgspec.convert(v.task, Task)
    return None


def replica_record(row: Row, spec: ReplicaSpec, data: ReplicaData) -> m.ReplicaRecord:
    return m.ReplicaRecord(
        service=spec.service,
        replica_id=spec.replica_id,
        version=spec.version,
        status=row.state,
        endpoint=data.url,
        launched_at=spec.launched_at,
        infra=data.infra,
        resources=data.resources,
        cluster=replica_cluster(spec.service, spec.replica_id),
        spot=spec.spot,
        failure_reason=data.failure_reason,
    )


async def service_record(
    app: App, row: Row, scope: ownership.Scope | None = None, replicas: list[Row] | None = None
) -> m.ServiceRecord:
    """`replicas`: the service's replica rows, when the caller read them (else read here)."""
    spec = spec_or_none(row, ServiceSpec) or ServiceSpec()
    data = data_or_none(row, ServiceData) or ServiceData()
    records = []
    if replicas is None:
        replicas = await app.store.rows(REPLICA, parent=row.id)
    for r in replicas:
        rspec, rdata = spec_or_none(r, ReplicaSpec), data_or_none(r, ReplicaData)
        if rspec is not None and rdata is not None:
            records.append(replica_record(r, rspec, rdata))
    live = [r for r in records if not ReplicaStatus(r.status).is_terminal]
    ended = [r for r in records if ReplicaStatus(r.status).is_terminal]
    shown = live + sorted(ended, key=lambda r: -r.replica_id)[:SHOWN_ENDED_REPLICAS]
    policy, lb = _policy(spec, data)
    return m.ServiceRecord(
        name=row.id,
        status=row.state,
        version=data.version,
        created_at=spec.created_at or row.created_at,
        uptime_since=data.uptime_since,
        endpoint=reached.for_client(data.endpoint, app.config.daemon.balancer_host),
        policy=policy,
        load_balancing_policy=lb,
        replicas=sorted(shown, key=lambda r: r.replica_id),
        active_versions=sorted({r.version for r in live}),
        failure_reason=data.failure_reason,
        user=scope.user(row.spec) if scope else None,
        workspace=scope.workspace(row.spec) if scope else None,
    )


async def serve_status(app: App, req: m.ServeStatus) -> m.ServiceList:
    scope = ownership.scope(app, req.all_users)
    rows = await app.store.rows(SERVICE)
    if req.names:  # named: anyone's, but never one of a private workspace of others
        rows = [r for r in rows if ownership.workspace_of(r.spec) not in scope.hidden]
        have = {r.id for r in rows}
        missing = [n for n in req.names if n not in have]
        if missing:
            raise ServiceNotFound(f"no service {names.shown(missing[0])}")
        rows = [r for r in rows if r.id in set(req.names)]
    else:
        rows = [r for r in rows if scope.sees(r.spec)]
    replicas: dict[str | None, list[Row]] = {}
    for r in await views.children_of(app.store, REPLICA, [r.id for r in rows]):
        replicas.setdefault(r.parent, []).append(r)  # every service's in one read
    return m.ServiceList(
        services=[await service_record(app, r, scope, replicas.get(r.id, [])) for r in rows]
    )


# -- down --------------------------------------------------------------------------------------


async def serve_down(app: App, req: m.ServeDown, emit: Emit) -> m.Table:
    if req.all:  # a user's `--all` is every service of theirs
        every = await app.store.rows(SERVICE)
        names_ = [r.id for r in every if ownership.acts_on_all() or ownership.mine(r)]
    elif req.names:
        names_ = list(req.names)
    else:
        raise InvalidRequest("name the services to take down, or --all")
    if req.replica_id is not None and len(names_) != 1:
        raise InvalidRequest("--replica-id takes one service name")
    rows = [await _service_row(app, n) for n in names_]
    for row in rows:
        _check_acts(app, row)
    lines: list[str] = []
    out: list[dict[str, Any]] = []
    for row in rows:
        ask = m.ServeDown(names=[row.id], purge=req.purge, replica_id=req.replica_id)
        forwarded, told = await elsewhere(app, row, ask, emit)
        if forwarded:  # the replica that runs it took it down, and waited as below
            lines.append(told.text)
            out.extend(told.rows)
            continue
        child = app.supervisor.get(SERVICE, row.id) or app.spawn(row)
        reason = row.quarantined or child.failed
        if reason is not None and req.replica_id is None:
            text = await forget_service(app, row, reason)
            await emit(m.Progress(text))
            lines.append(text)
            out.append({"service": row.id, "status": "DOWN", "failure_reason": reason})
            continue
        reply: m.OkReply = await ask_service(app, row, ask)
        await emit(m.Progress(reply.message))
        if req.replica_id is not None:
            lines.append(reply.message)
            out.append({"service": row.id, "replica_id": req.replica_id, "status": "SHUTTING_DOWN"})
            continue
        with anyio.move_on_after(DOWN_WAIT_SECONDS):
            row = (
                await app.watch.wait_for(
                    SERVICE,
                    row.id,
                    lambda r: r is None or state_of(r, S) is S.FAILED_CLEANUP,
                )
                or row
            )
        current = await app.store.get(SERVICE, row.id)
        if current is None:
            lines.append(f"Service {row.id} is down.")
            out.append({"service": row.id, "status": "DOWN"})
        else:
            why = (data_or_none(current, ServiceData) or ServiceData()).failure_reason
            lines.append(f"Service {row.id}: {current.state}" + (f", {why}" if why else ""))
            out.append({"service": row.id, "status": current.state, "failure_reason": why})
    ok = all(o["status"] in ("DOWN", "SHUTTING_DOWN") for o in out)
    return m.Table(text="\n".join(lines) or "No services.", rows=out, ok=ok)


async def forget_service(app: App, row: Row, reason: str) -> str:
    """`serve down` of a service whose actor cannot run (its row is damaged, or it kept
    crashing): its replicas are shut down by their own actors, the rest is forgotten."""
    for replica in await app.store.rows(REPLICA, parent=row.id):
        if replica.terminal or replica.quarantined is not None:
            await app.store.delete(replica, f"service {row.id} removed")
            continue
        app.spawn(replica)
        app.supervisor.tell(REPLICA, replica.id, Shutdown(purge=True))
    if app.balancers is not None:
        await app.balancers.stop(row.id)
    await app.store.delete(row, f"removed: {reason}")
    await app.store.forget_overwritten()  # its tasks' secret values leave no copy behind
    app.supervisor.forget(SERVICE, row.id)
    return f"Service {row.id} could not run ({reason}); it is removed, its replicas go down."


SERVE_REQUESTS = (m.ServeUp, m.ServeUpdate, m.ServeStatus, m.ServeLogs, m.ServeDown)


async def dispatch(app: App, req: Any, emit: Emit, check: Callable[[Any], None]) -> Any:
    if isinstance(req, m.ServeUp):
        return await serve_up(app, req, emit, check)
    if isinstance(req, m.ServeUpdate):
        return await serve_update(app, req, check)
    if isinstance(req, m.ServeStatus):
        return await serve_status(app, req)
    if isinstance(req, m.ServeLogs):
        row = await _service_row(app, req.name)
        _check_acts(app, row)
        forwarded, reply = await elsewhere(app, row, req, emit)  # its balancer's, its log's host
        return reply if forwarded else await serve_logs.serve_logs(app, req, emit)
    return await serve_down(app, req, emit)


__all__ = ["SERVE_REQUESTS", "dispatch", "replicas_of", "service_record"]
