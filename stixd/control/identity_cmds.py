"""`stixctl users …`, `stixctl tokens …` and `stixctl workspaces create|update|delete`: the
admin's commands over users, API tokens and workspaces (the last in stixd/control/workspaces.py).

A token's secret exists only in the reply that hands it out (`TokenIssued`): the store keeps
its digest, the log names the token by its id.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from stixd.app import App
from stixd.control import identity, workspaces
from stixd.store import identity as rows
from stixproto import messages as m
from stixproto.errors import InternalError, InvalidRequest

Emit = Callable[[Any], Awaitable[None]]
DAY = 86400.0
MINT_TRIES = 5
"""Ids drawn for a new token before giving up (48 random bits: a second draw is already rare)."""


def user_record(row: rows.UserRow) -> m.UserRecord:
    return m.UserRecord(name=row.name, role=row.role, created_at=row.created_at, tokens=row.tokens)


def token_record(row: rows.TokenRow) -> m.TokenRecord:
    return m.TokenRecord(
        id=row.id,
        user=row.user,
        created_at=row.created_at,
        name=row.label,
        expires_at=row.expires_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
        rotated_at=row.rotated_at,
    )


def _audit(app: App, event: str, **fields: Any) -> None:
    app.log.info(event, by=identity.PRINCIPAL.get().name, **fields)


def _token_id(given: str) -> str:
    """The id a command names; a whole token pasted instead is refused without echoing it."""
    if given.startswith(identity.PREFIX):
        found = identity.token_id_of(given)
        if found is not None:
            raise InvalidRequest(
                f"give the token's ID ({found}), not the token itself; see `stixctl tokens ls`"
            )
        raise InvalidRequest("give a token's ID as `stixctl tokens ls` shows it")
    return given


async def users_create(app: App, req: m.UsersCreate) -> m.UserList:
    row = await rows.create_user(app.store, req.name, req.role, time.time())
    _audit(app, "user_created", user=row.name, role=row.role)
    return m.UserList(users=[user_record(row)])


async def users_list(app: App, req: m.UsersList) -> m.UserList:
    return m.UserList(users=[user_record(r) for r in await rows.users(app.store, time.time())])


async def users_delete(app: App, req: m.UsersDelete) -> m.OkReply:
    revoked = await rows.delete_user(app.store, req.name, time.time())
    _audit(app, "user_deleted", user=req.name, tokens_revoked=revoked)
    return m.OkReply(f"Deleted user {req.name}; revoked {revoked} token(s) of theirs.")


async def users_role(app: App, req: m.UsersRole) -> m.UserList:
    row = await rows.set_role(app.store, req.name, req.role)
    _audit(app, "user_role_set", user=row.name, role=row.role)
    return m.UserList(users=[user_record(row)])


async def tokens_create(app: App, req: m.TokensCreate) -> m.TokenIssued:
    lifetime = None if req.expires_days is None else req.expires_days * DAY
    for _ in range(MINT_TRIES):
        secret, token_id = identity.mint()
        try:
            row = await rows.create_token(
                app.store,
                token_id,
                req.user,
                identity.digest(secret),
                time.time(),
                label=req.name,
                lifetime=lifetime,
            )
        except rows.IdTaken:
            continue
        _audit(app, "token_created", token=row.id, user=row.user, expires_at=row.expires_at)
        return m.TokenIssued(token=token_record(row), secret=secret)
    raise InternalError(f"no free token id in {MINT_TRIES} draws; try again")


async def tokens_list(app: App, req: m.TokensList) -> m.TokenList:
    return m.TokenList(tokens=[token_record(r) for r in await rows.tokens(app.store, req.user)])


async def tokens_revoke(app: App, req: m.TokensRevoke) -> m.TokenList:
    row = await rows.revoke_token(app.store, _token_id(req.token_id), time.time())
    _audit(app, "token_revoked", token=row.id, user=row.user)
    return m.TokenList(tokens=[token_record(row)])


async def tokens_rotate(app: App, req: m.TokensRotate) -> m.TokenIssued:
    token_id = _token_id(req.token_id)
    secret, _ = identity.mint(token_id)
    row = await rows.rotate_token(app.store, token_id, identity.digest(secret), time.time())
    _audit(app, "token_rotated", token=row.id, user=row.user, expires_at=row.expires_at)
    return m.TokenIssued(token=token_record(row), secret=secret)


_HANDLERS: dict[type, Callable[[App, Any], Awaitable[Any]]] = {
    m.UsersCreate: users_create,
    m.UsersList: users_list,
    m.UsersDelete: users_delete,
    m.UsersRole: users_role,
    m.TokensCreate: tokens_create,
    m.TokensList: tokens_list,
    m.TokensRevoke: tokens_revoke,
    m.TokensRotate: tokens_rotate,
    m.WorkspacesCreate: workspaces.workspaces_create,
    m.WorkspacesUpdate: workspaces.workspaces_update,
    m.WorkspacesDelete: workspaces.workspaces_delete,
}
IDENTITY_REQUESTS = tuple(_HANDLERS)


async def dispatch(app: App, req: Any, emit: Emit) -> Any:
    return await _HANDLERS[type(req)](app, req)
