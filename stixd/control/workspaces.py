"""Workspaces (SkyPilot's `workspaces:`): named parts of a team server, each with the infras
its launches may use, and, when private, the only users who see it.

Admins define them with `stixctl workspaces create|update|delete`, which the shared store keeps
(stixd/store/workspaces.py) so every replica on one database agrees; the server's own config
may define more (`Config.workspaces`), which those commands leave to the file. A request only
chooses one, with `active_workspace` in its config layers (`--workspace`). The workspace
``default`` always exists and is open to everyone unless defined otherwise.

The one per-request check: `handlers.dispatch` reads the stored workspaces once (`load`, one
query of a table of a few rows) before any handler runs, and every check here reads that
snapshot in memory, so a listing or an action on many objects asks nothing more; an admin's
plain reads, which see everything, skip even that query (`needed`).
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from stixd.app import App
from stixd.config import WorkspaceConfig
from stixd.control.identity import PRINCIPAL, READ, Principal, Role
from stixd.planner.catalog import KNOWN_CLOUDS
from stixd.planner.infra_meta import Role as InfraRole
from stixd.store import views
from stixd.store import workspaces as rows
from stixproto import messages as m
from stixproto.errors import InternalError, InvalidConfig, InvalidRequest, PermissionDenied
from stixproto.names import command

DEFAULT = "default"
SERVER_MACHINE = frozenset({InfraRole.MACHINE, InfraRole.POOLS})
"""Infras (by their planner role) that run a task on the server's own machine or on its SSH
hosts, as the daemon's user: a remote user who is not an admin may use them only where a
workspace names them."""


LOADED: contextvars.ContextVar[dict[str, WorkspaceConfig] | None] = contextvars.ContextVar(
    "stix_workspaces", default=None
)
"""The workspaces as the request being handled found them (`load`); None outside a request,
and for an admin's plain read (`needed`)."""


def _config(app: App) -> dict[str, WorkspaceConfig]:
    return dict(app.config.workspaces)


def needed(principal: Principal, request: object) -> bool:
    """Whether `request`'s checks read the workspaces (`load`): every request of a user or a
    viewer (their listings leave private workspaces out), and an admin's that makes objects
    or is about workspaces; an admin's other reads (the socket's `status`, `logs`, `queue`)
    see everything and read none."""
    if principal.role is not Role.ADMIN or isinstance(request, m.WorkspacesList):
        return True
    return not isinstance(request, READ)


async def load(app: App) -> dict[str, WorkspaceConfig]:
    """The workspaces for the request being handled (`handlers.dispatch` sets `LOADED` to
    them): every check of the request reads this snapshot (`defined`). A stored row that
    cannot be read is a private workspace with no users (its objects hidden from all but
    admins) until an admin updates it."""
    found: dict[str, WorkspaceConfig] = {}
    for name, text in await rows.stored(app.store):
        try:
            found[name] = msgspec.json.decode(text, type=WorkspaceConfig)
        except msgspec.DecodeError as exc:  # msgspec.ValidationError is one too
            app.log.error("workspace_unreadable", workspace=name, error=str(exc))
            found[name] = WorkspaceConfig(private=True)
    found.update(_config(app))  # the file's own; the commands refuse to shadow them
    return {DEFAULT: found.pop(DEFAULT, WorkspaceConfig()), **found}


def defined(app: App) -> dict[str, WorkspaceConfig]:
    """Every workspace of the server, ``default`` first (an open one unless defined), as the
    current request loaded them (`load`)."""
    every = LOADED.get()
    if every is None:  # a check outside a request: refused rather than judged on part of them
        raise InternalError("the workspaces were not read for this request; report it as a bug")
    return every


def may_see(principal: Principal, name: str, workspace: WorkspaceConfig) -> bool:
    """Whether `principal` sees workspace `name` and may use it: admins see every one."""
    if principal.role is Role.ADMIN or not workspace.private:
        return True
    return principal.name in workspace.allowed_users


def hidden(app: App, principal: Principal) -> frozenset[str]:
    """The private workspaces `principal` is not in: their objects are left out of listings
    and refused by name as if they did not exist. None for an admin, who sees every one (so
    an admin's read needs no snapshot: `needed`)."""
    if principal.role is Role.ADMIN:
        return frozenset()
    return frozenset(n for n, w in defined(app).items() if not may_see(principal, n, w))


