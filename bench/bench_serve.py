"""Serving as a user meets it, on `local` with the real balancer:

1. `stixctl serve status` with a few READY services, as whole-process wall time against the
   floor (``sys.executable -c pass``, bench.common.FLOOR), sampled in turn. Target <= 2x.
2. Errors while stixd is `kill -9`ed and started again under constant load through a service
   of two replicas (goal 0), and the request rate while the daemon is gone as a ratio to the
   rate before (the balancer outlives the daemon: about 1x).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from bench.common import FLOOR, Home, beside_floor, median, ms, stix_home, vs_floor, wall
from stixd.providers.local.netns import remove_under

SERVER = """\
import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("hello " + os.environ["SKYPILOT_SERVE_REPLICA_ID"]).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("", int(os.environ["STIX_SERVE_PORT"])), H).serve_forever()
"""
MAX_WAIT = 120.0


def wait_for(what: str, check: object, timeout: float = MAX_WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up waiting for {what}")
        time.sleep(0.1)


def services(home: Home) -> dict[str, dict[str, object]]:
    found = json.loads(home.ctl("serve", "status", "--json").stdout)
    return {s["name"]: s for s in found}


def start_services(home: Home, names: list[str], replicas: int) -> None:
    server = home.path / "server.py"
    server.write_text(SERVER)
    task = home.path / f"service-{replicas}.yaml"
    task.write_text(
        "service:\n  readiness_probe: /\n"
        f"  replicas: {replicas}\n  ports: 8080\n"
        f"run: python3 {server}\n"
    )
    for name in names:
        home.ctl("serve", "up", "-y", "-n", name, str(task))

    def ready() -> bool:
        now = services(home)
        return all(
            now.get(n, {}).get("status") == "READY"
            and sum(r["status"] == "READY" for r in now[n]["replicas"]) == replicas  # type: ignore[attr-defined]
            for n in names
        )

    wait_for(f"{names} READY", ready)


@dataclass
class Load:
    """Clients sending GET / through `url`, one request after another, until stopped."""

    url: str
    ok: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def client(self) -> None:
        deadline = time.monotonic() + 4 * MAX_WAIT
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url, timeout=30) as resp:
                    resp.read()
                    self.ok.append(time.monotonic())
            except urllib.error.HTTPError as exc:
                self.errors.append(f"HTTP {exc.code}")
                exc.close()
            except OSError as exc:
                self.errors.append(type(exc).__name__)

    def rate(self, since: float, until: float) -> float:
        return sum(since <= t < until for t in self.ok) / (until - since)


def killed_daemon_under_load(home: Home, clients: int, seconds: float) -> None:
    start_services(home, ["killme"], replicas=2)
    url = str(services(home)["killme"]["endpoint"]) + "/"
    load = Load(url)
    threads = [threading.Thread(target=load.client) for _ in range(clients)]
    for t in threads:
        t.start()
    try:
        t0 = time.monotonic()
        time.sleep(seconds)  # steady state, measured
        os.kill(home.daemon_pid(), signal.SIGKILL)
        t1 = time.monotonic()
        time.sleep(seconds)  # no daemon at all
        t2 = time.monotonic()
        home.ctl("serve", "status")  # the next command starts it again
        t3 = time.monotonic()
        time.sleep(seconds)  # the daemon back, attached to the same balancer
        t4 = time.monotonic()
    finally:
        load.stop.set()
        for t in threads:
            t.join(timeout=60)
    steady = load.rate(t0, t1)
    print(
        f"kill -9 of stixd under load ({clients} clients, {seconds:g} s each phase): "
        f"{len(load.errors)} errors of {len(load.ok) + len(load.errors)} requests (goal 0)"
        + (f": {sorted(set(load.errors))}" if load.errors else "")
    )
    print(
        f"  req/s with no daemon = {load.rate(t1, t2) / steady:.2f}x steady "
        f"({steady:.0f} req/s); after restart = {load.rate(t3, t4) / steady:.2f}x; "
        f"restart command {ms(t3 - t2)}"
    )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--services", type=int, default=3)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--seconds", type=float, default=3.0)
    args = p.parse_args()
    with stix_home() as home:
        home.env["STIX__DAEMON__SERVE_PROBE_SECONDS"] = "1"
        home.env["STIX__DAEMON__SERVE_ROUND_SECONDS"] = "1"
        try:
            names = [f"svc{i}" for i in range(args.services)]
            start_services(home, names, replicas=1)
            timings = {
                f"stixctl serve status, {args.services} services": partial(
                    wall, home.ctl_cmd("serve", "status"), home.env
                ),
                "stixctl serve status --json": partial(
                    wall, home.ctl_cmd("serve", "status", "--json"), home.env
                ),
            }
            xs, base = beside_floor(timings, args.runs)
            print(f"floor {FLOOR}: {ms(base)} (median of {args.runs}, sampled in turn)")
            for label, times in xs.items():
                target = 2.0 if label.endswith("services") else None
                print(f"{label:40s} {vs_floor(median(times), base, target)}")
            killed_daemon_under_load(home, args.clients, args.seconds)
            home.ctl("serve", "down", "-y", "-a", check=False)
        finally:
            home.ctl("daemon", "stop", check=False)
            remove_under(Path(home.path))


if __name__ == "__main__":
    main()
