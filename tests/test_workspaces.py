"""Workspaces, defined in the server's config: a private one is invisible to users not in it,
each one's allowed infras are enforced at launch, and a remote user who is not an admin may
run on the server's own machine (`local`) only where a workspace names it."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import Stix
from tests.test_http_api import Remote, make_token, one_line, serve_http

WORKSPACES = """\
workspaces:
  default:
    allowed_clouds: [local]
  secret:
    private: true
    allowed_users: [alice]
    allowed_clouds: [local]
  cloudonly:
    allowed_clouds: [aws]
"""


def test_a_private_workspace_is_invisible_to_users_outside_it(stix: Stix) -> None:
    url = serve_http(stix, WORKSPACES)
    alice = Remote(stix, url, make_token(stix, "alice", "user"))
    bob = Remote(stix, url, make_token(stix, "bob", "user"))
    admin = Remote(stix, url, make_token(stix, "ada", "admin"))
    alice.run("launch", "-c", "s1", "--workspace", "secret", "-y", "-d", "true", check=True)

    mine = json.loads(alice.run("workspaces", "ls", "--json", check=True).stdout)
    assert {w["name"]: w["clusters"] for w in mine} == {"default": 0, "secret": 1, "cloudonly": 0}
    theirs = json.loads(bob.run("workspaces", "ls", "--json", check=True).stdout)
    assert [w["name"] for w in theirs] == ["default", "cloudonly"]
    assert bob.run("status", "-u", "--json", check=True).stdout.strip() == "[]"
    assert bob.run("status", "s1", "--json", check=True).stdout.strip() == "[]"
    gone = bob.run("down", "s1", "-y")
    assert gone.returncode != 0 and "cluster 's1' does not exist" in one_line(gone.stderr)
    refused = bob.run("launch", "-c", "b1", "--workspace", "secret", "-y", "true")
    line = one_line(refused.stderr)
    assert "no workspace 'secret'" in line and "default, cloudonly" in line, line

    everyone = json.loads(admin.run("status", "-u", "--json", check=True).stdout)
    assert [(c["name"], c["user"], c["workspace"]) for c in everyone] == [("s1", "alice", "secret")]
    assert "secret" in admin.run("workspaces", "ls", check=True).stdout


def test_a_workspaces_allowed_infras_refuse_a_launch_elsewhere(stix: Stix) -> None:
    url = serve_http(stix, WORKSPACES)
    alice = Remote(stix, url, make_token(stix, "alice", "user"))
    refused = alice.run("launch", "-c", "c1", "--workspace", "cloudonly", "-y", "true")
    assert refused.returncode == 7
    line = one_line(refused.stderr)
    assert "workspace cloudonly allows launches on aws only, not local" in line, line
    assert json.loads(alice.run("status", "-u", "--json", check=True).stdout) == []


def test_local_is_refused_to_remote_users_unless_a_workspace_names_it(
    stix: Stix, tmp_path: Path
) -> None:
    url = serve_http(stix, "")  # no workspaces: the default one names no infra
    alice = Remote(stix, url, make_token(stix, "alice", "user"))
    refused = alice.run("launch", "-c", "l1", "-y", "true")
    assert refused.returncode == 7
    line = one_line(refused.stderr)
    assert "infra local runs tasks on the API server's own machine" in line, line
    refused = alice.run("jobs", "launch", "-y", "-d", "true")
    assert "infra local runs tasks on the API server's own machine" in one_line(refused.stderr)
    stix.run("launch", "-c", "mine", "-y", "-d", "true", check=True)  # the socket's owner may
    layer = tmp_path / "ws.yaml"
    layer.write_text("workspaces:\n  default:\n    allowed_clouds: [local]\n")
    refused = alice.run("launch", "-c", "l1", "-y", "--config", str(layer), "true")
    assert "workspaces are defined in the server's config only" in one_line(refused.stderr)
