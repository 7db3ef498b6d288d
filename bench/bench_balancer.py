"""The stix load balancer against the replicas directly and against SkyPilot 0.14's own balancer.

Two local aiohttp replicas; one load generator process (aiohttp, N requests at C concurrent
clients) in turn against: one replica directly, `stixd.balancer` in front of both, and SkyPilot's
`sky.serve.load_balancer` in front of both, fed by a stand-in controller that lists both replicas
(../shared/TESTBED-NEXT.md §7, forced onto loopback). Then, under constant load, one of the two
replicas is killed with SIGKILL: errors and p99 in the seconds after, and (stix) the time from
the kill to the replica's ejection. SkyPilot runs on the Python named by `--skypilot-python` or
`$STIX_SKYPILOT_PYTHON`; with neither, the benchmark installs `skypilot==0.14.1` into a venv of its
own on first use and reuses it, as bench_vs_skypilot does (`bench/skypilot_venv.py`);
`--no-skypilot` skips SkyPilot altogether.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import suppress
from pathlib import Path

from bench.skypilot_venv import skypilot_python
from stixd.balancer.fleet import Fleet
from stixd.balancer.link import RemoteBalancer
from stixd.serve.seams import BalancerSpec, ReadyReplica

REPLICA = """
import sys
from aiohttp import web
async def ok(r): return web.Response(text="ok")
app = web.Application(); app.add_routes([web.get("/", ok), web.get("/health", ok)])
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""

CONTROLLER = """
import sys
from aiohttp import web
urls = sys.argv[2].split(",")
async def sync(r):
    await r.json()
    return web.json_response({"replica_info": {u: {} for u in urls}})
app = web.Application(); app.add_routes([web.post("/controller/load_balancer_sync", sync)])
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""

SKY_LB = """
import sys, uvicorn
_run = uvicorn.run
def on_loopback(app, **kw):
    kw.update(host="127.0.0.1", log_level="warning", access_log=False)
    _run(app, **kw)
