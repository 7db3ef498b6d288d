"""Owners: every cluster, job and managed job is its maker's. A real daemon serving HTTP on
loopback, users with real tokens: a user acts only on their own objects and lists them (all
users' with `-u`), an admin acts on any, a viewer lists but acts on none, and rows from before
owners were kept are the local owner's."""

from __future__ import annotations

import json
import sqlite3

from stixd.control.identity import LOCAL_OWNER
from tests.conftest import Stix, wait_until
from tests.test_http_api import Remote, make_token, one_line, serve_http


def names(listing: list[dict[str, object]]) -> set[object]:
    return {c["name"] for c in listing}


def test_a_user_acts_only_on_their_own_cluster_an_admin_on_any_a_viewer_on_none(
    stix: Stix,
) -> None:
    url = serve_http(stix)
    alice = Remote(stix, url, make_token(stix, "alice", "user"))
    bob = Remote(stix, url, make_token(stix, "bob", "user"))
    viewer = Remote(stix, url, make_token(stix, "vera", "viewer"))
    admin = Remote(stix, url, make_token(stix, "ada", "admin"))
    alice.run("launch", "-c", "a1", "-y", "echo alice-was-here", check=True)

    for args in (("down", "a1", "-y"), ("exec", "a1", "echo", "x"), ("logs", "a1", "1")):
        refused = bob.run(*args)
        assert refused.returncode == 7, refused
        line = one_line(refused.stderr)
        assert "cluster a1 belongs to alice" in line and "bob" in line, line
    assert "a1" not in names(json.loads(bob.run("status", "--json", check=True).stdout))
    everyone = json.loads(bob.run("status", "-u", "--json", check=True).stdout)
    assert [(c["name"], c["user"]) for c in everyone] == [("a1", "alice")]
    table = bob.run("status", "-u", check=True).stdout
    assert "USER" in table and "alice" in table
    assert "alice" in bob.run("queue", "-u", check=True).stdout  # its jobs, with their user
    assert "a1" in names(json.loads(alice.run("status", "--json", check=True).stdout))
    assert "alice-was-here" in alice.run("logs", "a1", "1", check=True).stdout

    seen = viewer.run("status", "-u", check=True).stdout
    assert "a1" in seen
    refused = viewer.run("down", "a1", "-y")
    assert refused.returncode == 7 and "role viewer" in one_line(refused.stderr)

    assert "a1" not in admin.run("status", check=True).stdout  # an admin's own, without -u
    assert "a1" in admin.run("status", "-u", check=True).stdout
    admin.run("exec", "a1", "echo by-the-admin", check=True)
    admin.run("down", "a1", "-y", check=True)
    assert names(json.loads(alice.run("status", "--json", check=True).stdout)) == set()


def test_a_users_down_all_reaches_only_their_own_clusters(stix: Stix) -> None:
    url = serve_http(stix)
    alice = Remote(stix, url, make_token(stix, "alice", "user"))
    bob = Remote(stix, url, make_token(stix, "bob", "user"))
    alice.run("launch", "-c", "a1", "-y", "-d", "true", check=True)
    bob.run("launch", "-c", "b1", "-y", "-d", "true", check=True)
    bob.run("down", "-a", "-y", check=True)
    left = json.loads(alice.run("status", "-u", "--json", check=True).stdout)
    assert [(c["name"], c["user"]) for c in left] == [("a1", "alice")]
    refused = bob.run("launch", "-c", "a1", "-y", "echo", "over")  # a relaunch is the owner's
    assert refused.returncode == 7 and "belongs to alice" in one_line(refused.stderr)


def test_a_managed_job_and_its_cluster_are_its_submitters(stix: Stix) -> None:
    url = serve_http(stix)
    alice = Remote(stix, url, make_token(stix, "alice", "user"))
    bob = Remote(stix, url, make_token(stix, "bob", "user"))
    alice.run("jobs", "launch", "-n", "train", "-y", "-d", "sleep 30", check=True)

    def alices_job() -> list[dict[str, object]]:
        out = json.loads(bob.run("jobs", "queue", "-u", "--json", check=True).stdout)
        return [j for j in out if j["name"] == "train"]

    wait_until(lambda: bool(alices_job()), timeout=20)
    job = alices_job()[0]
    assert job["user"] == "alice"
    assert json.loads(bob.run("jobs", "queue", "--json", check=True).stdout) == []
    refused = bob.run("jobs", "cancel", str(job["job_id"]), "-y")
    assert refused.returncode == 7
    assert f"managed job {job['job_id']} belongs to alice" in one_line(refused.stderr)
    # its cluster is made for alice: hers to see without -u, not bob's
    wait_until(
        lambda: any(
            c["name"].startswith("train")
            for c in json.loads(alice.run("status", "--json", check=True).stdout)
        ),
        timeout=30,
    )
    assert json.loads(bob.run("status", "--json", check=True).stdout) == []
    alice.run("jobs", "cancel", str(job["job_id"]), "-y", check=True)


def test_rows_from_before_owners_were_kept_are_the_local_owners(stix: Stix) -> None:
    stix.run("launch", "-c", "old", "-y", "-d", "true", check=True)
    stix.run("daemon", "stop", check=True)
    with sqlite3.connect(stix.home / "state.db") as db:  # as an earlier stixd wrote it
        db.execute(
            "UPDATE actors SET spec = json_remove(spec, '$.owner', '$.workspace') "
            "WHERE kind = 'cluster'"
        )
        (spec,) = db.execute("SELECT spec FROM actors WHERE kind = 'cluster'").fetchone()
    assert "owner" not in json.loads(spec)
    url = serve_http(stix)
    assert "old" in names(stix.json("status"))  # the local owner's own, without -u
    alice = Remote(stix, url, make_token(stix, "alice", "user"))
    assert json.loads(alice.run("status", "--json", check=True).stdout) == []
    everyone = json.loads(alice.run("status", "-u", "--json", check=True).stdout)
    assert [(c["name"], c["user"], c["workspace"]) for c in everyone] == [
        ("old", LOCAL_OWNER.name, "default")
    ]
    refused = alice.run("down", "old", "-y")
    assert f"cluster old belongs to {LOCAL_OWNER.name}" in one_line(refused.stderr)
    stix.run("down", "old", "-y", check=True)
