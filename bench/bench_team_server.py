"""The team server (issue 18): the HTTP API against the socket, and against SkyPilot's server.

1. Whole-process ``stixctl status`` against the remote server (HTTP on loopback, a user's
   token) and against the local socket, and SkyPilot 0.14.1's ``sky status`` against its own
   API server (``sky api start`` in its venv, `bench/skypilot_venv.py`; an isolated HOME, usage
   collection off, a free port), all as ratios to ``python -c pass`` of this venv
   (bench.common.FLOOR). ``--no-skypilot`` leaves SkyPilot out.
2. ``status`` p50/p99 while 20 launches run (the fake provider, ``--launch-seconds`` each,
   half the launches over the socket, half over HTTP), against ``status`` on the idle server:
   ratios, over the socket and over HTTP (the request as a client sees it, in this process).
3. ``status`` requests per second the server sustains with 100 concurrent clients (each a
   coroutine of this process, one request per connection, as stixctl does), over HTTP and over
   the socket, on a store of ``--rps-clusters`` (50) clusters: once with every read on the
   store's one connection (``daemon.store_readers: 0``, the baseline, as before the readers)
   and once with the default read connections beside the writer, each on a fresh home in the
   same run; the ratios are to the baseline. The clients share the machine's cores with the
   daemon. ``--only-rps`` runs this part alone.
4. ``GET /metrics`` with ``--jobs`` (10,000) managed jobs RUNNING on the fake provider (30,000
   live actors: each job's, its cluster's and its cluster job's), against the same scrape of
   the empty server and against ``GET /api/v1/health``.

Run: ``python -m bench.bench_team_server [--runs 10] [--jobs 10000] [--no-skypilot]``.
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
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from contextlib import closing, contextmanager, suppress
from functools import partial
from pathlib import Path
from typing import Any

from bench.common import (
    FLOOR,
    Home,
    beside_floor,
    cpu_seconds,
    median,
    ms,
    p99,
    stix_home,
    vs_floor,
    wall,
)

LAUNCHES = 20
TICK = 1 / os.sysconf("SC_CLK_TCK")  # the resolution of a process's CPU time
CLIENTS = 100


def _say(text: str) -> None:
    print(text, flush=True)


def _serve(home: Home) -> tuple[str, str]:
    """The daemon serving HTTP on a free loopback port, and a user's token: (url, token)."""
    home.ctl("api", "start", "--port", "0")
    port = json.loads((home.path / "api_server.json").read_text())["port"]
    home.ctl("users", "create", "bench", "--role", "user")
    token = home.ctl("tokens", "create", "bench").stdout.strip()
    return f"http://127.0.0.1:{port}", token


def _remote_env(home: Home, url: str, token: str) -> dict[str, str]:
    return {**home.env, "STIX_API_SERVER": url, "STIX_API_TOKEN": token}


# -- 1. whole processes --------------------------------------------------------------------


def _free_port() -> int:
    with closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pids_with_home(home: str) -> list[int]:
    """Processes whose environment has ``HOME=home``: SkyPilot's server and its workers."""
    found = []
    needle = f"HOME={home}".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with suppress(OSError):
            if needle in Path(f"/proc/{entry}/environ").read_bytes().split(b"\0"):
                found.append(int(entry))
    return found


@contextmanager
def _sky_server(python: str) -> Iterator[tuple[list[str], dict[str, str]]]:
    """SkyPilot's API server on a free port in a throw-away HOME: (the `sky` command, its env).
    Stopped with `sky api stop`; whatever of it is left (found by its HOME) is killed."""
    home = tempfile.mkdtemp(prefix="skyhome")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SKYPILOT", "STIX"))},
        "HOME": home,
        "SKYPILOT_DISABLE_USAGE_COLLECTION": "1",
        "SKYPILOT_API_SERVER_LOCAL_PORT": str(_free_port()),
    }
    sky = [str(Path(python).parent / "sky")]
    try:
        subprocess.run(
            [*sky, "api", "start"], env=env, capture_output=True, timeout=180, check=True
        )
        yield sky, env
    finally:
        with suppress(subprocess.SubprocessError, OSError):
            subprocess.run([*sky, "api", "stop"], env=env, capture_output=True, timeout=60)
        for pid in _pids_with_home(home):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(home, ignore_errors=True)


