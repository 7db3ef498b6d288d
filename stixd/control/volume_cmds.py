"""`stixctl volumes apply | ls | delete` (SkyPilot's `sky volumes`): one actor per volume
(`stixd.actors.volume`); a listing reads the volume rows and the live clusters once each.

With several replicas, `apply` of a volume that exists and `delete` go to the replica whose
actor runs the volume (`App.elsewhere`): its folder or claim is made and removed there. A
``k8s-hostpath`` volume on Kubernetes mounts a folder of the nodes' own disk into pods, so only
an admin may make one (on local and SSH nodes it is a folder of stix's: anyone may).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from stixd.actors.specs import state_of
from stixd.actors.volume import (
    VOLUME,
    Make,
    Remove,
    VolumeData,
    VolumeSpec,
    config_of,
    ephemeral_of,
    live_users,
    users_error,
)
from stixd.actors.volume_mounts import ask_volume
from stixd.app import App
from stixd.control import ownership
from stixd.control.identity import PRINCIPAL, Role
from stixd.store.db import Row, RowExists
from stixproto import messages as m
from stixproto.errors import InvalidRequest, PermissionDenied, StixError
from stixproto.volumes import VolumeConfig, mounts_node_disk
from stixproto.volumes import VolumeStatus as V

Emit = Callable[[Any], Awaitable[None]]
VOLUME_REQUESTS = (m.VolumesApply, m.VolumesList, m.VolumesDelete)


async def dispatch(app: App, req: Any, emit: Emit) -> Any:
    if isinstance(req, m.VolumesApply):
        return await apply(app, req, emit)
    if isinstance(req, m.VolumesList):
        return await ls(app, req)
    return await delete(app, req, emit)


def _missing(name: str) -> InvalidRequest:
    return InvalidRequest(f"volume {name!r} does not exist (`stixctl volumes ls`)")


def _check_may_make(volume: VolumeConfig) -> None:
    """A hostPath into the pods of a Kubernetes cluster is the nodes' disk: admins only."""
    principal = PRINCIPAL.get()
    if mounts_node_disk(volume) and principal.role != Role.ADMIN:
        raise PermissionDenied(
            f"volume {volume.name}: a k8s-hostpath volume on Kubernetes mounts the nodes' own "
            f"disk into pods, so only an admin may make one (user {principal.name} has role "
            f"{principal.role.value}); use a k8s-pvc volume"
        )


async def _elsewhere(app: App, name: str, req: Any, emit: Emit) -> tuple[bool, Any]:
    """(True, the reply) when another live replica runs the volume's actor and answered."""
    if app.elsewhere is None:
        return False, None
    return await app.elsewhere(VOLUME, name, req, emit)


async def apply(app: App, req: m.VolumesApply, emit: Emit) -> m.OkReply:
    volume = req.volume
    _check_may_make(volume)
    made = ownership.made_for(app, [(layer.source, layer.values) for layer in req.config])
    spec = VolumeSpec(
        volume=msgspec.to_builtins(volume), owner=made.owner, workspace=made.workspace
    )
    row = Row(
        kind=VOLUME,
        id=volume.name,
        state=V.NOT_READY.value,
        version=0,
        spec=msgspec.to_builtins(spec),
    )
    try:
        await app.store.insert(row, "applied")
    except RowExists:
        found = await app.store.get(VOLUME, volume.name)
        if found is None:
            raise InvalidRequest(
                f"volume {volume.name} was deleted meanwhile; apply again"
            ) from None
        ownership.check_acts(app, found, f"volume {volume.name}", _missing(volume.name))
        if config_of(msgspec.convert(found.spec, VolumeSpec)) != volume:
            raise InvalidRequest(
                f"volume {volume.name} exists with another spec; delete it first "
                f"(`stixctl volumes delete {volume.name}`) or pick another name"
            ) from None
        if state_of(found, V) is V.READY:
            return m.OkReply(f"Volume {volume.name} already exists and is READY.")
        forwarded, theirs = await _elsewhere(app, volume.name, req, emit)
        if forwarded:
            answer: m.OkReply = theirs
            return answer
    await emit(m.Progress(f"Making volume {volume.name} on {volume.infra or volume.cloud}..."))
    reply: m.OkReply = await ask_volume(app, volume.name, Make())
    return reply


def _record(row: Row, live: set[str], scope: ownership.Scope) -> m.VolumeRecord:
    spec = msgspec.convert(row.spec, VolumeSpec)
    data = msgspec.convert(row.data, VolumeData)
    volume = config_of(spec)
    used_by = [u for u in data.users if u in live]
    state = state_of(row, V)
    status = V.IN_USE if state is V.READY and used_by else state or V.NOT_READY
    return m.VolumeRecord(
        name=row.id,
        type=volume.type,
        infra=volume.infra or volume.cloud,
        status=status.value,
        size_gb=volume.size_gb,
        used_by=used_by,
        where=data.where,
        created_at=row.created_at,
        user=scope.user(row.spec),
        workspace=scope.workspace(row.spec),
        error=data.error,
        use_existing=volume.use_existing,
        is_ephemeral=spec.cluster is not None,
    )


async def ls(app: App, req: m.VolumesList) -> m.VolumeList:
    scope = ownership.scope(app, req.all_users)
    rows = [r for r in await app.store.rows(VOLUME) if scope.sees(r.spec)]
    live = await live_users(app.store) if rows else set()
    out: list[m.VolumeRecord] = []
    for row in rows:
        try:
            out.append(_record(row, live, scope))
        except (msgspec.ValidationError, StixError) as exc:  # one damaged row fails only itself
            why = str(exc).splitlines()[0]
            out.append(m.VolumeRecord(row.id, "?", "?", V.NOT_READY.value, error=why))
    return m.VolumeList(volumes=out)


async def delete(app: App, req: m.VolumesDelete, emit: Emit) -> m.OkReply:
    if req.all == bool(req.names):
        raise InvalidRequest("name the volumes to delete, or -a for all of yours (not both)")
    if req.all:  # an ephemeral volume of a live cluster goes with it, not with `-a`
        live = await live_users(app.store)
        rows = [
            r
            for r in await app.store.rows(VOLUME)
            if (ownership.acts_on_all() or ownership.mine(r)) and ephemeral_of(r) not in live
        ]
    else:
        rows = []
        for name in dict.fromkeys(req.names):
            row = await app.store.get(VOLUME, name)
            if row is None:
                raise _missing(name)
            ownership.check_acts(app, row, f"volume {name}", _missing(name))
            rows.append(row)
    live = await live_users(app.store) if rows else set()
    for row in rows:  # all refused before any is deleted: no half-done `delete a b`
        users = [u for u in msgspec.convert(row.data, VolumeData).users if u in live]
        if users:
            raise users_error(row.id, users)
    done: list[str] = []
    for row in rows:
        forwarded, reply = await _elsewhere(app, row.id, req, emit)
        if forwarded:  # its own progress line was relayed; the final one says the count
            done.append(row.id)
            continue
        reply = await ask_volume(app, row.id, Remove())
        child = app.supervisor.get(VOLUME, row.id)
        if child is not None:
            await child.finished.wait()  # the name is free for the next apply
        await emit(m.Progress(reply.message))
        done.append(row.id)
    return m.OkReply(f"Deleted {len(done)} volume(s)." if done else "No volumes to delete.")
