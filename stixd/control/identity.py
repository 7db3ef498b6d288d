"""Who asks, and whether they may: principals, API tokens, and the one table of who may do what.

Whoever reaches the Unix socket is the daemon's own user (the server checked the peer's uid):
`LOCAL_OWNER`, an admin. A remote request carries a token that `authenticate` turns into a
`Principal`; the server that took the request sets `PRINCIPAL` for it, and `handlers.dispatch`
calls `authorize` on every request, whatever it came through, before anything else happens.
`authorize` decides by the request's type alone (`NEEDED`): one dictionary look-up, never a
query. A type missing from the table is refused: a new request is closed until someone decides
who may send it.
"""

from __future__ import annotations

import contextvars
import enum
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass

from stixd.app import App
from stixd.login_name import login_name
from stixd.store import identity as rows
from stixproto import messages as m
from stixproto.errors import PermissionDenied, Unauthenticated


class Role(enum.Enum):
    """SkyPilot's roles: a viewer reads; a user also acts on their own and shared objects; an
    admin also manages users, tokens and workspaces."""

    ADMIN = "admin"
    USER = "user"
    VIEWER = "viewer"


RANK = {Role.VIEWER: 0, Role.USER: 1, Role.ADMIN: 2}
"""Each role may do everything the roles below it may."""


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    role: Role
    token_id: str | None = None
    """The token the request came with (None: the Unix socket)."""


LOCAL_OWNER = Principal(name=login_name(), role=Role.ADMIN)
"""Whoever reaches the Unix socket: its peer's uid is the daemon's own (stixd.control.server)."""

PRINCIPAL: contextvars.ContextVar[Principal] = contextvars.ContextVar(
    "stix_principal", default=LOCAL_OWNER
)
"""Who sent the request being handled; a server sets it for each request it takes. Read it in
the request's handler and pass it on: a task started meanwhile (an actor spawned for the
request) inherits the value and keeps it for its whole life, long after the request."""


# -- tokens ----------------------------------------------------------------------------------

PREFIX = "stix_"
ID_CHARS = 12
"""Hex characters of a token's id: 48 random bits, enough that ids never collide in practice
(a collision is drawn again); not secret, the secret is the part after it."""
SECRET_BYTES = 32
"""256 random bits from `secrets`."""
_TOKEN = re.compile(rf"{PREFIX}([0-9a-f]{{{ID_CHARS}}})_([A-Za-z0-9_-]{{43}})")
TOKEN_LENGTH = len(PREFIX) + ID_CHARS + 1 + 43
LAST_USED_EVERY = 60.0
"""A token's last use is written at most once a minute: a request is never a write."""


def mint(token_id: str | None = None) -> tuple[str, str]:
    """A new token `stix_<id>_<secret>` and its id (a new random one unless given: rotation
    keeps the id). The id is visible, so `tokens ls` and logs can name a token."""
    token_id = token_id or secrets.token_hex(ID_CHARS // 2)
    return f"{PREFIX}{token_id}_{secrets.token_urlsafe(SECRET_BYTES)}", token_id


def token_id_of(token: str) -> str | None:
    """The id of a well-formed token, None for anything else."""
    if len(token) != TOKEN_LENGTH:
        return None
    found = _TOKEN.fullmatch(token)
    return found.group(1) if found else None


def digest(token: str) -> str:
    """What the store keeps of a token. A plain SHA-256 is enough here, unlike for passwords: a
    token carries 256 random bits, so no guess list or brute force can reach it from the digest,
    and a slow hash (bcrypt, argon2) would only cost every request milliseconds."""
    return hashlib.sha256(token.encode()).hexdigest()


_LOGIN = "log in again with `stixctl api login ENDPOINT --token TOKEN`"


async def authenticate(app: App, bearer: str, *, now: float | None = None) -> Principal:
    """The principal a request's bearer token stands for; `Unauthenticated` (one line, what to
    do) for a malformed, unknown, revoked, rotated-away or expired token. One look-up by the
    token's id, then a constant-time comparison of digests. `now`: the clock's time if None."""
    token_id = token_id_of(bearer)
    if token_id is None:
        raise Unauthenticated(
            f"the API token is not a stix token (stix_<id>_<secret>): {_LOGIN}, with a token "
            "an admin made with `stixctl tokens create USER`"
        )
    found = await rows.credential(app.store, token_id)
    if found is None or not hmac.compare_digest(
        str(found.digest).encode(), digest(bearer).encode()
    ):
        raise Unauthenticated(
            f"API token {token_id} is unknown, revoked or rotated: {_LOGIN}, with a token an "
            "admin made with `stixctl tokens create USER` (or rotated)"
        )
    now = time.time() if now is None else now
    if found.expires_at is not None and found.expires_at <= now:
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(found.expires_at))
        raise Unauthenticated(
            f"API token {token_id} expired at {when}: {_LOGIN}, with a token an admin renewed "
            f"with `stixctl tokens rotate {token_id}`"
        )
    try:
        role = Role(found.role)
    except ValueError:
        raise Unauthenticated(
            f"user {found.user} has no role stix knows; an admin sets one with "
            f"`stixctl users role {found.user} viewer|user|admin`"
        ) from None
    if found.last_used_at is None or now - found.last_used_at >= LAST_USED_EVERY:
        try:
            await rows.touch(app.store, token_id, now, LAST_USED_EVERY)
        except Exception as exc:  # a bookkeeping write never fails the request it describes
            app.log.warning("token_use_not_recorded", token=token_id, error=repr(exc))
    return Principal(name=found.user, role=role, token_id=token_id)


