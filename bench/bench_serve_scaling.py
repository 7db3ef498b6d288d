"""The autoscaler's reaction to a QPS step, end to end: a real daemon, its real balancer process,
real HTTP replicas on `local`, requests through the service's endpoint.

A service at one READY replica (`min_replicas: 1, max_replicas: 2`, `upscale_delay_seconds: 0`)
gets a steady load from one moment on; the benchmark times, from that moment, the second
replica's decision, its launch, its readiness and its first answer through the endpoint, and
splits the reaction into its parts:
- window: until the requests in the QPS window exceed the target (the rate is averaged over the
  window, so a step is seen only as it fills it; the target here is crossed after about 1 s);
- round: from then until the decision round that launches the replica (the decision period);
- launch: decided -> STARTING (its cluster is up and its command submitted);
- probe: STARTING -> READY (its server starts, and the next readiness probe passes; a STARTING
  replica is probed every `serve_starting_probe_seconds`, 1 s, until its first pass);
- push: READY -> its first answer through the endpoint (the ready set pushed to the balancer).

Three settings, in one run: SkyServe's periods (a decision every 20 s over a 60 s window, a
probe every 10 s) with stix's 1 s probes of a STARTING replica, the same with a STARTING replica
probed every 10 s as SkyServe does (`skyserve10`), and the short ones the tests use (0.5 s, 4 s,
0.3 s). `--only NAME`. Figures are printed as seconds and as shares of the reaction, and the
probe wait of the first two as a ratio; nothing asserts on time.
"""

from __future__ import annotations

import argparse
import json
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import Home, stix_home

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

