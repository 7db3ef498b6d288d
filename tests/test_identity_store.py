"""The rows behind users and tokens (stixd/store/identity.py), on the store itself: the checks
that guard each change run inside its write, even with two admins acting at once.

The `open_any` fixture here opens SQLite only. Once tests/conftest.py has its own `open_any`
(SQLite and a throw-away PostgreSQL, from the PostgreSQL branch of issue 18), delete this one:
the same tests then run on both engines (checked on a trial merge: they pass there)."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import anyio
import pytest

from stixd.control import identity
from stixd.store import identity as rows
from stixd.store.db import Store, open_store
from stixproto.errors import InvalidRequest, TokenNotFound, UserNotFound

pytestmark = pytest.mark.anyio
DAY = 86400.0
OpenStore = Callable[[], AbstractAsyncContextManager[Store]]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def open_any(tmp_path: Path) -> OpenStore:
    return lambda: open_store(tmp_path / "s.db")


async def test_a_token_is_found_by_its_id_with_its_users_role_until_revoked(
    open_any: OpenStore,
) -> None:
    async with open_any() as store:
        now = time.time()
        await rows.create_user(store, "bob", "viewer", now)
        secret, token_id = identity.mint()
        made = await rows.create_token(
            store, token_id, "bob", identity.digest(secret), now, label="ci", lifetime=DAY
        )
        assert made.expires_at == pytest.approx(now + DAY) and made.label == "ci"
        found = await rows.credential(store, token_id)
        assert found == rows.Credential(token_id, identity.digest(secret), "bob", "viewer",
                                        made.expires_at, None)  # fmt: skip
        await rows.set_role(store, "bob", "user")
        assert (await rows.credential(store, token_id)).role == "user"  # type: ignore[union-attr]
        revoked = await rows.revoke_token(store, token_id, now + 1)
        assert revoked.revoked_at == now + 1
        assert (await rows.revoke_token(store, token_id, now + 2)).revoked_at == now + 1
        assert await rows.credential(store, token_id) is None
        with pytest.raises(InvalidRequest, match="is revoked; create a new one"):
            await rows.rotate_token(store, token_id, "x" * 64, now + 3)
        with pytest.raises(TokenNotFound):
            await rows.revoke_token(store, "0123456789ab", now)
        with pytest.raises(UserNotFound, match="no user 'nobody'"):
            await rows.create_token(store, "ba9876543210", "nobody", "x" * 64, now)


async def test_rotation_replaces_the_digest_and_restarts_the_lifetime(open_any: OpenStore) -> None:
    async with open_any() as store:
        now = time.time()
        await rows.create_user(store, "bob", "user", now)
        old, token_id = identity.mint()
        await rows.create_token(store, token_id, "bob", identity.digest(old), now, lifetime=DAY)
        new, same = identity.mint(token_id)
        assert same == token_id and new != old
        rotated = await rows.rotate_token(store, token_id, identity.digest(new), now + 100)
        assert rotated.expires_at == pytest.approx(now + 100 + DAY)
        assert rotated.rotated_at == now + 100 and rotated.created_at == now
        found = await rows.credential(store, token_id)
        assert found is not None and found.digest == identity.digest(new)
        with pytest.raises(rows.IdTaken):
            await rows.create_token(store, token_id, "bob", identity.digest(old), now)


async def test_a_use_is_recorded_once_a_minute_at_most(open_any: OpenStore) -> None:
    async with open_any() as store:
        now = time.time()
        await rows.create_user(store, "bob", "user", now)
        await rows.create_token(store, "0123456789ab", "bob", "x" * 64, now)
        for t in (now + 5, now + 10, now + 64):
            await rows.touch(store, "0123456789ab", t, 60)
        assert (await rows.tokens(store, "bob"))[0].last_used_at == now + 5
        await rows.touch(store, "0123456789ab", now + 65, 60)
        assert (await rows.tokens(store, "bob"))[0].last_used_at == now + 65


async def test_two_admins_demoting_each_other_at_once_leave_one_admin(
    open_any: OpenStore,
) -> None:
    async with open_any() as store:
        now = time.time()
        await rows.create_user(store, "alice", "admin", now)
        await rows.create_user(store, "carol", "admin", now)
        refused: list[str] = []

        async def demote(name: str) -> None:
            try:
                await rows.set_role(store, name, "viewer")
            except InvalidRequest as exc:
                refused.append(exc.message)

        async with anyio.create_task_group() as tg:
            tg.start_soon(demote, "alice")
            tg.start_soon(demote, "carol")
        roles = {u.name: u.role for u in await rows.users(store, now)}
        assert sorted(roles.values()) == ["admin", "viewer"] and len(refused) == 1
        assert "the last admin: make another user admin first" in refused[0]


async def test_deleting_a_user_revokes_their_tokens_and_lists_count_live_ones(
    open_any: OpenStore,
) -> None:
    async with open_any() as store:
        now = time.time()
        await rows.create_user(store, "alice", "admin", now)
        await rows.create_user(store, "bob", "user", now)
        for n, lifetime in enumerate((None, DAY, 1.0)):
            await rows.create_token(
                store, f"00000000000{n}", "bob", "x" * 64, now, lifetime=lifetime
            )
        later = now + 10  # the one-second token has expired
        assert [(u.name, u.tokens) for u in await rows.users(store, later)] == [
            ("alice", 0),
            ("bob", 2),
        ]
        assert await rows.delete_user(store, "bob", later) == 3
        assert all(t.revoked_at == later for t in await rows.tokens(store, "bob"))
        assert [u.name for u in await rows.users(store, later)] == ["alice"]
        await rows.create_user(store, "bob", "admin", later)  # the name again: a new user
        assert await rows.credential(store, "000000000000") is None
