"""Two stixd replicas of one PostgreSQL database that share no folder (issue 18, item 4): each
has its own home, so its own uploads and its own local nodes, as replicas on two hosts have.
A remote client's launch with a workdir, sent to B for a cluster A runs, has B hand A the
workdir's files (only what A lacks) and runs on A with them: over HTTP while A serves its API,
over A's socket once it does not. A forward over the socket carries the user it is asked for,
trusted only behind the deployment's secret, and A checks it again: a user's request for
another user's cluster, and a path that is not that user's upload on A, are refused by A.

One pair of daemons for the module, and alice's cluster w1 on A; A's API is stopped by the last
test.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from stixd.control import forward
from stixd.control.identity import Principal, Role
from stixproto import messages as m
from stixproto.errors import InvalidRequest, PermissionDenied, Unauthenticated
from stixproto.paths import socket_path
from stixproto.task.model import Task
from tests.conftest import Stix, kill_everything_under, wait_until
from tests.pg_server import PgServer
from tests.test_http_api import LOCAL_FOR_USERS, Remote, make_token
from tests.test_replicas import LEASE, Pair, _home, _stop
from tests.test_replicas_serve import _url


class Apart(Pair):
    def __init__(self, pair: Pair, urls: tuple[str, str], token: str) -> None:
        super().__init__(pair.a, pair.b, pair.db, pair.postgres)
        self.alice_a = Remote(pair.a, urls[0], token)
        self.alice_b = Remote(pair.b, urls[1], token)

    def hops(self, kind: str, id_: str) -> list[str]:
        """Where B forwarded requests about `kind id_` (`via` of its log lines)."""
        found = []
        for line in (self.b.home / "stixd.log").read_text().splitlines():
            entry = json.loads(line) if line.startswith("{") else {}
            if entry.get("event") == "forwarded" and (entry["kind"], entry["id"]) == (kind, id_):
                found.append(str(entry["via"]))
        return found


@pytest.fixture(scope="module")
def apart(postgres: PgServer) -> Iterator[Apart]:
    url = postgres.fresh()
    config = (
        f"db: {url}\ndaemon:\n  lease_seconds: {LEASE}\nlocal:\n  network: host\n{LOCAL_FOR_USERS}"
    )
    a, b = Stix(_home()), Stix(_home())
    try:
        for s in (a, b):
            (s.home / "config.yaml").write_text(config)
            s.run("daemon", "start", check=True)
            s.run("api", "start", "--port", "0", check=True)
        pair = Pair(a, b, url.rsplit("/", 1)[1], postgres)
        apart = Apart(pair, (_url(a), _url(b)), make_token(a, "alice", "user"))
        apart.alice_a.run("launch", "-c", "w1", "-y", "true", check=True)  # A runs w1
        yield apart
    finally:
        for s in (b, a):
            _stop(s)
        for s in (a, b):
            kill_everything_under(s.home)
            shutil.rmtree(s.home, ignore_errors=True)


def _tree(s: Stix) -> Path:
    [tree] = (s.home / "uploads" / "alice").glob("*/tree")
    return tree


def _launch_through_b(apart: Apart, code: Path) -> str:
    """alice's launch of `cat data.txt` in `code` on w1 (A's), sent to B; its job's log, read
    on A (whose nodes B does not reach) by its admin."""
    job = max(apart.a.jobs("w1")) + 1
    apart.alice_b.run(
        "launch", "-c", "w1", "-d", "-y", "--workdir", str(code), "cat data.txt", check=True
    )
    return str(apart.a.run("logs", "w1", str(job), check=True).stdout)


@pytest.mark.slow  # (it starts the module's two daemons)
def test_a_workdir_sent_to_b_for_a_cluster_a_runs_is_handed_to_a_and_runs_there(
    apart: Apart, tmp_path: Path
) -> None:
    assert apart.owner("cluster", "w1") == apart.owner_name(apart.a)
    code = tmp_path / "code"
    code.mkdir()
    (code / "data.txt").write_text("version one\n")
    (code / "same.txt").write_text("never changes\n")
    assert "version one" in _launch_through_b(apart, code)
    assert apart.hops("cluster", "w1") == [_url(apart.a)]  # over HTTP
    on_a, on_b = _tree(apart.a), _tree(apart.b)  # each replica's own copy
    assert sorted(p.name for p in on_a.iterdir()) == ["data.txt", "same.txt"]
    kept = (on_a / "same.txt").stat().st_ino
    (code / "data.txt").write_text("version two\n")
    assert "version two" in _launch_through_b(apart, code)
    assert (on_a / "same.txt").stat().st_ino == kept  # not handed over again
    assert (on_b / "data.txt").read_text() == (on_a / "data.txt").read_text() == "version two\n"


def _as(apart: Apart, principal: Principal, request: Any, secret: str | None = None) -> Any:
    """`request` sent to A's socket as B forwards one, asked for `principal`."""
    found = apart.sql("SELECT value FROM deployment WHERE name = 'replica_secret'")
    hop = forward.Hop(secret or found, principal)

    async def quiet(item: Any) -> None:
        pass

    async def call() -> Any:
        return await forward.call(str(socket_path(apart.a.home)), request, quiet, hop)

    return anyio.run(call)


def test_a_forward_over_the_socket_carries_the_user_and_the_owner_checks_it(
    apart: Apart, tmp_path: Path
) -> None:
    apart.a.run("api", "stop", check=True)
    name = apart.owner_name(apart.a)
    served = f"SELECT count(*) FROM replicas WHERE api IS NOT NULL AND name = '{name}'"
    wait_until(lambda: apart.sql(served) == "0", timeout=LEASE * 2)
    code = tmp_path / "code"
    code.mkdir()
    (code / "data.txt").write_text("version three\n")
    assert "version three" in _launch_through_b(apart, code)
    assert apart.hops("cluster", "w1")[-1] == str(socket_path(apart.a.home))
    alice, bob = Principal("alice", Role.USER), Principal("bob", Role.USER)
    before = sorted(apart.a.jobs("w1"))
    ran = _as(apart, alice, m.Exec(cluster="w1", task=Task(run="true"), detach=True))
    assert ran.job_id == before[-1] + 1  # alice's own cluster: run, as alice
    with pytest.raises(PermissionDenied, match="alice"):
        _as(apart, bob, m.Exec(cluster="w1", task=Task(run="true"), detach=True))
    with pytest.raises(Unauthenticated, match="replica secret"):  # a plain client's claim
        _as(apart, alice, m.Exec(cluster="w1", task=Task(run="true")), secret="not-it")
    elsewhere = m.Exec(cluster="w1", task=Task(run="true", workdir=str(code)), detach=True)
    with pytest.raises(InvalidRequest, match="a path on the server"):  # not alice's upload on A
        _as(apart, alice, elsewhere)
    assert sorted(apart.a.jobs("w1")) == [*before, ran.job_id]  # nothing more ran