http.server.ThreadingHTTPServer(("", port), H).serve_forever()
"""
RATE = 20.0
"""Requests per second of the load."""


@dataclass(frozen=True)
class Setting:
    name: str
    decision_seconds: float
    window_seconds: float
    probe_seconds: float
    starting_probe_seconds: float


SETTINGS = {
    "skyserve": Setting(
        "SkyServe's periods (20 s rounds, 60 s window, 10 s probes), STARTING probed every 1 s",
        *(20, 60, 10, 1),
    ),
    "skyserve10": Setting(
        "SkyServe's periods, STARTING probed every 10 s too (as SkyServe does)", 20, 60, 10, 10
    ),
    "short": Setting("short periods (0.5 s rounds, 4 s window, 0.3 s probes)", 0.5, 4, 0.3, 0.3),
}


@dataclass
class Load:
    """GET requests to ``url`` at ``RATE`` per second from a thread, until stopped."""

    url: str
    sent: list[float] = field(default_factory=list)
    answers: list[tuple[float, int, str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self, limit: float) -> None:
        end = time.monotonic() + limit
        next_at = time.monotonic()
        while not self.stop.is_set() and time.monotonic() < end:
            self.sent.append(time.time())
            status, body = call(self.url)
            self.answers.append((time.time(), status, body))
            next_at = max(next_at + 1 / RATE, time.monotonic())
            self.stop.wait(max(0.0, next_at - time.monotonic()))

    def first_answer_from(self, body: str) -> float | None:
        return next((at for at, status, b in list(self.answers) if b == body), None)


def call(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except OSError:
        return 0, ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def until(what: str, check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise SystemExit(f"{what}: not within {timeout:g} s")


def states(home: Home, name: str) -> dict[int, str]:
    records = json.loads(home.ctl("serve", "status", name, "--json").stdout or "[]")
    return {r["replica_id"]: r["status"] for s in records for r in s["replicas"]}


def event_at(events: list[dict[str, Any]], replica: str, event: str, to: str | None) -> float:
    for e in events:
        if e["id"] == replica and e["event"] == event and (to is None or e["to_state"] == to):
            return float(e["at"])
    raise SystemExit(f"no event {event} -> {to} of {replica}")


def crossing(sent: list[float], threshold: float, setting: Setting) -> float:
    """When the window first held more than ``threshold`` requests (the target is crossed)."""
    for i, at in enumerate(sent):
        if sum(1 for t in sent[: i + 1] if t >= at - setting.window_seconds) > threshold:
            return at
    raise SystemExit("the load never crossed the target")


def scenario(setting: Setting, workdir: Path) -> dict[str, float]:
    with stix_home() as home:
        home.env.pop("STIX_TEST_BALANCERS", None)
        home.env["STIX__DAEMON__SERVE_PROBE_SECONDS"] = str(setting.probe_seconds)
        home.env["STIX__DAEMON__SERVE_STARTING_PROBE_SECONDS"] = str(setting.starting_probe_seconds)
        home.env["STIX__DAEMON__SERVE_DECISION_SECONDS"] = str(setting.decision_seconds)
        home.env["STIX__DAEMON__SERVE_QPS_WINDOW_SECONDS"] = str(setting.window_seconds)
        home.env["STIX__DAEMON__SERVE_ROUND_SECONDS"] = str(min(5.0, setting.decision_seconds))
        server = workdir / "server.py"
        server.write_text(SERVER)
        # the target is crossed once the window holds more than RATE * 1 s of requests
        target = RATE / setting.window_seconds
        task = workdir / "service.yaml"
        task.write_text(
            "service:\n"
            "  readiness_probe: {path: /, initial_delay_seconds: 120, timeout_seconds: 2}\n"
            f"  replica_policy: {{min_replicas: 1, max_replicas: 2, target_qps_per_replica: "
            f"{target:g}, upscale_delay_seconds: 0, downscale_delay_seconds: 3600}}\n"
            f"  ports: {free_port()}\n"
            f"run: python3 {server}\n"
        )
        home.ctl("serve", "up", "-y", "-n", "web", str(task))
        until("replica 1 READY", lambda: states(home, "web") == {1: "READY"}, 120)
        endpoint = home.ctl("serve", "status", "web", "--endpoint").stdout.strip()
        before: list[float] = []  # requests before the load count in its window too

        def first_answer() -> bool:
            before.append(time.time())
            return call(endpoint) == (200, "hello 1")

        until("replica 1 in rotation", first_answer, 30)
        load = Load(endpoint)
        thread = threading.Thread(target=load.run, args=(180.0,), daemon=True)
        start = time.time()
        thread.start()
        try:
            until("replica 2 READY", lambda: states(home, "web").get(2) == "READY", 150)
            until("replica 2 answers", lambda: load.first_answer_from("hello 2"), 30)
        finally:
            load.stop.set()
            thread.join(timeout=30)
        events = json.loads(
            home.ctl("events", "--kind", "service", "web", "--json", "--limit", "1000").stdout
        )
        crossed = crossing(before + load.sent, target * setting.window_seconds, setting)
        decided = event_at(events, "web/2", "decided", None)
        starting = event_at(events, "web/2", "up", "STARTING")
        ready = event_at(events, "web/2", "probe_passed", "READY")
        answered = load.first_answer_from("hello 2")
        assert answered is not None
        failed = [a for a in load.answers if a[1] != 200]
        home.ctl("serve", "down", "-y", "web", check=False)
        return {
            "window": crossed - start,
            "round": decided - crossed,
            "launch": starting - decided,
            "probe": ready - starting,
            "push": answered - ready,
            "to_ready": ready - start,
            "to_rotation": answered - start,
            "requests": float(len(load.answers)),
            "failed": float(len(failed)),
        }


def report(setting: Setting, f: dict[str, float]) -> None:
    total = f["to_rotation"]
    print(f"\n{setting.name}")
    print(f"  load start -> replica 2 READY:          {f['to_ready']:6.2f} s")
    print(f"  load start -> replica 2 in rotation:    {total:6.2f} s")
    for part in ("window", "round", "launch", "probe", "push"):
        print(f"    {part:7s} {f[part]:6.2f} s  ({f[part] / total:5.1%} of it)")
    print(f"  round wait / decision period: {f['round'] / setting.decision_seconds:.2f}")
    print(
        f"  probe wait / starting-probe period: {f['probe'] / setting.starting_probe_seconds:.2f}"
    )
    print(f"  requests through the endpoint: {f['requests']:.0f}, non-200: {f['failed']:.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(SETTINGS))
    args = parser.parse_args()
    chosen = [args.only] if args.only else ["short", "skyserve", "skyserve10"]
    found: dict[str, dict[str, float]] = {}
    for key in chosen:
        with tempfile.TemporaryDirectory(prefix="stxbs") as tmp:
            found[key] = scenario(SETTINGS[key], Path(tmp))
            report(SETTINGS[key], found[key])
    if "skyserve" in found and "skyserve10" in found:
        fast, slow = found["skyserve"], found["skyserve10"]

        def decided_to_rotation(f: dict[str, float]) -> float:
            return f["launch"] + f["probe"] + f["push"]  # not the round wait: its phase is chance

        print(
            "\nSTARTING probed every 1 s vs every 10 s: probe wait "
            f"x{fast['probe'] / slow['probe']:.2f}, decision -> in rotation "
            f"x{decided_to_rotation(fast) / decided_to_rotation(slow):.2f}"
        )


if __name__ == "__main__":
    main()
