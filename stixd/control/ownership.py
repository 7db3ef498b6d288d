"""Whose each cluster, job, managed job and service is, and who may see it and act on it.

An object records its owner (a user's name) and workspace in its spec when it is made, from
the request's principal (`made_for`, read in the handler: an actor task keeps the principal
of the request that spawned it for good, so actors never read it). A row written before
owners were kept says neither: it is the local owner's, in the default workspace.

SkyPilot's meaning: a user acts on their own objects, sees everyone's with `-u` (listings
show their own without it), and never sees a private workspace they are not in; an admin
acts on everything; a viewer only reads listings. Each request is checked once: a listing
through one `Scope` made for the request, filtering rows it already read; an action on one
object through `check_acts` on the row it already read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from stixd.app import App
from stixd.control import workspaces
from stixd.control.identity import LOCAL_OWNER, PRINCIPAL, Principal, Role
from stixd.store import views
from stixd.store.db import Row
from stixproto.errors import PermissionDenied, StixError


def owner_of(spec: object) -> str:
    """The owner a stored spec names; the local owner for a row from before owners were kept
    (or one whose spec cannot be read)."""
    owner = spec.get("owner") if isinstance(spec, dict) else None
    return owner if isinstance(owner, str) and owner else LOCAL_OWNER.name


def recorded_owner(spec: object) -> str | None:
    """The owner a stored spec names, None if it names none."""
    owner = spec.get("owner") if isinstance(spec, dict) else None
    return owner if isinstance(owner, str) and owner else None


def workspace_of(spec: object) -> str:
    found = spec.get("workspace") if isinstance(spec, dict) else None
    return found if isinstance(found, str) and found else workspaces.DEFAULT


@dataclass(frozen=True, slots=True)
class MadeFor:
    """Who a new object is made for, and where."""

    owner: str
    workspace: str


def made_for(app: App, layers: Sequence[Sequence[Any]]) -> MadeFor:
    """The owner and workspace of what the current request makes (`workspaces.chosen`)."""
    principal = PRINCIPAL.get()
    return MadeFor(principal.name, workspaces.chosen(app, principal, layers))


@dataclass(frozen=True, slots=True)
class Scope:
    """Whose objects one listing shows: made once per request, asked per row in memory."""

    principal: Principal
    all_users: bool
    hidden: frozenset[str]
    """Private workspaces the principal is not in."""

    def sees(self, spec: object) -> bool:
        if self.hidden and workspace_of(spec) in self.hidden:
            return False
        return self.all_users or owner_of(spec) == self.principal.name

    def user(self, spec: object) -> str | None:
        """The USER column of a listing with `-u` (None without: every row is the caller's)."""
        return owner_of(spec) if self.all_users else None

    def workspace(self, spec: object) -> str | None:
        return workspace_of(spec) if self.all_users else None

    def where(self) -> views.Where:
        """`sees` as SQL conditions, for a listing the store filters."""
        owner = None if self.all_users else self.principal.name
        local = self.principal.name == LOCAL_OWNER.name
        return views.owned(owner, local=local, hidden=self.hidden, default=workspaces.DEFAULT)

    @property
    def everything(self) -> bool:
        """Whether this scope leaves nothing out (a listing may skip the filter)."""
        return self.all_users and not self.hidden


def check_where(app: App, task: Any, workspace: str) -> None:
    """Refuse `task` where it would run if `workspace` (or the requester) may not use that
    infra (`workspaces.check_infra`)."""
    infra, _ = app.target(task)
    workspaces.check_infra(app, PRINCIPAL.get(), workspace, infra)


def scope(app: App, all_users: bool) -> Scope:
    principal = PRINCIPAL.get()
    return Scope(principal, all_users, workspaces.hidden(app, principal))


def check_acts(
    app: App, row: Row, what: str, missing: StixError, *, shared_if_ownerless: bool = False
) -> None:
    """Refuse the current principal acting on `row` (a `what` such as ``cluster web``) unless
    it is theirs or they are an admin; a row in a private workspace they are not in is
    `missing` to them, as one that does not exist. With `shared_if_ownerless` (pools, which
    kept no owner at first), a row naming no owner is every user's of its workspace."""
    principal = PRINCIPAL.get()
    if principal.role is Role.ADMIN:
        return
    if workspace_of(row.spec) in workspaces.hidden(app, principal):
        raise missing
    if shared_if_ownerless and not recorded_owner(row.spec):
        return
    owner = owner_of(row.spec)
    if owner != principal.name:
        raise PermissionDenied(
            f"{what} belongs to {owner}; user {principal.name} may act only on their own "
            "(see yours with `stixctl status`; an admin may act on any)"
        )


def acts_on_all() -> bool:
    """Whether `-a` (`down -a`, `jobs cancel --all`) reaches every user's objects: an admin's
    does; a user's reaches their own, as SkyPilot's does without `-u`."""
    return PRINCIPAL.get().role is Role.ADMIN


def mine(row: Row) -> bool:
    return owner_of(row.spec) == PRINCIPAL.get().name
