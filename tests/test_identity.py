"""Users, API tokens and roles: made with `stixctl` against a real daemon, checked by
`authenticate` and `authorize` on the daemon's own store.

The token checks open the daemon's `state.db` in this process once the daemon has stopped
(the HTTP server that will call `authenticate` is another slice); `authenticate` takes `now`
so an expiry is tested on the real rows without waiting a day.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from stixd.control import handlers
from stixd.control.identity import (
    LAST_USED_EVERY,
    LOCAL_OWNER,
    NEEDED,
    PRINCIPAL,
    Principal,
    Role,
    authenticate,
    authorize,
)
from stixproto import messages as m
from stixproto.errors import PermissionDenied, Unauthenticated
from stixproto.task import Task
from tests.app_support import app_on_store
from tests.conftest import Stix

DAY = 86400.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def token(stix: Stix, *args: str) -> str:
    """A new token from `stixctl tokens create ARGS`: the one line on stdout."""
    out = stix.run("tokens", "create", *args, check=True).stdout
    assert out.count("\n") == 1
    return out.strip()


def refusal(proc: Any) -> str:
    """The one line a refused command prints."""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stixctl: "), proc.stderr
    return str(lines[0])


def test_users_are_made_listed_given_roles_and_deleted_through_stixctl(stix: Stix) -> None:
    stix.run("users", "create", "alice", "--role", "admin", check=True)
    stix.run("users", "create", "bob", "--role", "viewer", check=True)
    stix.run("users", "create", "carol", check=True)  # the default role: user
    token(stix, "bob", "--name", "laptop")
    listed = {u["name"]: (u["role"], u["tokens"]) for u in stix.json("users", "ls")}
    assert listed == {"alice": ("admin", 0), "bob": ("viewer", 1), "carol": ("user", 0)}
    stix.run("users", "role", "bob", "user", check=True)
    assert {u["name"]: u["role"] for u in stix.json("users", "ls")}["bob"] == "user"
    again = stix.run("users", "create", "bob", "--role", "admin")
    assert again.returncode == 2 and "exists" in refusal(again)
    bad = stix.run("users", "create", "bad name!", "--role", "user")
    assert bad.returncode == 2 and "user name 'bad name!' is not valid" in refusal(bad)
    gone = stix.run("users", "delete", "nobody", "-y")
    assert gone.returncode == 3 and "no user 'nobody'" in refusal(gone)
    out = stix.run("users", "delete", "bob", "-y", check=True).stdout
    assert "revoked 1 token(s)" in out
    assert [t["revoked_at"] is not None for t in stix.json("tokens", "ls", "bob")] == [True]
    assert "bob" not in {u["name"] for u in stix.json("users", "ls")}


def test_the_last_admin_can_be_neither_deleted_nor_demoted(stix: Stix) -> None:
    stix.run("users", "create", "alice", "--role", "admin", check=True)
    for argv in (("users", "delete", "alice", "-y"), ("users", "role", "alice", "viewer")):
        refused = stix.run(*argv)
        assert refused.returncode == 2
        assert "alice, the last admin: make another user admin first" in refusal(refused)
    stix.run("users", "create", "dave", "--role", "admin", check=True)
    stix.run("users", "role", "alice", "viewer", check=True)  # dave is still an admin
    last = stix.run("users", "delete", "dave", "-y")
    assert last.returncode == 2 and "the last admin" in refusal(last)
    assert {u["name"]: u["role"] for u in stix.json("users", "ls")} == {
        "alice": "viewer",
        "dave": "admin",
    }


@pytest.mark.anyio
async def test_authenticate_takes_a_fresh_token_and_refuses_every_dead_one(stix: Stix) -> None:
    stix.run("users", "create", "erin", "--role", "user", check=True)
    stix.run("users", "create", "gone", "--role", "viewer", check=True)
    fresh = token(stix, "erin", "--name", "ci")
    short = token(stix, "erin", "--expires", "1")
    revoked = token(stix, "erin")
    rotated_away = token(stix, "erin")
    of_deleted = token(stix, "gone")
    ids = {t["name"] or t["id"]: t["id"] for t in stix.json("tokens", "ls")}
    revoked_id, rotated_id = revoked.split("_")[1], rotated_away.split("_")[1]
    stix.run("tokens", "revoke", revoked_id, check=True)
    rotated = stix.run("tokens", "rotate", rotated_id, check=True).stdout.strip()
    stix.run("users", "delete", "gone", "-y", check=True)
    stix.run("users", "create", "gone", "--role", "admin", check=True)  # a new user, same name
    stix.run("daemon", "stop", check=True)

    async with app_on_store(stix.home) as app:
        who = await authenticate(app, fresh)
        assert who == Principal(name="erin", role=Role.USER, token_id=ids["ci"])
        assert (await authenticate(app, rotated)).token_id == rotated_id
        assert (await authenticate(app, short, now=time.time() + 0.9 * DAY)).name == "erin"
        unknown = "stix_0123456789ab_" + "A" * 43
        wrong_secret = fresh[: -len("abcd")] + ("abcd" if not fresh.endswith("abcd") else "dcba")
        for dead, words in [
            (short, "expired at"),
            (revoked, "unknown, revoked or rotated"),
            (rotated_away, "unknown, revoked or rotated"),
            (of_deleted, "unknown, revoked or rotated"),
            (unknown, "unknown, revoked or rotated"),
            (wrong_secret, "unknown, revoked or rotated"),
            ("", "not a stix token"),
            ("Bearer " + fresh, "not a stix token"),
            (fresh + "x", "not a stix token"),
            (fresh.replace("stix_", "sky_"), "not a stix token"),
            ("stix_" + "é" * 56, "not a stix token"),
        ]:
            later = time.time() + 2 * DAY if dead is short else None
            with pytest.raises(Unauthenticated) as refused:
                await authenticate(app, dead, now=later)
            message = refused.value.message
            assert words in message and "stixctl api login" in message, (dead, message)
            assert "\n" not in message
            assert len(dead) < 20 or dead[-20:] not in message


@pytest.mark.anyio
async def test_a_rotated_token_lives_its_whole_lifetime_again(stix: Stix) -> None:
    stix.run("users", "create", "erin", check=True)
    old = token(stix, "erin", "--expires", "2")
    token_id = old.split("_")[1]
    created = stix.json("tokens", "ls")[0]
    rotated = stix.json("tokens", "rotate", token_id)
    assert rotated["token"]["id"] == token_id and rotated["token"]["user"] == "erin"
    assert rotated["token"]["expires_at"] >= created["expires_at"]
    assert rotated["token"]["expires_at"] == pytest.approx(rotated["token"]["rotated_at"] + 2 * DAY)
    new = rotated["secret"]
    assert new.startswith(f"stix_{token_id}_") and new != old
    stix.run("daemon", "stop", check=True)
    async with app_on_store(stix.home) as app:
        assert (await authenticate(app, new)).name == "erin"
        with pytest.raises(Unauthenticated):
            await authenticate(app, old)


@pytest.mark.anyio
async def test_a_tokens_last_use_is_written_at_most_once_a_minute(stix: Stix) -> None:
    stix.run("users", "create", "erin", check=True)
    secret = token(stix, "erin")
    stix.run("daemon", "stop", check=True)

    async with app_on_store(stix.home) as app:

        async def last_used() -> float | None:
            rows = await app.store.backend.fetch("SELECT last_used_at FROM tokens")
            return rows[0][0]

        assert await last_used() is None
        t0 = time.time()
        await authenticate(app, secret, now=t0)
        assert await last_used() == t0
        for later in (t0 + 1, t0 + LAST_USED_EVERY / 2, t0 + LAST_USED_EVERY - 0.01):
            await authenticate(app, secret, now=later)
            assert await last_used() == t0
        await authenticate(app, secret, now=t0 + LAST_USED_EVERY)
        assert await last_used() == t0 + LAST_USED_EVERY


# -- who may do what -------------------------------------------------------------------------


def test_every_request_type_is_in_the_access_table() -> None:
    assert set(m.Request.__args__) == set(NEEDED)


def test_a_request_type_missing_from_the_table_is_refused_even_to_an_admin() -> None:
    class Teleport(m.Msg, tag="teleport", frozen=True):
        cluster: str = "c"

    with pytest.raises(PermissionDenied, match="no access rule for teleport requests"):
        authorize(LOCAL_OWNER, Teleport())


def test_a_viewer_reads_but_is_told_why_it_cannot_act() -> None:
    viewer = Principal(name="bob", role=Role.VIEWER, token_id="0123456789ab")
    for read in (m.Status(), m.Queue(), m.Logs(cluster="c"), m.JobsQueue(), m.ServeStatus()):
        authorize(viewer, read)
    with pytest.raises(PermissionDenied) as refused:
        authorize(viewer, m.Launch(task=Task(run="true")))
    assert refused.value.message == (
        "user bob has role viewer, which cannot launch; ask an admin for role user"
    )
    with pytest.raises(PermissionDenied, match="cannot jobs launch; ask an admin for role user"):
        authorize(viewer, m.JobsLaunch(tasks=[Task(run="true")]))


def test_a_user_acts_and_only_an_admin_manages_users_and_tokens() -> None:
    user = Principal(name="carol", role=Role.USER)
    admin = Principal(name="alice", role=Role.ADMIN)
    for act in (m.Launch(task=Task(run="true")), m.Down(clusters=["c"]), m.ServeDown()):
        authorize(user, act)
    for manage in (m.UsersCreate(name="x"), m.TokensCreate(user="x"), m.TokensList()):
        with pytest.raises(PermissionDenied, match=r"role user, which cannot .* role admin"):
            authorize(user, manage)
        authorize(admin, manage)
    assert LOCAL_OWNER.role is Role.ADMIN and PRINCIPAL.get() == LOCAL_OWNER


@pytest.mark.anyio
async def test_every_request_passes_the_access_check_before_its_handler(tmp_path: Path) -> None:
    async with app_on_store(tmp_path) as app:
        viewer = PRINCIPAL.set(Principal(name="bob", role=Role.VIEWER))
        try:
            with pytest.raises(PermissionDenied, match="cannot users create"):
                await handlers.dispatch(app, m.UsersCreate(name="eve", role="admin"), _ignore)
            listed = await app.store.backend.fetch("SELECT name FROM users")
            assert listed == []  # refused before anything was written
        finally:
            PRINCIPAL.reset(viewer)
        made = await handlers.dispatch(app, m.UsersCreate(name="eve", role="admin"), _ignore)
        assert isinstance(made, m.UserList) and made.users[0].name == "eve"


async def _ignore(event: Any) -> None:
    pass


# -- secrets ---------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_no_secret_is_in_the_store_or_the_daemon_log(stix: Stix) -> None:
    stix.run("users", "create", "erin", check=True)
    secrets = [token(stix, "erin"), token(stix, "erin", "--expires", "3")]
    issued = stix.json("tokens", "rotate", secrets[0].split("_")[1])
    secrets.append(issued["secret"])
    stix.run("tokens", "revoke", secrets[1].split("_")[1], check=True)
    stix.run("daemon", "stop", check=True)
    async with app_on_store(stix.home) as app:
        await authenticate(app, secrets[2])
    files = [p for p in stix.home.iterdir() if p.name.startswith(("state.db", "stixd.log"))]
    assert {p.name for p in files} >= {"state.db", "stixd.log"}
    for path in files:
        data = path.read_bytes()
        for secret in secrets:
            assert secret.split("_", 2)[2].encode() not in data, path
    assert b"token_created" in (stix.home / "stixd.log").read_bytes()  # logged, by id


def test_the_sdk_manages_users_and_tokens_sync_and_async(stix: Stix) -> None:
    from stixctl.sdk import AsyncClient, Client

    stix.run("daemon", "start", check=True)
    sync, asynchronous = Client(stix.home, autostart=False), AsyncClient(stix.home, autostart=False)
    assert sync.users_create("alice", role="admin").role == "admin"
    made = anyio.run(asynchronous.users_create, "bob")
    assert made.role == "user"
    issued = sync.tokens_create("bob", expires_days=7, name="ci")
    assert issued.secret.startswith(f"stix_{issued.token.id}_")
    listed = anyio.run(asynchronous.tokens_ls, "bob")
    assert [t.id for t in listed] == [issued.token.id] and listed[0].name == "ci"
    assert anyio.run(asynchronous.tokens_rotate, issued.token.id).secret != issued.secret
    assert sync.tokens_revoke(issued.token.id).revoked_at is not None
    assert sync.users_role("bob", "viewer").role == "viewer"
    assert "revoked 0 token(s)" in anyio.run(asynchronous.users_delete, "bob")
    assert [u.name for u in sync.users_ls()] == ["alice"]
    assert msgspec.json.decode(msgspec.json.encode(issued), type=m.TokenIssued) == issued