uvicorn.run = on_loopback
from sky.serve import load_balancer
load_balancer.uvicorn.run = on_loopback
load_balancer.run_load_balancer(sys.argv[1], int(sys.argv[2]), None)
"""

# The daemon's side in a process of its own: attaches to the service's balancer, pushes the
# ready set, says so, and waits to be killed.
DAEMON_SIDE = """
import asyncio, sys
from pathlib import Path
from stixd.balancer.fleet import Fleet
from stixd.serve.seams import BalancerSpec, ReadyReplica
async def main():
    lb = await Fleet(Path(sys.argv[1])).ensure(BalancerSpec(service="bench", port=0))
    await lb.set_ready([ReadyReplica(i + 1, u) for i, u in enumerate(sys.argv[2].split(","))])
    print("attached", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""

# Each request's (start, latency, ok) as JSON on stdout; warm-up first, then `n` requests, or
# requests for `seconds` when n is 0.
LOAD = """
import asyncio, json, sys, time, aiohttp
url, conc, n, warm = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[5])
seconds = float(sys.argv[4])
async def main():
    out = []
    conn = aiohttp.TCPConnector(limit=conc)
    async with aiohttp.ClientSession(connector=conn) as s:
        for _ in range(warm):
            async with s.get(url) as r: await r.read()
        print("go", flush=True)
        left = iter(range(n)) if n else None
        end = time.time() + seconds
        async def worker():
            while (next(left, None) is not None) if left else time.time() < end:
                t = time.time()
                try:
                    async with s.get(url) as r:
                        await r.read(); ok = r.status == 200
                except Exception:
                    ok = False
                out.append((t, time.time() - t, ok))
        await asyncio.gather(*[worker() for _ in range(conc)])
    print(json.dumps(out))
asyncio.run(main())
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(argv: list[str], log: Path | None = None) -> subprocess.Popen[bytes]:
    out = log.open("ab") if log is not None else subprocess.DEVNULL
    return subprocess.Popen(argv, stdout=out, stderr=out, start_new_session=True)


def wait_http(url: str, seconds: float) -> None:
    import urllib.request

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with suppress(OSError), urllib.request.urlopen(url, timeout=1) as r:
            if r.status == 200:
                return
        time.sleep(0.1)
    raise SystemExit(f"{url} did not answer within {seconds:g}s")


class Load:
    """A load generator process; `result()` waits for its per-request records."""

    def __init__(self, url: str, conc: int, n: int = 0, seconds: float = 0.0, warm: int = 200):
        argv = [sys.executable, "-c", LOAD, url, str(conc), str(n), str(seconds), str(warm)]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, start_new_session=True)
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != b"go":
            raise SystemExit(f"load generator against {url} failed during warm-up")

    def result(self) -> list[tuple[float, float, bool]]:
        out, _ = self.proc.communicate(timeout=600)
        return [tuple(r) for r in json.loads(out)]


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used (Linux's /proc; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(xs: list[float], q: float) -> float:
    ordered = sorted(xs)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def summary(rows: list[tuple[float, float, bool]]) -> dict[str, float]:
    lat = [r[1] for r in rows]
    span = max(r[0] + r[1] for r in rows) - min(r[0] for r in rows)
    return {
        "rps": len(rows) / span,
        "p50": pct(lat, 0.5),
        "p99": pct(lat, 0.99),
        "errors": sum(not r[2] for r in rows),
    }


def show(label: str, s: dict[str, float]) -> None:
    print(
        f"  {label:>22}: {s['rps']:7.0f} req/s  p50 {s['p50'] * 1000:7.2f} ms  "
        f"p99 {s['p99'] * 1000:8.2f} ms  errors {s['errors']:.0f}"
    )


async def stix_ejection(lb: RemoteBalancer, replica_id: int, killed: float) -> float | None:
    while time.time() - killed < 10:
        if replica_id in (await lb.take_traffic()).suspects:
            return time.time() - killed
        await asyncio.sleep(0.005)
    return None


async def kill_under_load(
    url: str, victim: subprocess.Popen[bytes], lb: RemoteBalancer | None, seconds: float
) -> tuple[dict[str, float], dict[str, float], float | None]:
    """Constant load at 16 clients on ``url``; ``victim`` is killed a third of the way in:
    (before, after, seconds until the stix balancer ejected it)."""
    load = Load(url, 16, seconds=seconds, warm=50)
    await asyncio.sleep(seconds / 3)
    killed = time.time()
    victim.send_signal(signal.SIGKILL)
    ejected = await stix_ejection(lb, 2, killed) if lb is not None else None
    rows = await asyncio.to_thread(load.result)
    before = [r for r in rows if r[0] < killed]
    after = [r for r in rows if r[0] >= killed - 0.05]  # the requests in flight at the kill too
    return summary(before), summary(after), ejected


async def restart_under_load(
    url: str, victim: subprocess.Popen[bytes], port: int, seconds: float
) -> tuple[dict[str, float], float, float, subprocess.Popen[bytes]]:
    """Constant load at 16 clients on ``url`` while every replica is down: ``victim`` (the
    last one up) is killed a quarter of the way in and started again on ``port`` 0.5 s later.
    (the load's figures, seconds it was down, the longest request, the new process)."""
    load = Load(url, 16, seconds=seconds, warm=50)
    await asyncio.sleep(seconds / 4)
    killed = time.time()
    victim.send_signal(signal.SIGKILL)
    await asyncio.to_thread(victim.wait, 5)
    await asyncio.sleep(0.5)
    again = start([sys.executable, "-c", REPLICA, str(port)])
    await asyncio.to_thread(wait_http, f"http://127.0.0.1:{port}/", 15)
    down = time.time() - killed
    rows = await asyncio.to_thread(load.result)
    return summary(rows), down, max(r[1] for r in rows), again


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--skypilot-python", help="a Python with skypilot (else installs one)")
    p.add_argument("--no-skypilot", action="store_true")
    p.add_argument("--requests", type=int, default=3000)
    p.add_argument("--kill-seconds", type=float, default=6.0)
    p.add_argument("--rounds", type=int, default=3, help="runs per target and concurrency")
    args = p.parse_args()
    if not 1 <= args.rounds <= 20:
        p.error("--rounds is 1 .. 20")
    sky = None if args.no_skypilot else skypilot_python(args.skypilot_python)
    work = Path(tempfile.mkdtemp(prefix="lbb", dir="/tmp"))
    procs: list[subprocess.Popen[bytes]] = []
    ports = [free_port(), free_port()]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    fleet = Fleet(work / "serve")
    try:
        replicas = [start([sys.executable, "-c", REPLICA, str(port)]) for port in ports]
        procs += replicas
        for url in urls:
            wait_http(url + "/", 15)
        lb = await fleet.ensure(BalancerSpec(service="bench", port=0))
        ready = [ReadyReplica(i + 1, url) for i, url in enumerate(urls)]
        await lb.set_ready(ready)
        targets = {"direct (one replica)": urls[0], "stix balancer": lb.endpoint}
        if sky:
            ctl_port, sky_port = free_port(), free_port()
            procs.append(start([sys.executable, "-c", CONTROLLER, str(ctl_port), ",".join(urls)]))
            sky_cmd = [sky, "-c", SKY_LB, f"http://127.0.0.1:{ctl_port}", str(sky_port)]
            procs.append(start(sky_cmd, work / "skylb.log"))
            wait_http(f"http://127.0.0.1:{sky_port}/", 60)  # after its first sync (~5 s)
            targets["SkyPilot balancer"] = f"http://127.0.0.1:{sky_port}"
        figures: dict[tuple[str, int], dict[str, float]] = {}
        cpu_per_request: dict[int, float] = {}
        balancer_pid = int(fleet.layout("bench").pid.read_text())
        for conc in (16, 64):
            print(
                f"{args.requests} requests at {conc} concurrent clients "
                f"(the run of median p50 of {args.rounds}, the targets taken in turn):"
            )
            runs: dict[str, list[dict[str, float]]] = {label: [] for label in targets}
            cpu = 0.0
            for _ in range(args.rounds):  # in turn: a burst of other load hits every target
                for label, url in targets.items():
                    n = args.requests if "SkyPilot" not in label else min(args.requests, 1500)
                    load = Load(url + "/", conc, n=n)
                    used = cpu_seconds(balancer_pid)
                    rows = await asyncio.to_thread(load.result)
                    if label == "stix balancer":
                        cpu += cpu_seconds(balancer_pid) - used
                    runs[label].append(summary(rows))
            for label, done in runs.items():
                figures[label, conc] = s = sorted(done, key=lambda r: r["p50"])[len(done) // 2]
                show(label, s)
            cpu_per_request[conc] = cpu / (args.rounds * args.requests)
            print(f"  stix balancer CPU per request: {cpu_per_request[conc] * 1e6:.0f} µs")
        print("the daemon's side killed (SIGKILL) and started again twice under load, 16 clients:")
        load = Load(lb.endpoint + "/", 16, seconds=args.kill_seconds, warm=50)
        pid_before = fleet.layout("bench").pid.read_text()
        for _ in range(2):
            await asyncio.sleep(args.kill_seconds / 4)
            side = await asyncio.create_subprocess_exec(
                *(sys.executable, "-c", DAEMON_SIDE, str(fleet.root), ",".join(urls)),
                stdout=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
            assert side.stdout is not None
            attached = await asyncio.wait_for(side.stdout.readline(), 30)
            side.send_signal(signal.SIGKILL)
            await side.communicate()
            if attached.strip() != b"attached":
                raise SystemExit("the daemon's side did not attach to the balancer")
        restarts = summary(await asyncio.to_thread(load.result))
        show("stix, daemon side killed", restarts)
        same = fleet.layout("bench").pid.read_text() == pid_before
        print(f"  the balancer was {'attached to, never restarted' if same else 'RESTARTED'}")
        await lb.take_traffic()
        print(
            f"one of two replicas killed (SIGKILL) under load at 16 clients, "
            f"{args.kill_seconds:g} s:"
        )
        before, after, ejected = await kill_under_load(
            lb.endpoint + "/", replicas[1], lb, args.kill_seconds
        )
        show("stix, before the kill", before)
        show("stix, after the kill", after)
        print(
            f"  stix: replica ejected {ejected * 1000:.1f} ms after the kill"
            if ejected
            else "  stix: replica NOT ejected within 10 s"
        )
        if sky:
            replicas[1].wait(5)
            procs.append(start([sys.executable, "-c", REPLICA, str(ports[1])]))
            wait_http(urls[1] + "/", 15)
            sky_before, sky_after, _ = await kill_under_load(
                targets["SkyPilot balancer"] + "/", procs[-1], None, args.kill_seconds
            )
            show("SkyPilot, before", sky_before)
            show("SkyPilot, after", sky_after)
            print(
                "  SkyPilot: the replica stays in rotation until its controller drops it "
                "(up to 10 s of probing + 20 s of sync)"
            )
        print(
            "every replica down (the other one killed above), the last one killed and started "
            f"again on its port under load at 16 clients, {args.kill_seconds:g} s:"
        )
        restart, down, longest, again = await restart_under_load(
            lb.endpoint + "/", replicas[0], ports[0], args.kill_seconds
        )
        procs.append(again)
        show("stix, replica restarted", restart)
        print(
            f"  stix: down {down:.2f} s, longest request {longest:.2f} s "
            "(requests wait for it, none is refused)"
        )
        print("ratios:")
        for conc in (16, 64):
            stix, direct = figures["stix balancer", conc], figures["direct (one replica)", conc]
            line = (
                f"  {conc:>2} clients: stix p50 / direct p50 "
                f"{stix['p50'] / direct['p50']:.2f} (goal <= 2), req/s stix / direct "
                f"{stix['rps'] / direct['rps']:.2f}, balancer CPU "
                f"{cpu_per_request[conc] * 1e6:.0f} µs/request"
            )
            if sky:
                theirs = figures["SkyPilot balancer", conc]
                line += (
                    f"; stix / SkyPilot req/s {stix['rps'] / theirs['rps']:.1f}x (goal >= 5)"
                    f"; SkyPilot p99 / stix p99 {theirs['p99'] / stix['p99']:.1f}x (goal >= 5)"
                )
            print(line)
        print(
            f"  after a replica kill: stix errors {after['errors']:.0f} (goal 0), p99 after / "
            f"before {after['p99'] / before['p99']:.2f} (goal <= 2); errors while the daemon's "
            f"side was killed and started again {restarts['errors']:.0f} (goal 0); errors while "
            f"every replica was down {restart['errors']:.0f} (goal 0), longest request / time "
            f"down {longest / down:.2f}"
            + (
                f"; SkyPilot errors {sky_after['errors']:.0f}, p99 after / stix p99 after "
                f"{sky_after['p99'] / after['p99']:.0f}x"
                if sky
                else ""
            )
        )
    finally:
        with suppress(Exception):
            await fleet.stop("bench")
        await fleet.aclose()
        for proc in procs:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
