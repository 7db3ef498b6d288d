"""Autoscaling end to end: a real daemon, the REAL balancer process (the daemon's own), real
HTTP replicas on `local`, and requests sent through the service's endpoint.

The autoscaler's periods are shortened for speed (a decision every 0.5 s instead of 20 s, the
QPS over the last 4 s instead of 60 s: `daemon.serve_decision_seconds`,
`daemon.serve_qps_window_seconds`); its rules are the ones the daemon runs with by default.
The spot test runs on the FAKE provider's in-memory nodes, which run no process: its replicas
are never READY, so it checks, in a few seconds, what the autoscaler decides with spot replicas
missing or not READY (the on-demand stand-ins, the replacement of a preempted replica), not
traffic. tests/test_serve_spot.py runs the same rules end to end on the fake's process nodes:
real replicas preempted under load, stand-ins READY and then taken down, no failed request.
"""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from stixd.actors.service_view import replica_weights
from stixproto.task.service import Scaling
from tests.conftest import Stix, wait_until

SERVER = """\
import http.server, os
port = int(os.environ["STIX_SERVE_PORT"])
rid = os.environ["SKYPILOT_SERVE_REPLICA_ID"]

class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("hello " + rid).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass

# all addresses: a node may have its own
http.server.ThreadingHTTPServer(("", port), H).serve_forever()
"""
WINDOW_SECONDS = 4.0
DECISION_SECONDS = 0.5


def fast_autoscaler(stix: Stix) -> Stix:
    """The daemon's own balancers, with fast probes and short autoscaler periods."""
    stix.env.pop("STIX_TEST_BALANCERS", None)
    stix.env["STIX__DAEMON__SERVE_PROBE_SECONDS"] = "0.3"
    stix.env["STIX__DAEMON__SERVE_ROUND_SECONDS"] = "0.5"
    stix.env["STIX__DAEMON__SERVE_DECISION_SECONDS"] = str(DECISION_SECONDS)
    stix.env["STIX__DAEMON__SERVE_QPS_WINDOW_SECONDS"] = str(WINDOW_SECONDS)
    return stix


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def autoscaled(task_file: Callable[[str], Path], policy: str) -> Path:
    server = task_file(SERVER).with_name("scaling_server.py")
    server.write_text(SERVER)
    return task_file(
        "service:\n"
        "  readiness_probe: {path: /, initial_delay_seconds: 60, timeout_seconds: 2}\n"
        f"  replica_policy: {{{policy}, upscale_delay_seconds: 0, downscale_delay_seconds: 0}}\n"
        f"  ports: {free_port()}\n"
        f"run: python3 {server}\n"
    )


def service(stix: Stix, name: str) -> dict[str, Any] | None:
    found = [s for s in stix.json("serve", "status") if s["name"] == name]
    return found[0] if found else None


def status_of(stix: Stix, name: str) -> str | None:
    record = service(stix, name)
    return None if record is None else str(record["status"])


def replicas(stix: Stix, name: str) -> dict[int, dict[str, Any]]:
    record = service(stix, name)
    return {r["replica_id"]: r for r in record["replicas"]} if record else {}


def states(stix: Stix, name: str) -> dict[int, str]:
    return {i: r["status"] for i, r in replicas(stix, name).items()}


def on_spot(replica: dict[str, Any]) -> bool:
    """Whether the replica's cluster was launched on spot (`1x fake/fake-1 fake-node spot`)."""
    return "spot" in replica["resources"].split()


def decided(stix: Stix, name: str) -> list[str]:
    history = stix.json("events", "--kind", "service", name)
    return [e["id"] for e in history if e["event"] == "decided"]


def endpoint_of(stix: Stix, name: str) -> str:
    out = stix.run("serve", "status", name, "--endpoint", check=True).stdout.strip()
    assert out.startswith("http://127.0.0.1:"), out
    return out


def call(url: str, timeout: float = 10) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except OSError as exc:
        return 0, str(exc)