def chosen(app: App, principal: Principal, layers: Sequence[Sequence[Any]]) -> str:
    """The workspace a request makes its objects in: `active_workspace` of its config layers
    (the last that says), else of the server's config, else ``default``. Refused when the
    server has no such workspace, or it is private to others (said the same way, so a private
    workspace's name is not confirmed to those outside it)."""
    name = app.config.active_workspace
    for _, values in layers:
        if isinstance(values, Mapping):
            if "workspaces" in values:
                raise InvalidConfig(
                    "workspaces are defined in the server's config only; drop `workspaces:` "
                    "from your config and choose one with `active_workspace: NAME`"
                )
            if values.get("active_workspace") is not None:
                name = str(values["active_workspace"])
    name = name or DEFAULT
    every = defined(app)
    found = every.get(name)
    if found is None or not may_see(principal, name, found):
        known = ", ".join(n for n, w in every.items() if may_see(principal, n, w))
        raise InvalidConfig(
            f"no workspace {name!r} (yours: {known}); choose one with --workspace NAME or "
            "`active_workspace: NAME` in your config"
        )
    return name


def check_infra(app: App, principal: Principal, name: str, infra: str) -> None:
    """Refuse a launch on `infra` in workspace `name` unless the workspace allows the infra,
    and, for a remote user who is not an admin, unless an infra on the server's own machine
    (`SERVER_MACHINE`) is named by the workspace outright."""
    found = defined(app).get(name)
    allowed = found.allowed_clouds if found is not None else None
    if allowed is not None and infra not in allowed:
        raise PermissionDenied(
            f"workspace {name} allows launches on {', '.join(allowed)} only, not {infra}; "
            "choose one of those infras, or another workspace with --workspace"
        )
    remote_user = principal.token_id is not None and principal.role is not Role.ADMIN
    on_server = infra in app.infras and app.infras.get(infra).role in SERVER_MACHINE
    if remote_user and on_server and (allowed is None or infra not in allowed):
        raise PermissionDenied(
            f"infra {infra} runs tasks on the API server's own machine as its user, so a "
            f"remote user may launch there only in a workspace whose allowed_clouds names "
            f"{infra}; choose a cloud, or ask an admin for such a workspace"
        )


async def workspaces_list(app: App, principal: Principal) -> m.WorkspaceList:
    """The workspaces `principal` may see, with their live clusters (one grouped query)."""
    every = defined(app)
    counts: dict[str, int] = {}
    for name, n in await views.live_clusters_by_workspace(app.store):
        key = name or DEFAULT
        counts[key] = counts.get(key, 0) + n
    return m.WorkspaceList(
        workspaces=[
            _record(name, w, counts.get(name, 0))
            for name, w in every.items()
            if may_see(principal, name, w)
        ]
    )


# -- an admin's changes (`stixctl workspaces create|update|delete`) --------------------------


def _as_config(spec: m.WorkspaceSpec) -> WorkspaceConfig:
    if spec.allowed_users and not spec.private:
        raise InvalidRequest(
            "allowed users only matter in a private workspace (everyone may use a public one); "
            "add --private, or drop --user"
        )
    return WorkspaceConfig(
        allowed_clouds=tuple(dict.fromkeys(spec.allowed_clouds)) if spec.allowed_clouds else None,
        private=spec.private,
        allowed_users=tuple(dict.fromkeys(spec.allowed_users)),
    )


def _check_infras(app: App, workspace: WorkspaceConfig) -> None:
    known = tuple(dict.fromkeys((*app.infras.names(), *app.providers, *KNOWN_CLOUDS)))
    unknown = [i for i in workspace.allowed_clouds or () if i not in known]
    if unknown:
        raise InvalidRequest(
            f"no infra {', '.join(unknown)} (known: {', '.join(known)}); name infras with --infra"
        )


def _not_in_file(app: App, name: str, doing: str) -> None:
    if name in app.config.workspaces:
        raise InvalidRequest(
            f"cannot {doing} workspace {name}: the server's config file defines it "
            "(`workspaces:`); change it there, or choose another name"
        )