# -- access ----------------------------------------------------------------------------------

READ: tuple[type[m.Msg], ...] = (
    m.Status,
    m.Queue,
    m.Logs,
    m.Events,
    m.CostReportReq,
    m.Check,
    m.PlanRequest,
    m.ReadTask,
    m.ShowGpus,
    m.CatalogStatus,
    m.DaemonStatus,
    m.JobsQueue,
    m.JobsLogs,
    m.PoolStatusReq,
    m.ServeStatus,
    m.ServeLogs,
    m.ApiInfo,
    m.WorkspacesList,  # those the caller may see (stixd.control.workspaces)
    m.VolumesList,  # the caller's own (-u: everyone's), as `status`
    m.StorageLs,
)
"""Requests that change nothing: every role."""

ACT: tuple[type[m.Msg], ...] = (
    m.Launch,
    m.Exec,
    m.Cancel,
    m.Stop,
    m.Start,
    m.Down,
    m.Autostop,
    m.NodeShell,
    m.CatalogUpdate,
    m.JobsLaunch,
    m.JobsCancel,
    m.PoolApply,
    m.PoolDown,
    m.ServeUp,
    m.ServeUpdate,
    m.ServeDown,
    m.UploadPlan,  # the files of a user's own task, kept apart per user (uploads.py)
    m.UploadFiles,
    m.VolumesApply,
    m.VolumesDelete,  # a user's own volumes (stixd.control.volume_cmds)
    m.StorageDelete,
)
"""Requests that make, change or end objects (a user's own or shared ones): users and admins."""

ADMINISTER: tuple[type[m.Msg], ...] = (
    m.UsersCreate,
    m.UsersList,
    m.UsersDelete,
    m.UsersRole,
    m.TokensCreate,
    m.TokensList,
    m.TokensRevoke,
    m.TokensRotate,
    m.WorkspacesCreate,
    m.WorkspacesUpdate,
    m.WorkspacesDelete,
    m.Leaks,  # finds (and terminates) any user's leftovers on every infra
    m.SshPools,  # the team's SSH hosts: set up and freed for everyone
    m.Shutdown,
    m.FakePreempt,
    m.ApiServe,  # and both refused over HTTP: the server's own machine only (http_api)
    m.ApiStop,
)
"""Requests about the server and its people rather than one's own objects: admins only."""

NEEDED: dict[type, Role] = {
    **dict.fromkeys(READ, Role.VIEWER),
    **dict.fromkeys(ACT, Role.USER),
    **dict.fromkeys(ADMINISTER, Role.ADMIN),
}
"""The role each request type needs at least; a type not here is refused."""


def _doing(request: object) -> str:
    tag = getattr(type(request), "__struct_config__", None)
    name = tag.tag if tag is not None and isinstance(tag.tag, str) else type(request).__name__
    return name.replace("_", " ")


def authorize(principal: Principal, request: object) -> None:
    """Refuse `request` with `PermissionDenied` (one line: who, what, whom to ask) unless
    `principal`'s role may send requests of its type."""
    needed = NEEDED.get(type(request))
    if needed is None:
        raise PermissionDenied(
            f"stixd has no access rule for {_doing(request)} requests and refuses them; "
            "upgrade stixd, or report it as a bug"
        )
    if RANK[principal.role] < RANK[needed]:
        raise PermissionDenied(
            f"user {principal.name} has role {principal.role.value}, which cannot "
            f"{_doing(request)}; ask an admin for role {needed.value}"
        )
