"""Users and their API tokens: the rows behind `stixctl users` and `stixctl tokens`.

A token is stored as its digest only (`stixd.control.identity.digest`), never in clear; the
store never sees a secret. Every check that guards a change (the user exists, the last admin
stays) runs inside the write that makes it, and every write that changes users holds the
`users` key (`Tx.serialize`), so two admins acting at once, on one daemon or on two replicas of
one database, cannot both pass it.
The SQL is portable (no SQLite-only functions): PostgreSQL runs the same statements.
"""

from __future__ import annotations

from dataclasses import dataclass

from stixd.store.db import Store
from stixd.store.txseam import Tx
from stixproto.errors import InvalidRequest, TokenNotFound, UserNotFound
from stixproto.names import command, shown

ADMIN = "admin"
USERS = "users"
"""The key every write that adds, removes or changes a user holds (`Tx.serialize`)."""


@dataclass(frozen=True, slots=True)
class UserRow:
    name: str
    role: str
    created_at: float
    tokens: int = 0
    """Tokens of theirs that still work (listings only)."""


@dataclass(frozen=True, slots=True)
class TokenRow:
    id: str
    user: str
    label: str | None
    created_at: float
    lifetime: float | None
    """Seconds a secret lives from its creation or rotation (None: for ever)."""
    expires_at: float | None
    last_used_at: float | None
    revoked_at: float | None
    rotated_at: float | None


@dataclass(frozen=True, slots=True)
class Credential:
    """What a request's token is checked against: one look-up by the token's id."""

    token_id: str
    digest: str
    user: str
    role: str
    expires_at: float | None
    last_used_at: float | None


class IdTaken(Exception):
    """A new token's random id is already used (the caller draws another)."""


_TOKEN_COLUMNS = (
    "id, user_name, label, created_at, lifetime, expires_at, last_used_at, revoked_at, rotated_at"
)


async def _user(tx: Tx, name: str) -> UserRow:
    found = await tx.one("SELECT name, role, created_at FROM users WHERE name=?", (name,))
    if found is None:
        raise UserNotFound(
            f"no user {shown(name)}; see `stixctl users ls`, or create one with "
            f"`{command('users', 'create', name, '--role', 'user')}`"
        )
    return UserRow(*found)


async def _token(tx: Tx, token_id: str) -> TokenRow:
    found = await tx.one(f"SELECT {_TOKEN_COLUMNS} FROM tokens WHERE id=?", (token_id,))
    if found is None:
        raise TokenNotFound(f"no token with ID {shown(token_id)}; see `stixctl tokens ls`")
    return TokenRow(*found)


async def _keep_an_admin(tx: Tx, user: UserRow, doing: str) -> None:
    if user.role != ADMIN:
        return
    found = await tx.one("SELECT COUNT(*) FROM users WHERE role=?", (ADMIN,))
    if found is None or found[0] <= 1:
        raise InvalidRequest(
            f"cannot {doing} {user.name}, the last admin: make another user admin first "
            f"(`stixctl users role NAME admin`)"
        )


# -- users -----------------------------------------------------------------------------------


async def create_user(store: Store, name: str, role: str, now: float) -> UserRow:
    async def work(tx: Tx) -> UserRow:
        await tx.serialize(USERS)
        if await tx.one("SELECT 1 FROM users WHERE name=?", (name,)) is not None:
            raise InvalidRequest(
                f"user {name} exists; change their role with "
                f"`{command('users', 'role', name, role)}`"
            )
        await tx.execute(
            "INSERT INTO users (name, role, created_at) VALUES (?,?,?)", (name, role, now)
        )
        return UserRow(name, role, now)

    return await store.backend.write(work)


async def set_role(store: Store, name: str, role: str) -> UserRow:
    async def work(tx: Tx) -> UserRow:
        await tx.serialize(USERS)
        user = await _user(tx, name)
        if role != ADMIN:
            await _keep_an_admin(tx, user, f"make {role}")
        await tx.execute("UPDATE users SET role=? WHERE name=?", (role, name))
        return UserRow(user.name, role, user.created_at)

    return await store.backend.write(work)


async def delete_user(store: Store, name: str, now: float) -> int:
    """Remove the user and revoke their tokens; how many tokens that revoked."""

    async def work(tx: Tx) -> int:
        await tx.serialize(USERS)
        user = await _user(tx, name)
        await _keep_an_admin(tx, user, "delete")
        await tx.execute("DELETE FROM users WHERE name=?", (name,))
        return await tx.execute(
            "UPDATE tokens SET revoked_at=? WHERE user_name=? AND revoked_at IS NULL", (now, name)
        )

    return await store.backend.write(work)


