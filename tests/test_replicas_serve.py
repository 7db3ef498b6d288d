"""Services and pools on two stixd replicas of one PostgreSQL database (issue 18, item 4), each
replica serving its HTTP API on loopback, so a request for an actor the other replica runs is
forwarded over HTTP with the deployment's replica secret (their homes, and so their sockets,
are apart). Replica A serves a service; B lists it, reads its logs and takes it down through
A; a forged forward with a user's token is refused; users own pools, and a pool that names no
owner (made before pools kept one) is every user's of its workspace; A killed with SIGKILL
while it runs a service has it taken over by B within the lease bound, the replica and the
balancer still running, nothing launched twice. Volume and storage requests reach the replica
whose actor runs the record (issue 19, item 4).

One pair of daemons for the module (the kill is the last test). Both homes see the same local
nodes and balancers: B's `clusters` and `serve` folders are links to A's (a cloud account and a
shared disk both replicas reach).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from stixd.balancer.layout import Layout
from stixproto import messages as m
from stixproto.edge import request_body
from tests.conftest import Stix, kill_everything_under, pid_alive, wait_until
from tests.pg_server import PgServer
from tests.test_http_api import LOCAL_FOR_USERS, Remote, headers, make_token, post
from tests.test_replicas import LEASE, Pair, _home, _stop
from tests.test_serve import free_port, get, replica_states, service_yaml, status


class Served(Pair):
    """The pair, with each replica's HTTP API URL."""

    def __init__(self, pair: Pair, urls: tuple[str, str]) -> None:
        super().__init__(pair.a, pair.b, pair.db, pair.postgres)
        self.url_a, self.url_b = urls

    def forwarded(self, s: Stix, kind: str, id_: str) -> list[dict[str, str]]:
        found = []
        for line in (s.home / "stixd.log").read_text().splitlines():
            entry = json.loads(line) if line.startswith("{") else {}
            if entry.get("event") == "forwarded" and (entry["kind"], entry["id"]) == (kind, id_):
                found.append(entry)
        return found


def _url(s: Stix) -> str:
    found = wait_until(lambda: (s.home / "api_server.json").exists(), timeout=10)
    assert found
    port = json.loads((s.home / "api_server.json").read_text())["port"]
    return f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def served(postgres: PgServer) -> Iterator[Served]:
    url = postgres.fresh()
    config = (
        f"db: {url}\ndaemon:\n  lease_seconds: {LEASE}\nlocal:\n  network: host\n{LOCAL_FOR_USERS}"
    )
    a, b = Stix(_home()), Stix(_home())
    for folder in ("clusters", "serve"):
        (a.home / folder).mkdir()
        (b.home / folder).symlink_to(a.home / folder)
    for s in (a, b):
        (s.home / "config.yaml").write_text(config)
        s.env["STIX__DAEMON__HEALTH_CHECK_SECONDS"] = "1"
        s.env["STIX__DAEMON__SERVE_PROBE_SECONDS"] = "0.3"
        s.env["STIX__DAEMON__SERVE_ROUND_SECONDS"] = "0.5"
    try:
        for s in (a, b):
            s.run("daemon", "start", check=True)
            s.run("api", "start", "--port", "0", check=True)
        pair = Served(Pair(a, b, url.rsplit("/", 1)[1], postgres), (_url(a), _url(b)))
        apis = "SELECT count(*) FROM replicas WHERE api LIKE 'http://127.0.0.1:%'"
        wait_until(lambda: pair.sql(apis) == "2", timeout=LEASE * 2)  # in each heartbeat
        yield pair
    finally:
        for s in (b, a):
            _stop(s)
        for s in (a, b):
            kill_everything_under(s.home)
            shutil.rmtree(s.home, ignore_errors=True)