def _record(name: str, workspace: WorkspaceConfig, clusters: int = 0) -> m.WorkspaceRecord:
    return m.WorkspaceRecord(
        name=name,
        private=workspace.private,
        allowed_clouds=list(workspace.allowed_clouds) if workspace.allowed_clouds else None,
        allowed_users=list(workspace.allowed_users),
        clusters=clusters,
    )


def _audit(app: App, event: str, **fields: Any) -> None:
    app.log.info(event, by=PRINCIPAL.get().name, **fields)


async def _live(app: App, name: str) -> str | None:
    """Its live clusters, managed jobs, pools and services in words (None: there are none)."""
    found = await rows.live_in(app.store, name, DEFAULT)
    if not found:
        return None
    words = {"managed_job": "managed job", "job_pool": "pool"}
    shown = [f"{words.get(kind, kind)} {ident}" for kind, ident in found[: rows.SHOWN_LIVE]]
    more = f" and more past {rows.SHOWN_LIVE}" if len(found) > rows.SHOWN_LIVE else ""
    return ", ".join(shown) + more


def _narrows(old: WorkspaceConfig, new: WorkspaceConfig) -> bool:
    """Whether `new` takes an infra or a user away from what `old` allowed."""
    if new.allowed_clouds is not None and (
        old.allowed_clouds is None or set(old.allowed_clouds) - set(new.allowed_clouds)
    ):
        return True
    if not new.private:
        return False
    return not old.private or bool(set(old.allowed_users) - set(new.allowed_users))


async def workspaces_create(app: App, req: m.WorkspacesCreate) -> m.WorkspaceList:
    new = _as_config(req.spec)
    _check_infras(app, new)
    if req.name in defined(app):
        raise InvalidRequest(
            f"workspace {req.name} exists; change it with "
            f"`{command('workspaces', 'update', req.name)} ...`"
        )
    try:
        await rows.create(app.store, req.name, msgspec.to_builtins(new), time.time())
    except rows.Exists:
        raise InvalidRequest(f"workspace {req.name} exists (just made by another admin)") from None
    _audit(app, "workspace_created", workspace=req.name)
    return m.WorkspaceList(workspaces=[_record(req.name, new)])


async def workspaces_update(app: App, req: m.WorkspacesUpdate) -> m.WorkspaceList:
    new = _as_config(req.spec)
    _check_infras(app, new)
    _not_in_file(app, req.name, "update")
    old = defined(app).get(req.name)
    if old is None:
        raise InvalidRequest(
            f"no workspace {req.name}; see `stixctl workspaces ls`, or make it with "
            f"`{command('workspaces', 'create', req.name)}`"
        )
    live = await _live(app, req.name) if _narrows(old, new) else None
    if live is not None:
        raise InvalidRequest(
            f"cannot update workspace {req.name}: it would take infras or users away from its "
            f"live {live}; take those down first, or only add infras and users"
        )
    try:
        await rows.put(
            app.store, req.name, msgspec.to_builtins(new), time.time(), implied=req.name == DEFAULT
        )
    except rows.Missing:
        raise InvalidRequest(f"no workspace {req.name} (just deleted by another admin)") from None
    _audit(app, "workspace_updated", workspace=req.name)
    return m.WorkspaceList(workspaces=[_record(req.name, new)])


async def workspaces_delete(app: App, req: m.WorkspacesDelete) -> m.OkReply:
    if req.name == DEFAULT:
        raise InvalidRequest(
            f"workspace {DEFAULT} cannot be deleted: objects that name no workspace are in it"
        )
    _not_in_file(app, req.name, "delete")
    if req.name not in defined(app):
        raise InvalidRequest(f"no workspace {req.name}; see `stixctl workspaces ls`")
    live = await _live(app, req.name)
    if live is not None:
        raise InvalidRequest(
            f"cannot delete workspace {req.name}: it has live {live}; take those down first"
        )
    try:
        await rows.delete(app.store, req.name)
    except rows.Missing:
        raise InvalidRequest(f"no workspace {req.name} (just deleted by another admin)") from None
    _audit(app, "workspace_deleted", workspace=req.name)
    return m.OkReply(f"Deleted workspace {req.name}.")