class Load:
    """GET requests to ``url`` at ``per_second`` (never catching up on a late one), from a thread,
    for at most ``limit`` seconds."""

    def __init__(self, url: str, per_second: float, limit: float = 90.0) -> None:
        self.url, self.gap, self.limit = url, 1.0 / per_second, limit
        self.answers: list[tuple[int, str]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        end = time.monotonic() + self.limit
        next_at = time.monotonic()
        while not self.stop.is_set() and time.monotonic() < end:
            self.answers.append(call(self.url))
            next_at = max(next_at + self.gap, time.monotonic())
            self.stop.wait(max(0.0, next_at - time.monotonic()))

    def bodies(self) -> set[str]:
        return {body for _, body in list(self.answers)}

    def failures(self) -> list[tuple[int, str]]:
        return [a for a in self.answers if a[0] != 200]


@contextmanager
def load(url: str, per_second: float) -> Iterator[Load]:
    running = Load(url, per_second)
    running.thread.start()
    try:
        yield running
    finally:
        running.stop.set()
        running.thread.join(timeout=20)


def test_a_qps_step_brings_a_second_replica_into_rotation_and_its_end_takes_it_away(
    stix: Stix, task_file: Callable[[str], Path]
) -> None:
    fast_autoscaler(stix)
    # 3 requests/s against 2 per replica wants 2 replicas (3 would take more than 4/s)
    policy = "min_replicas: 1, max_replicas: 3, target_qps_per_replica: 2"
    stix.run("serve", "up", "-y", "-n", "web", str(autoscaled(task_file, policy)), check=True)
    wait_until(lambda: states(stix, "web") == {1: "READY"}, timeout=40)
    endpoint = endpoint_of(stix, "web")
    wait_until(lambda: call(endpoint) == (200, "hello 1"), timeout=10)
    with load(endpoint, per_second=3) as running:
        started = time.monotonic()
        wait_until(lambda: states(stix, "web").get(2) == "READY", timeout=40)
        ready_after = time.monotonic() - started
        wait_until(lambda: "hello 2" in running.bodies(), timeout=10)  # in the balancer's rotation
        assert states(stix, "web") == {1: "READY", 2: "READY"}
    assert running.failures() == []
    assert len(running.answers) >= 3
    print(f"load start to a second replica READY: {ready_after:.1f} s")
    # the load is over: once its requests leave the window, the newest replica goes
    wait_until(lambda: states(stix, "web") == {1: "READY"}, timeout=WINDOW_SECONDS + 20)
    wait_until(lambda: "web-2" not in stix.clusters(), timeout=20)
    assert call(endpoint) == (200, "hello 1")
    assert decided(stix, "web") == ["web/1", "web/2"]  # never a third
    assert status_of(stix, "web") == "READY"


def test_a_request_to_a_service_at_zero_waits_for_the_replica_it_wakes_up(
    stix: Stix, task_file: Callable[[str], Path]
) -> None:
    fast_autoscaler(stix)
    policy = "min_replicas: 0, max_replicas: 1, target_qps_per_replica: 1"
    stix.run("serve", "up", "-y", "-n", "idle", str(autoscaled(task_file, policy)), check=True)
    wait_until(lambda: status_of(stix, "idle") == "NO_REPLICA", timeout=20)
    assert replicas(stix, "idle") == {}
    endpoint = endpoint_of(stix, "idle")
    answer: list[tuple[int, str]] = []
    waiting = threading.Thread(target=lambda: answer.append(call(endpoint, timeout=60)))
    waiting.start()
    try:
        # the request is held in the balancer's queue while the replica it asked for comes up
        wait_until(lambda: 1 in states(stix, "idle"), timeout=15)
        assert not answer, answer
        waiting.join(timeout=60)
    finally:
        waiting.join(timeout=60)
    assert answer == [(200, "hello 1")]
    assert states(stix, "idle") == {1: "READY"}
    # no more requests: once the window is past, back to zero
    wait_until(lambda: status_of(stix, "idle") == "NO_REPLICA", timeout=WINDOW_SECONDS + 20)
    wait_until(lambda: replicas(stix, "idle") == {}, timeout=20)
    assert "idle-1" not in stix.clusters()
    assert decided(stix, "idle") == ["idle/1"]


def test_a_preempted_spot_replica_is_replaced_on_spot_while_an_on_demand_one_stands_in(
    stix: Stix, task_file: Callable[[str], Path]
) -> None:
    fast_autoscaler(stix)
    stix.env["STIX__FAKE__ENABLED"] = "true"  # fake nodes run nothing: replicas stay STARTING
    path = task_file(
        "resources: {infra: fake, use_spot: true}\n"
        "service:\n"
        "  readiness_probe: {path: /, initial_delay_seconds: 600}\n"
        "  replica_policy: {min_replicas: 1, max_replicas: 1, dynamic_ondemand_fallback: true}\n"
        "  ports: 8080\n"
        "run: serve\n"
    )
    stix.run("serve", "up", "-y", "-n", "spotty", str(path), check=True)
    both = {1: "STARTING", 2: "STARTING"}
    wait_until(lambda: states(stix, "spotty") == both, timeout=30)
    # the spot replica is not READY: an on-demand stand-in runs beside it (SkyServe's dynamic
    # fallback), each cluster launched as its replica was ordered whatever the task says
    first = replicas(stix, "spotty")
    assert (first[1]["spot"], first[2]["spot"]) == (True, False)
    assert on_spot(first[1]) and not on_spot(first[2])
    stix.run("fake", "preempt", "spotty-1", check=True)
    wait_until(lambda: states(stix, "spotty").get(1) == "PREEMPTED", timeout=30)
    wait_until(lambda: states(stix, "spotty").get(3) == "STARTING", timeout=30)
    after = replicas(stix, "spotty")
    assert after[3]["spot"] is True and on_spot(after[3])
    assert after[2]["status"] == "STARTING" and after[2]["spot"] is False  # the stand-in stays
    assert decided(stix, "spotty") == ["spotty/1", "spotty/2", "spotty/3"]
    assert status_of(stix, "spotty") == "REPLICA_INIT"


def test_instance_aware_balancing_weighs_a_replica_by_its_accelerators_target() -> None:
    targets = Scaling(target_qps_per_replica={"A100:1": 8, "T4": 2})
    weigh = replica_weights("instance_aware_least_load", targets)
    assert (weigh("A100"), weigh("T4"), weigh("L4"), weigh(None)) == (8.0, 2.0, 2.0, 2.0)
    assert replica_weights("least_load", targets)("A100") == 1.0  # weights only where asked
    plain = replica_weights("instance_aware_least_load", Scaling(target_qps_per_replica=3))
    assert plain("A100") == 1.0