@pytest.mark.slow  # (it starts the module's two daemons)
def test_a_service_served_by_a_is_listed_updated_read_and_taken_down_through_b_over_http(
    served: Served, task_file: Callable[[str], Path]
) -> None:
    a, b = served.a, served.b
    task = service_yaml(task_file, free_port())
    a.run("serve", "up", "-y", "-n", "web", str(task), check=True)
    assert served.owner("service", "web") == served.owner_name(a)
    wait_until(lambda: (status(b, "web") or {}).get("status") == "READY", timeout=60)
    b.run("serve", "update", "-y", "web", str(task), check=True)  # A's actor rolls it
    wait_until(lambda: (status(a, "web") or {}).get("version") == 2, timeout=20)
    lb = b.run("serve", "logs", "web", "--load-balancer", "--no-follow", check=True).stdout
    assert lb.strip()  # A's balancer's log, through A
    out = b.run("serve", "down", "web", "-y", check=True).stdout
    assert "web" in out
    wait_until(lambda: status(a, "web") is None, timeout=30)
    hops = served.forwarded(b, "service", "web")
    assert hops and all(h["via"] == served.url_a for h in hops), hops  # HTTP, not a socket
    assert served.sql("SELECT count(*) FROM leases WHERE kind = 'service'") == "0"
    secret = served.sql("SELECT value FROM deployment WHERE name = 'replica_secret'")
    assert len(secret) >= 43
    for s in (a, b):
        assert secret not in (s.home / "stixd.log").read_text()


def test_a_forged_forward_with_a_user_token_is_refused(served: Served) -> None:
    token = make_token(served.a, "mallory", "user")
    body = request_body(m.UsersList())
    forged = {**headers(None), "Stix-Replica": token, "Stix-On-Behalf-Of": "root admin"}
    code, frames = post(served.url_b, body, forged)
    assert code == 401 and isinstance(frames[0], m.ErrorReply)
    assert "replica secret" in frames[0].message and token not in frames[0].message
    both = {**headers(token), "Stix-On-Behalf-Of": "root admin"}  # a bearer's claim: ignored
    code, frames = post(served.url_b, body, both)
    assert code == 403 and frames[0].code == "permission_denied"
    assert token not in (served.b.home / "stixd.log").read_text()


def test_users_own_pools_and_a_pool_without_owner_is_its_workspaces(
    served: Served, task_file: Callable[[str], Path]
) -> None:
    alice = Remote(served.a, served.url_a, make_token(served.a, "alice", "user"))
    bob = Remote(served.b, served.url_b, make_token(served.a, "bob", "user"))
    pool = task_file("pool:\n  workers: 0\n")
    alice.run("jobs", "pool", "apply", "-p", "shared", "-y", str(pool), check=True)
    assert served.owner("job_pool", "shared") == served.owner_name(served.a)
    spec = "SELECT spec FROM actors WHERE kind = 'job_pool' AND id = 'shared'"
    assert json.loads(served.sql(spec))["owner"] == "alice"
    refused = bob.run("jobs", "pool", "down", "shared")
    assert refused.returncode == 7 and "belongs to alice" in refused.stderr
    job = json.loads(
        bob.run(
            "jobs", "launch", "--pool", "shared", "-d", "-y", "--json", "true", check=True
        ).stdout
    )["job_id"]  # run by A, where its pool is
    assert served.owner("managed_job", str(job)) == served.owner_name(served.a)
    data = "SELECT data FROM actors WHERE kind = 'job_pool' AND id = 'shared'"
    wait_until(lambda: json.loads(served.sql(data)).get("waiting") == [job], timeout=20)
    served.sql(  # as a pool made before pools kept owners (its actor writes no more now)
        "UPDATE actors SET spec = (spec::jsonb - 'owner')::text "
        "WHERE kind = 'job_pool' AND id = 'shared'"
    )
    listed = json.loads(bob.run("jobs", "pool", "status", "--json", check=True).stdout)
    assert [p["pool"] for p in listed] == ["shared"]
    bob.run("jobs", "pool", "down", "shared", check=True)  # through A, over HTTP
    assert len(served.forwarded(served.b, "job_pool", "shared")) == 2  # the launch, the down
    wait_until(lambda: served.a.json("jobs", "pool", "status") == [], timeout=30)
    ended = f"SELECT state FROM actors WHERE kind = 'managed_job' AND id = '{job}'"
    wait_until(lambda: served.sql(ended) == "CANCELLED", timeout=30)  # with its pool