def whole_processes(home: Home, url: str, token: str, args: argparse.Namespace) -> None:
    remote = _remote_env(home, url, token)
    status = home.ctl_cmd("status")
    timings: dict[str, Callable[[], float]] = {
        "stixctl status (socket)": partial(wall, status, home.env),
        "stixctl status (HTTP API)": partial(wall, status, remote),
    }
    for fn in timings.values():
        fn()  # warm: the first loads the daemon's code for the request
    xs, base = beside_floor(timings, args.runs)
    _say(f"\n1. whole process, median of {args.runs}; floor `{FLOOR}` = {ms(base)}")
    got = {label: median(times) for label, times in xs.items()}
    for label, x in got.items():
        _say(f"   {label:<28} {vs_floor(x, base)}")
    http, sock = got["stixctl status (HTTP API)"], got["stixctl status (socket)"]
    _say(f"   HTTP / socket: {http / sock:.2f}x")
    if args.no_skypilot:
        return
    from bench.skypilot_venv import skypilot_python

    python = skypilot_python(args.skypilot_python)
    with _sky_server(python) as (sky, env):
        sky_status = partial(wall, [*sky, "status"], env, False)
        sky_status()  # warm, as ours
        sky_runs = max(3, args.runs // 2)  # seconds each
        xs, base = beside_floor({"sky status": sky_status}, sky_runs)
    x = median(xs["sky status"])
    _say(f"   {'sky status (its API server)':<28} {vs_floor(x, base)}  (median of {sky_runs})")
    _say(f"   sky status / stixctl status (HTTP API): {x / http:.1f}x")


# -- 2. status while launches run ----------------------------------------------------------


async def _over_http(url: str, token: str, request: Any) -> Any:
    from stixctl.ahttp_client import ahttp_frames
    from stixctl.client import interpret, is_final
    from stixctl.endpoint import Remote
    from stixproto.edge import request_body

    frames = ahttp_frames(Remote(url, token, "bench"), request_body(request))
    try:
        async for frame in frames:
            msg = interpret(frame, type(request))
            if is_final(msg):
                return msg
    finally:
        await frames.aclose()
    raise SystemExit("an HTTP answer ended before its final reply")


def _status_asks(home: Home, url: str, token: str) -> dict[str, Callable[[], Awaitable[Any]]]:
    from stixctl.aclient import acall
    from stixproto import messages as m

    return {
        "socket": lambda: acall(home.path, m.Status(), autostart=False, local=True),
        "HTTP": lambda: _over_http(url, token, m.Status()),
    }


async def _sample(asks: dict[str, Callable[[], Awaitable[Any]]], until: Callable[[], bool]) -> Any:
    times: dict[str, list[float]] = {name: [] for name in asks}
    while not until():
        for name, ask in asks.items():
            t0 = time.perf_counter()
            await ask()
            times[name].append(time.perf_counter() - t0)
    return times


async def during_launches(home: Home, url: str, token: str, launch_s: float) -> None:
    from stixctl.aclient import acall
    from stixproto import messages as m
    from stixproto.task.load import task_from_dict

    asks = _status_asks(home, url, token)
    idle_until = time.monotonic() + 5
    idle = await _sample(asks, lambda: time.monotonic() > idle_until)
    task = task_from_dict({"resources": {"infra": "fake"}, "run": "echo hi"})

    def launch(i: int) -> Awaitable[Any]:
        req = m.Launch(task=task, cluster=f"l{i}", detach=True)
        if i % 2:
            return _over_http(url, token, req)
        return acall(home.path, req, autostart=False, local=True)

    t0 = time.perf_counter()
    launches = asyncio.gather(*(launch(i) for i in range(LAUNCHES)))
    busy = await _sample(asks, launches.done)
    await launches
    took = time.perf_counter() - t0
    _say(
        f"\n2. status while {LAUNCHES} launches run ({launch_s:g} s each on the fake provider; "
        f"all {LAUNCHES} up in {took:.1f} s), the request as a client sees it"
    )
    for name in asks:
        base = median(idle[name])
        _say(
            f"   {name:<6} idle p50 {ms(base)} p99 {ms(p99(idle[name]))}; during p50 "
            f"{ms(median(busy[name]))} = {median(busy[name]) / base:.2f}x, p99 "
            f"{ms(p99(busy[name]))} = {p99(busy[name]) / base:.2f}x idle p50 "
            f"({len(busy[name])} samples)"
        )
    home.ctl("down", "-a", "-y", check=False)


# -- 3. requests per second ----------------------------------------------------------------


async def throughput(home: Home, url: str, token: str, seconds: float) -> dict[str, float]:
    from stixctl.aclient import acall
    from stixproto import messages as m

    every = m.Status(all_users=True)  # every cluster, whoever asks
    asks: dict[str, Callable[[], Awaitable[Any]]] = {
        "socket": lambda: acall(home.path, every, autostart=False, local=True),
        "HTTP": lambda: _over_http(url, token, every),
    }
    rates = {}
    pid = home.daemon_pid()
    for name, ask in asks.items():
        done = 0
        failed = 0
        end = time.monotonic() + seconds

        async def client(ask: Callable[[], Awaitable[Any]] = ask, end: float = end) -> None:
            nonlocal done, failed
            while time.monotonic() < end:
                try:
                    await ask()
                    done += 1
                except Exception:
                    failed += 1

        sum0, count0 = _status_histogram(url, token)
        t0, cpu0 = time.perf_counter(), cpu_seconds(pid)
        await asyncio.gather(*(client() for _ in range(CLIENTS)))
        rates[name] = done / (time.perf_counter() - t0)
        cpu = (cpu_seconds(pid) - cpu0) / max(1, done)
        sum1, count1 = _status_histogram(url, token)
        inside = (sum1 - sum0) / max(1.0, count1 - count0)
        _say(
            f"   {name:<6} {rates[name]:7.0f} status/s ({failed} failed); each {ms(inside)} "
            f"inside the daemon on average (its histogram), {ms(CLIENTS / rates[name])} "
            f"as a client waits, {cpu * 1e6:.0f} us of the daemon's CPU"
        )
    _say(f"   HTTP / socket: {rates['HTTP'] / rates['socket']:.2f}x")
    return rates


def reads_throughput(args: argparse.Namespace) -> None:
    """Part 3 on one store connection (the baseline) and on the read connections."""
    from bench.common import seed_stopped_clusters

    _say(
        f"\n3. status (-u, {args.rps_clusters} clusters) with {CLIENTS} concurrent clients for "
        f"{args.rps_seconds:g} s each"
    )
    rates: dict[int, dict[str, float]] = {}
    for readers in (0, args.readers):
        with stix_home() as home:
            asyncio.run(seed_stopped_clusters(home.path, args.rps_clusters))
            home.env.update(
                {
                    "STIX__DAEMON__LOG_LEVEL": "warning",
                    "STIX__DAEMON__STORE_READERS": str(readers),
                }
            )
            home.ctl("daemon", "start")
            url, token = _serve(home)
            shown = "one connection (baseline)" if not readers else f"{readers} read connections"
            _say(f"  store reads on {shown}:")
            asyncio.run(throughput(home, url, token, 1.0))  # warm
            rates[readers] = asyncio.run(throughput(home, url, token, args.rps_seconds))
    for name in ("socket", "HTTP"):
        base, now = rates[0][name], rates[args.readers][name]
        _say(
            f"   {name:<6} {args.readers} readers / one connection: {now / base:.2f}x "
            f"({base:.0f} -> {now:.0f} status/s)"
        )


def _status_histogram(url: str, token: str) -> tuple[float, float]:
    """(sum, count) of the daemon's `status` latency histogram, from /metrics."""
    req = urllib.request.Request(url + "/metrics", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        text = resp.read().decode()
    found = {"sum": 0.0, "count": 0.0}
    for line in text.splitlines():
        for part in found:
            if line.startswith(f'stix_request_duration_seconds_{part}{{request="status"}}'):
                found[part] = float(line.rsplit(" ", 1)[1])
    return found["sum"], found["count"]


# -- 4. /metrics at scale ------------------------------------------------------------------


def _get(url: str, token: str) -> float:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=60) as resp:
        resp.read()
    return time.perf_counter() - t0


def _scrapes(url: str, token: str, runs: int, pid: int) -> dict[str, tuple[float, float]]:
    """/metrics and /api/v1/health, `runs` of each: (median wall time, the daemon's CPU
    seconds per request)."""
    out = {}
    for path in ("/metrics", "/api/v1/health"):
        cpu0 = cpu_seconds(pid)
        times = [_get(url + path, token) for _ in range(runs)]
        out[path] = (median(times), (cpu_seconds(pid) - cpu0) / runs)
    return out


def metrics_at_scale(jobs: int, runs: int) -> None:
    from bench.managed_fleet import Census, all_running, submit_jobs

    with stix_home() as home:
        home.env.update({"STIX__FAKE__ENABLED": "true", "STIX__DAEMON__LOG_LEVEL": "warning"})
        home.ctl("daemon", "start")
        url, token = _serve(home)
        pid = home.daemon_pid()
        empty = _scrapes(url, token, runs, pid)
        t0 = time.perf_counter()

        async def fill() -> None:
            with closing(Census(home.path / "state.db")) as census:
                await submit_jobs(home.path, jobs, 64)
                await census.until(all_running(jobs), 3600)

        asyncio.run(fill())
        filled = time.perf_counter() - t0
        full = _scrapes(url, token, runs, pid)
        with urllib.request.urlopen(
            urllib.request.Request(url + "/metrics", headers={"Authorization": f"Bearer {token}"})
        ) as resp:
            text = resp.read().decode()
        actors = sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("stix_actors{")
        )
    _say(
        f"\n4. GET /metrics with {jobs:,} managed jobs RUNNING ({actors:,.0f} live actors; "
        f"filled in {filled:.0f} s), median of {runs}"
    )
    for label, got in (("empty server", empty), (f"{jobs:,} jobs", full)):
        (m_wall, m_cpu), (h_wall, h_cpu) = got["/metrics"], got["/api/v1/health"]
        _say(
            f"   {label:<13} /metrics {ms(m_wall)} wall, {ms(m_cpu)} of daemon CPU; "
            f"/api/v1/health {ms(h_wall)}, {ms(h_cpu)} CPU"
        )
    health_cpu = max(TICK / runs, full["/api/v1/health"][1])
    _say(
        f"   /metrics at {jobs:,} jobs: {full['/metrics'][1] / health_cpu:.1f}x "
        f"the CPU of a health request, {full['/metrics'][0] / empty['/metrics'][0]:.1f}x the "
        f"wall time of the empty scrape; {len(text) / 1024:.1f} KiB"
    )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--launch-seconds", type=float, default=5.0)
    p.add_argument("--rps-seconds", type=float, default=5.0)
    p.add_argument("--rps-clusters", type=int, default=50)
    p.add_argument("--readers", type=int, default=2, help="the store's read connections")
    p.add_argument("--only-rps", action="store_true", help="part 3 alone")
    p.add_argument("--jobs", type=int, default=10_000, help="managed jobs for /metrics (0: skip)")
    p.add_argument("--no-skypilot", action="store_true")
    p.add_argument("--skypilot-python", default=None)
    args = p.parse_args()
    if args.only_rps:
        reads_throughput(args)
        return
    with stix_home() as home:
        home.env.update(
            {
                "STIX__FAKE__ENABLED": "true",
                "STIX__FAKE__LAUNCH_SECONDS": str(args.launch_seconds),
                "STIX__DAEMON__LOG_LEVEL": "warning",
            }
        )
        home.ctl("daemon", "start")
        url, token = _serve(home)
        whole_processes(home, url, token, args)
        asyncio.run(during_launches(home, url, token, args.launch_seconds))
    reads_throughput(args)
    if args.jobs:
        metrics_at_scale(args.jobs, args.runs)


if __name__ == "__main__":
    main()
