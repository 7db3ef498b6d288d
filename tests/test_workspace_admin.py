"""Workspaces an admin makes, changes and removes (`stixctl workspaces create|update|delete`,
SkyPilot's `workspaces`): through the socket, the HTTP API and the SDK, refused to users in
one line, kept in the store so that replicas on one database agree, and never removed or
narrowed from under live objects. Replicas share one store: SQLite here, and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from stixctl.sdk import Client
from stixd.control import handlers
from stixd.control.identity import PRINCIPAL, Principal, Role
from stixproto import messages as m
from stixproto.errors import InvalidRequest, PermissionDenied
from tests.app_support import app_on_store
from tests.conftest import OpenStore, Stix
from tests.test_http_api import Remote, make_token, one_line, serve_http


def _names(run: Any) -> dict[str, Any]:
    return {w["name"]: w for w in json.loads(run.stdout)}


def test_admins_manage_workspaces_users_are_refused_and_live_objects_keep_theirs(
    stix: Stix,
) -> None:
    url = serve_http(stix, "workspaces:\n  fixed:\n    allowed_clouds: [fake]\n")
    alice = Remote(stix, url, make_token(stix, "alice", "user"))
    bob = Remote(stix, url, make_token(stix, "bob", "user"))
    ada = Remote(stix, url, make_token(stix, "ada", "admin"))

    refused = alice.run("workspaces", "create", "mine", "--infra", "local")
    assert refused.returncode != 0
    assert "user alice has role user, which cannot workspaces create" in one_line(refused.stderr)
    ada.run(  # an admin over HTTP
        "workspaces",
        "create",
        "team",
        "--infra",
        "local",
        "--private",
        "--user",
        "alice",
        check=True,
    )
    assert _names(alice.run("workspaces", "ls", "--json", check=True))["team"]["private"]
    assert "team" not in _names(bob.run("workspaces", "ls", "--json", check=True))
    alice.run("launch", "-c", "t1", "--workspace", "team", "-y", "-d", "true", check=True)
    assert json.loads(bob.run("status", "-u", "--json", check=True).stdout) == []

    gone = stix.run("workspaces", "delete", "team", "-y")  # the daemon's owner, over the socket
    assert gone.returncode != 0
    assert "cannot delete workspace team: it has live cluster t1" in one_line(gone.stderr)
    narrowed = stix.run("workspaces", "update", "team", "--infra", "local", "--private")
    assert "would take infras or users away from its live cluster t1" in one_line(narrowed.stderr)
    stix.run(  # widening is fine while t1 runs: bob is added
        "workspaces",
        "update",
        "team",
        "--infra",
        "local",
        "--infra",
        "aws",
        "--private",
        "--user",
        "alice",
        "--user",
        "bob",
        check=True,
    )
    team = _names(bob.run("workspaces", "ls", "--json", check=True))["team"]
    assert team["allowed_clouds"] == ["local", "aws"] and team["clusters"] == 1

    alice.run("down", "t1", "-y", check=True)
    assert "Deleted workspace team." in stix.run("workspaces", "delete", "team", "-y").stdout
    assert "team" not in _names(ada.run("workspaces", "ls", "--json", check=True))
    refused = alice.run("launch", "-c", "t2", "--workspace", "team", "-y", "true")
    assert "no workspace 'team'" in one_line(refused.stderr)

    for argv, said in (
        (("delete", "default"), "workspace default cannot be deleted"),
        (("create", "../etc"), "workspace name '../etc' is not valid"),
        (("create", "x", "--infra", "mars"), "no infra mars (known:"),
        (("create", "x", "--user", "bob"), "allowed users only matter in a private workspace"),
        (("create", "default"), "workspace default exists"),
        (("update", "fixed"), "the server's config file defines it"),
        (("update", "nope"), "no workspace nope"),
    ):
        out = stix.run("workspaces", *argv, "-y" if argv[0] == "delete" else "--json")
        assert out.returncode != 0 and said in one_line(out.stderr), (argv, out.stderr)


def test_the_sdk_manages_workspaces_and_the_default_one_can_be_restricted(stix: Stix) -> None:
    client = Client(stix.home)
    made = client.workspaces_create("lab", infras=["fake"], private=True, users=["carol"])
    assert (made.name, made.allowed_clouds, made.allowed_users) == ("lab", ["fake"], ["carol"])
    restricted = client.workspaces_update("default", infras=["local"])
    assert restricted.allowed_clouds == ["local"]
    listed = {w.name: w for w in client.workspaces_ls()}
    assert listed["default"].allowed_clouds == ["local"] and listed["lab"].private
    assert client.workspaces_delete("lab") == "Deleted workspace lab."
    with pytest.raises(InvalidRequest, match="cannot be deleted"):
        client.workspaces_delete("default")


@pytest.mark.anyio
async def test_replicas_on_one_store_see_each_others_workspaces_at_once(
    tmp_path: Path, open_any: OpenStore
) -> None:
    async with (
        app_on_store(tmp_path, opener=open_any) as one,
        app_on_store(tmp_path, opener=open_any) as other,
    ):
        spec = m.WorkspaceSpec(private=True, allowed_users=["alice"])
        await handlers.dispatch(one, m.WorkspacesCreate(name="shared", spec=spec), _ignore)
        seen = await handlers.dispatch(other, m.WorkspacesList(), _ignore)
        assert [w.name for w in seen.workspaces] == ["default", "shared"]

        bob = PRINCIPAL.set(Principal(name="bob", role=Role.USER, token_id="0" * 12))
        try:
            hidden = await handlers.dispatch(other, m.WorkspacesList(), _ignore)
            assert [w.name for w in hidden.workspaces] == ["default"]
            with pytest.raises(PermissionDenied, match="cannot workspaces delete"):
                await handlers.dispatch(other, m.WorkspacesDelete(name="shared"), _ignore)
        finally:
            PRINCIPAL.reset(bob)

        # a row damaged in the store hides its workspace from all but admins
        await other.store.backend.write(
            lambda tx: tx.execute("UPDATE workspaces SET spec='{bad' WHERE name='shared'")
        )
        alice = PRINCIPAL.set(Principal(name="alice", role=Role.USER, token_id="1" * 12))
        try:
            mine = await handlers.dispatch(one, m.WorkspacesList(), _ignore)
            assert [w.name for w in mine.workspaces] == ["default"]
        finally:
            PRINCIPAL.reset(alice)
        await handlers.dispatch(one, m.WorkspacesDelete(name="shared"), _ignore)
        left = await handlers.dispatch(other, m.WorkspacesList(), _ignore)
        assert [w.name for w in left.workspaces] == ["default"]


async def _ignore(event: Any) -> None:
    pass