def test_volume_and_storage_requests_reach_the_replica_that_runs_their_actor(
    served: Served, task_file: Callable[[str], Path]
) -> None:
    a, b = served.a, served.b
    local = task_file("name: repv\ntype: k8s-hostpath\ninfra: local\n")
    a.run("volumes", "apply", str(local), "-y", check=True)  # A's folder, A's actor
    assert served.owner("volume", "repv") == served.owner_name(a)
    assert (a.home / "volumes" / "repv").is_dir()
    claim = task_file("name: repc\ntype: k8s-pvc\ninfra: k8s/none\nsize: 1\n")
    a.run("volumes", "apply", str(claim), "-y")  # NOT_READY: no such context
    again = b.run("volumes", "apply", str(claim), "-y")  # made again by A's actor, not B
    assert again.returncode != 0 and "no Kubernetes context none" in again.stderr
    b.run("volumes", "delete", "repv", "repc", "-y", check=True)
    assert not (a.home / "volumes" / "repv").exists()
    assert served.sql("SELECT count(*) FROM actors WHERE kind = 'volume'") == "0"
    assert [h["via"] for h in served.forwarded(b, "volume", "repc")] == [served.url_a] * 2
    assert [h["via"] for h in served.forwarded(b, "volume", "repv")] == [served.url_a]

    spec = '{"name": "repb", "store": "s3", "bucket": "repb", "external": true}'
    served.sql(  # a storage whose actor A is to run (as a launch on A makes it)
        "INSERT INTO actors (kind, id, state, version, spec, data, created_at, updated_at) "
        f"VALUES ('storage', 'repb', 'READY', 1, '{spec}', '{{}}', 0, 0); "
        "INSERT INTO leases (kind, id, owner, epoch, expires_at) VALUES ('storage', 'repb', "
        f"'{served.owner_name(a)}', 1, extract(epoch from clock_timestamp()) + 3600)"
    )
    b.run("storage", "delete", "repb", "-y", check=True)
    assert served.sql("SELECT count(*) FROM actors WHERE kind = 'storage'") == "0"
    assert [h["via"] for h in served.forwarded(b, "storage", "repb")] == [served.url_a]


@pytest.mark.slow
def test_a_killed_while_serving_has_its_service_taken_over_by_b_replica_and_balancer_kept(
    served: Served, task_file: Callable[[str], Path]
) -> None:
    a, b = served.a, served.b
    a.run("serve", "up", "-y", "-n", "kept", str(service_yaml(task_file, free_port())), check=True)
    wait_until(lambda: replica_states(b, "kept") == {1: "READY"}, timeout=60)
    endpoint = b.run("serve", "status", "kept", "--endpoint", check=True).stdout.strip()
    assert get(endpoint) == "hello 1"
    balancer = int(Layout((a.home / "serve" / "kept").resolve()).pid.read_text())
    died = served.kill_a()
    wait_until(lambda: served.taken_by_b("service", "kept"), timeout=LEASE * 4)
    assert time.monotonic() - died < LEASE * 4 / 3 + 1.0
    replicas = "SELECT id FROM actors WHERE kind = 'replica' AND id LIKE 'kept%'"
    rids = served.sql(replicas).splitlines()
    assert rids
    wait_until(lambda: all(served.taken_by_b("replica", r) for r in rids), timeout=LEASE * 2)
    wait_until(lambda: "took_over" in (b.home / "stixd.log").read_text(), timeout=10)
    for _ in range(6):  # a few of B's rounds: the replica stays, none is launched anew
        assert replica_states(b, "kept") == {1: "READY"}
        assert get(endpoint) == "hello 1"
        time.sleep(0.5)
    assert pid_alive(balancer)  # the balancer A started, adopted by B
    assert int(Layout((b.home / "serve" / "kept").resolve()).pid.read_text()) == balancer
    b.run("serve", "down", "kept", "-y", check=True)
    clusters = "SELECT id FROM actors WHERE kind = 'cluster' AND id LIKE 'kept-%'"
    jobs = "SELECT count(*) FROM actors WHERE kind = 'job' AND id LIKE 'kept-%'"
    assert served.sql(clusters) == "kept-1" and served.sql(jobs) == "1"  # its server, run once
    wait_until(lambda: status(b, "kept") is None, timeout=60)
    wait_until(lambda: not pid_alive(balancer), timeout=20)
    wait_until(lambda: not any(n.startswith("kept") for n in b.clusters()), timeout=30)
