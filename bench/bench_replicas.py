"""Failover time when one of two stixd replicas on one PostgreSQL database is killed (issue 18,
item 4): the time from `kill -9` of the replica that runs every actor until the other holds
every live actor's lease (and so runs it), and until it answers an `exec` on a taken cluster,
printed as ratios to the lease time (`daemon.lease_seconds`). The bound by design is 4/3: a
lease expires within its time of the last renewal, and the survivor sweeps every third of it.

Two real daemons with homes of their own (the second's `clusters` folder a link to the
first's, so both reach the local nodes), a throw-away PostgreSQL server (tests/pg_server.py),
`--clusters` local clusters each with a job running. Each round kills the replica that runs
them, measures, and starts it again (it then stands by): the roles swap every round.

Before the rounds, the cost of a forward: whole-process `exec -d` on a cluster the first
replica runs, sent to it directly, through the second over the socket (no HTTP API served),
and through the second over HTTP (both serving the API), as medians and ratios to the direct
one and to `python -c pass`; and an `exec -d` with a workdir through the second, whose files
are handed to the first: the first time (all of them) and after (none changed).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests import pg_server
from tests.conftest import Stix, kill_everything_under, pid_alive


def _wait(predicate: object, timeout: float, interval: float = 0.02) -> float:
    t0 = time.monotonic()
    while not predicate():  # type: ignore[operator]
        if time.monotonic() - t0 > timeout:
            raise SystemExit(f"not within {timeout}s: {predicate}")
        time.sleep(interval)
    return time.monotonic()


def _interleaved(pair: list[Stix], args: list[str], n: int) -> tuple[float, float]:
    """Medians of `args` run on the first replica and through the second, taken in turns (a
    busy moment of the machine falls on both)."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(n):
        for s, into in zip(pair, times, strict=True):
            t0 = time.perf_counter()
            s.run(*args, check=True)
            into.append(time.perf_counter() - t0)
    return statistics.median(times[0]), statistics.median(times[1])


def _forward_costs(
    server: pg_server.PgServer, db: str, pair: list[Stix], name: str, n: int
) -> None:
    floor = statistics.median(_timed([sys.executable, "-c", "pass"]) for _ in range(n))
    exec_ = ["exec", name, "-d", "true"]
    direct_s, over_socket = _interleaved(pair, exec_, n)
    workdir = Path(tempfile.mkdtemp(prefix="stxw", dir="/tmp"))
    for i in range(200):  # 200 files of 20 KiB: a small project
        (workdir / f"f{i}.py").write_bytes(os.urandom(20 * 1024))
    with_workdir = ["exec", name, "-d", "--workdir", str(workdir), "true"]
    t0 = time.perf_counter()
    pair[1].run(*with_workdir, check=True)  # the first: every file handed to the owner
    first = time.perf_counter() - t0
    direct_w, over_w = _interleaved(pair, with_workdir, n)  # then only what changed: nothing
    shutil.rmtree(workdir)
    for s in pair:
        s.run("api", "start", "--port", "0", check=True)
    served = "SELECT count(*) FROM replicas WHERE api IS NOT NULL"
    _wait(lambda: server.psql(db, served) == "2", 30)
    direct_h, over_http = _interleaved(pair, exec_, n)
    for s in pair:
        s.run("api", "stop", check=True)
    print(f"exec -d on the first replica's cluster, medians of {n} taken in turns with the same")
    print(f"sent to the first directly (python -c pass: {floor:.3f}s):")
    for label, t, direct in (("socket", over_socket, direct_s), ("HTTP", over_http, direct_h)):
        print(
            f"  through the second over {label:<6}: {t:.3f}s, x{t / direct:.2f} of direct "
            f"({direct:.3f}s), x{t / floor:.2f} of the floor"
        )
    print(f"exec -d --workdir (200 files, 4 MiB) through the second over the socket, its files "
          f"handed to the first: the first time x{first / direct_w:.2f} of direct "
          f"({direct_w:.3f}s), unchanged after x{over_w / direct_w:.2f}")  # fmt: skip


def _timed(command: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lease", type=float, default=2.0)
    parser.add_argument("--clusters", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--forwards", type=int, default=10, help="requests per forward path")
    args = parser.parse_args()
    found = pg_server.binaries()
    if found is None:
        raise SystemExit("no PostgreSQL here: apt-get install postgresql")
    server = pg_server.start(found)
    homes = [Path(tempfile.mkdtemp(prefix="stxb", dir="/tmp")) for _ in range(2)]
    try:
        url = server.fresh()
        db = url.rsplit("/", 1)[1]
        config = f"db: {url}\ndaemon:\n  lease_seconds: {args.lease}\nlocal:\n  network: host\n"
        (homes[0] / "clusters").mkdir()
        (homes[1] / "clusters").symlink_to(homes[0] / "clusters")
        pair = [Stix(h) for h in homes]
        for s in pair:
            (s.home / "config.yaml").write_text(config)
            s.run("daemon", "start", check=True)
        names = [f"b{i}" for i in range(args.clusters)]
        for name in names:
            pair[0].run("launch", "-c", name, "-d", "-y", "sleep 3600", check=True)
        _forward_costs(server, db, pair, names[0], args.forwards)
        live = int(server.psql(db, "SELECT count(*) FROM actors WHERE terminal = 0"))
        taken, answered = [], []
        owner, standby = pair
        for _ in range(args.rounds):
            pid = owner.daemon_pid()
            assert pid is not None
            owner_name = f"{socket.gethostname()}:{standby.home}"
            query = (
                "SELECT count(*) FROM actors a LEFT JOIN leases l USING (kind, id) "
                f"WHERE a.terminal = 0 AND (l.owner IS NULL OR l.owner <> '{owner_name}')"
            )
            os.kill(pid, signal.SIGKILL)
            died = time.monotonic()
            while pid_alive(pid):
                time.sleep(0.005)
            try:
                done = _wait(lambda q=query: int(server.psql(db, q)) == 0, args.lease * 5)
            except SystemExit:  # show who holds what
                print(server.psql(db, "SELECT * FROM leases"))
                raise
            taken.append((done - died) / args.lease)
            standby.run("exec", names[0], "-d", "true", check=True)
            answered.append((time.monotonic() - died) / args.lease)
            owner.run("daemon", "start", check=True)
            owner, standby = standby, owner
        print(f"failover after kill -9, {live} live actors, lease {args.lease:g}s, ratio to it:")
        print(f"  every lease held by the survivor: median {statistics.median(taken):.2f}, "
              f"max {max(taken):.2f} (bound 1.33)")  # fmt: skip
        print(f"  survivor's exec on a taken cluster answered: median "
              f"{statistics.median(answered):.2f}, max {max(answered):.2f}")  # fmt: skip
    finally:
        for h in homes:
            subprocess.run(
                [sys.executable, "-m", "stixctl", "daemon", "stop"],
                env={**os.environ, "STIX_HOME": str(h)}, capture_output=True, timeout=30,
            )  # fmt: skip
            kill_everything_under(h)
            shutil.rmtree(h, ignore_errors=True)
        server.stop()


if __name__ == "__main__":
    main()
