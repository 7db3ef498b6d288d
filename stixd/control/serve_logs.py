"""`serve logs`: a replica's command's log, the service's history (`--controller`), or its
balancer's log file (`--load-balancer`), followed until the service is gone."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

from stixd.actors.joblogs import find_job, stream_job_logs
from stixd.actors.service_rows import REPLICA, SERVICE, ReplicaData, replica_cluster, replica_row_id
from stixd.actors.specs import data_or_none
from stixd.app import App
from stixd.store.db import Row
from stixproto import messages as m
from stixproto import names
from stixproto.errors import InvalidRequest, ServiceNotFound, StixError

Emit = Callable[[Any], Awaitable[None]]
FOLLOW_POLL_S = 0.5


async def _service_row(app: App, name: str) -> Row:
    row = await app.store.get(SERVICE, name)
    if row is None:
        raise ServiceNotFound(f"no service {names.shown(name)}")
    return row


def balancer_log(app: App, service: str) -> Path:
    """Where the service's balancer writes its log, as the balancers say."""
    if app.balancers is None:
        raise InvalidRequest("this daemon runs no load balancers, so it has no balancer log")
    return app.balancers.log_path(service)


async def serve_logs(app: App, req: m.ServeLogs, emit: Emit) -> m.OkReply:
    row = await _service_row(app, req.name)
    if req.target == "controller":
        await _controller_log(app, row, emit, req.follow, req.tail)
    elif req.target == "load_balancer":
        await _follow_file(app, row, balancer_log(app, row.id), emit, req.follow, req.tail)
    else:
        if req.replica_id is None:
            raise InvalidRequest("name the replica: `serve logs NAME REPLICA_ID`")
        rrow = await app.store.get(REPLICA, replica_row_id(row.id, req.replica_id))
        if rrow is None:
            raise ServiceNotFound(f"service {row.id} has no replica {req.replica_id}")
        data = data_or_none(rrow, ReplicaData) or ReplicaData()
        if data.job_id is None:
            raise InvalidRequest(
                f"replica {req.replica_id} of {row.id} is {rrow.state}: its command has not "
                "started yet"
            )
        cluster = replica_cluster(row.id, req.replica_id)
        try:
            job = await find_job(app, cluster, data.job_id)
        except StixError:
            raise InvalidRequest(
                f"replica {req.replica_id} of {row.id}: its cluster {cluster} is gone, and "
                "its log with it"
            ) from None
        await stream_job_logs(app, job, emit, follow=req.follow, tail=req.tail)
    return m.OkReply()


def _event_line(e: Any) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.at))
    who = "service" if e.kind == SERVICE else f"replica {e.id.rpartition('/')[2]}"
    move = f"{e.from_state or ''} -> {e.to_state}" if e.to_state else e.event
    why = f": {e.why}" if e.why else ""
    return f"{stamp} {who} {move}{why}\n"


async def _controller_log(app: App, row: Row, emit: Emit, follow: bool, tail: int | None) -> None:
    """The service's and its replicas' events, as they happen with `follow`."""
    seen = 0
    first = True
    while True:
        events = await app.store.events(SERVICE, row.id, 100_000)
        # only this service's: an earlier one of the name left its history too
        events = [e for e in events if e.kind in (SERVICE, REPLICA) and e.at >= row.created_at]
        fresh = events[seen:]
        if first and tail is not None:
            fresh = fresh[-tail:] if tail else []
        first = False
        seen = len(events)
        if fresh:
            await emit(m.LogChunk("".join(_event_line(e) for e in fresh)))
        if not follow or await app.store.get(SERVICE, row.id) is None:
            return
        with anyio.move_on_after(FOLLOW_POLL_S):
            await app.watch.wait_for(SERVICE, row.id, lambda r: r is None)


async def _follow_file(
    app: App, row: Row, path: Path, emit: Emit, follow: bool, tail: int | None
) -> None:
    offset = 0
    if tail is not None and path.exists():
        lines = path.read_bytes().splitlines(keepends=True)
        text = b"".join(lines[-tail:] if tail else [])
        if text:
            await emit(m.LogChunk(text.decode(errors="replace")))
        offset = path.stat().st_size
    while True:
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            size = 0
        if size > offset:
            with path.open("rb") as f:
                f.seek(offset)
                data = f.read(min(size - offset, 1 << 20))
            offset += len(data)
            await emit(m.LogChunk(data.decode(errors="replace")))
            continue
        if not follow or await app.store.get(SERVICE, row.id) is None:
            return
        with anyio.move_on_after(FOLLOW_POLL_S):
            await app.watch.wait_for(SERVICE, row.id, lambda r: r is None)
