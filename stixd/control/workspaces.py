"""Workspaces (SkyPilot's `workspaces:`): named parts of a team server, each with the infras
its launches may use, and, when private, the only users who see it.

They are defined in the server's own config (`Config.workspaces`); a request only chooses one,
with `active_workspace` in its config layers (`--workspace`). The workspace ``default`` always
exists and is open to everyone. Every check here reads the config already in memory: no query.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from stixd.app import App
from stixd.config import WorkspaceConfig
from stixd.control.identity import Principal, Role
from stixd.planner.infra_meta import Role as InfraRole
from stixd.store import views
from stixproto import messages as m
from stixproto.errors import InvalidConfig, PermissionDenied

DEFAULT = "default"
SERVER_MACHINE = frozenset({InfraRole.MACHINE, InfraRole.POOLS})
"""Infras (by their planner role) that run a task on the server's own machine or on its SSH
hosts, as the daemon's user: a remote user who is not an admin may use them only where a
workspace names them."""


def defined(app: App) -> dict[str, WorkspaceConfig]:
    """Every workspace of the server, ``default`` first (an open one unless configured)."""
    found = dict(app.config.workspaces)
    return {DEFAULT: found.pop(DEFAULT, WorkspaceConfig()), **found}


def may_see(principal: Principal, name: str, workspace: WorkspaceConfig) -> bool:
    """Whether `principal` sees workspace `name` and may use it: admins see every one."""
    if principal.role is Role.ADMIN or not workspace.private:
        return True
    return principal.name in workspace.allowed_users


def hidden(app: App, principal: Principal) -> frozenset[str]:
    """The private workspaces `principal` is not in: their objects are left out of listings
    and refused by name as if they did not exist."""
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
            m.WorkspaceRecord(
                name=name,
                private=w.private,
                allowed_clouds=list(w.allowed_clouds) if w.allowed_clouds else None,
                allowed_users=list(w.allowed_users),
                clusters=counts.get(name, 0),
            )
            for name, w in every.items()
            if may_see(principal, name, w)
        ]
    )