async def users(store: Store, now: float) -> list[UserRow]:
    rows = await store.backend.fetch(
        "SELECT u.name, u.role, u.created_at, (SELECT COUNT(*) FROM tokens t "
        "WHERE t.user_name = u.name AND t.revoked_at IS NULL "
        "AND (t.expires_at IS NULL OR t.expires_at > ?)) FROM users u ORDER BY u.name",
        (now,),
    )
    return [UserRow(*r) for r in rows]


# -- tokens ----------------------------------------------------------------------------------


async def create_token(
    store: Store,
    token_id: str,
    user: str,
    digest: str,
    now: float,
    *,
    label: str | None = None,
    lifetime: float | None = None,
) -> TokenRow:
    """A token for an existing user; `IdTaken` if `token_id` is (the caller draws another)."""
    expires = None if lifetime is None else now + lifetime
    row = TokenRow(token_id, user, label, now, lifetime, expires, None, None, None)

    async def work(tx: Tx) -> TokenRow:
        await _user(tx, user)
        if await tx.one("SELECT 1 FROM tokens WHERE id=?", (token_id,)) is not None:
            raise IdTaken(token_id)
        await tx.execute(
            f"INSERT INTO tokens ({_TOKEN_COLUMNS}, digest) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (token_id, user, label, now, lifetime, expires, None, None, None, digest),
        )
        return row

    return await store.backend.write(work)


async def tokens(store: Store, user: str | None = None) -> list[TokenRow]:
    sql = f"SELECT {_TOKEN_COLUMNS} FROM tokens"
    if user is None:
        rows = await store.backend.fetch(f"{sql} ORDER BY created_at, id")
    else:
        rows = await store.backend.fetch(
            f"{sql} WHERE user_name=? ORDER BY created_at, id", (user,)
        )
    return [TokenRow(*r) for r in rows]


async def revoke_token(store: Store, token_id: str, now: float) -> TokenRow:
    """Mark the token revoked (kept, so `tokens ls` shows it); revoking twice is no error."""

    async def work(tx: Tx) -> TokenRow:
        token = await _token(tx, token_id)
        if token.revoked_at is not None:
            return token
        await tx.execute("UPDATE tokens SET revoked_at=? WHERE id=?", (now, token_id))
        return await _token(tx, token_id)

    return await store.backend.write(work)


async def rotate_token(store: Store, token_id: str, digest: str, now: float) -> TokenRow:
    """Replace the token's digest (the old secret stops working with this commit) and start
    its lifetime again; a revoked token, or one whose user is gone, is not brought back."""

    async def work(tx: Tx) -> TokenRow:
        token = await _token(tx, token_id)
        if token.revoked_at is not None:
            raise InvalidRequest(
                f"token {token_id} is revoked; create a new one with "
                f"`{command('tokens', 'create', token.user)}`"
            )
        await _user(tx, token.user)
        expires = None if token.lifetime is None else now + token.lifetime
        await tx.execute(
            "UPDATE tokens SET digest=?, expires_at=?, rotated_at=? WHERE id=?",
            (digest, expires, now, token_id),
        )
        return await _token(tx, token_id)

    return await store.backend.write(work)


async def credential(store: Store, token_id: str) -> Credential | None:
    """The live token `token_id` with its user's role: one look-up by the tokens' primary key
    (None when there is no such token, it is revoked, or its user is gone)."""
    rows = await store.backend.fetch(
        "SELECT t.id, t.digest, u.name, u.role, t.expires_at, t.last_used_at "
        "FROM tokens t JOIN users u ON u.name = t.user_name "
        "WHERE t.id = ? AND t.revoked_at IS NULL",
        (token_id,),
    )
    return Credential(*rows[0]) if rows else None


async def touch(store: Store, token_id: str, now: float, every: float) -> None:
    """Record a use of the token unless one was recorded less than `every` seconds ago."""

    async def work(tx: Tx) -> None:
        await tx.execute(
            "UPDATE tokens SET last_used_at=? WHERE id=? "
            "AND (last_used_at IS NULL OR last_used_at <= ?)",
            (now, token_id, now - every),
        )

    await store.backend.write(work)
