"""The aws provider on moto: one launch split, 50 concurrent launches, 1,000 instances.

1. ``stixctl launch`` of a 2-node cluster (``--infra aws/us-east-1``, run ``true``), client
   start → cluster UP (and → job submitted to the agents, → client exit), split into time
   inside EC2 calls, SSH/agent time and the rest (control-plane overhead), as seconds and
   shares of the time to UP. Cold (the daemon's first AWS launch: botocore's models loaded,
   key pair made) and warm (a second cluster in the same daemon).
   *EC2 time* is measured where the daemon makes the calls: the daemon runs at log level
   ``debug``, at which ``Ec2Clients.call`` logs every request as an ``aws_call`` line with its
   start and duration (signing, the HTTP round trip to moto through the fault proxy, botocore's
   parsing: what the daemon waits for). The union of those intervals between client start and
   UP is the EC2 time (calls that overlap are counted once). Making a client (loading botocore's
   service model, ``aws_client_made``) is the daemon's own cost and stays in the rest.
   *SSH/agent time* is from the end of the last EC2 call before the agents' bootstrap (the
   describe that saw the instances running; the SSH connect starts right after it) to the
   slowest node's ``ssh_node_ready`` line. The rest is everything else: client start-up,
   planning, store writes, the actor's bookkeeping.
   moto's first EC2 request takes seconds (it loads its EC2 backend); the bench makes it before
   the daemon starts and prints it, so no launch pays it.
   Baseline: as many raw aiobotocore ``describe_instances`` calls as the launch made, one after
   another from one open client, at the same proxy and moto.
2. 50 one-node clusters launched at once with ``launch -d`` (each returns once its job is
   submitted, so after UP): wall time until every client has returned, the daemon's CPU seconds
   (``utime + stime`` of /proc/PID/stat, after minus before) and peak RSS (``VmHWM``), moto's
   CPU for comparison, and the EC2 requests the fault proxy saw. Every cluster's node 0 is the
   same sshd host (the testing-only ``STIX_TEST_SSH_HOSTS`` mapping goes by rank), so 50 agents
   run on one host behind one SSH connection. Baselines: the warm single launch of part 1, and
   the daemon's RSS before the burst.
3. 1,000 more instances tagged as this user's stix instances of 100 other clusters (10 each,
   ranked), made straight at moto with ``run_instances`` in batches of 100. Then, against one
   raw ``describe_instances`` pagination over the same set (the user's live instances) as
   baseline: ``find_leaks`` (in this process, with the provider's own EC2 clients); the
   provider's per-cluster ``query`` for ``--queried`` (20) of the 100 clusters, one after
   another (each its own call) and all at once (as a daemon restart's reconcile and
   ``status --refresh`` ask: the look-ups share calls); and ``stixctl status --refresh`` of the
   daemon's 50 UP clusters before and after the 1,000 were made, with the EC2 calls it made.
   ``find_leaks`` is also given per 1,000 instances EC2 held.

4. The daemon restarted with ``health_check_seconds`` at 2 over the 50 UP clusters: after two
   periods for the restart's reconcile, the EC2 requests of ``--rounds`` health rounds, per
   round, against one cluster's round (a ``describe_instances`` and a ``describe_volumes``)
   as baseline: the rounds share their calls, so the ratio stays near 1 whatever the number
   of clusters (it was the number of clusters).

Until part 4 the daemon runs with ``health_check_seconds`` at 3600 so that its 50 actors'
periodic checks do not load moto while other figures are taken.
Every figure is a ratio to a baseline measured in the same run; nothing asserts on time. Needs
root, ``sshd``, moto (see tests/sshbed.py and tests/awsbed.py); ``--no-ssh`` runs part 3 only
(without the daemon's ``status --refresh``). Everything started is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.common import Home, cpu_seconds, event_at, status_mb, stix_home
from tests.awsbed import REGION, AwsBed
from tests.sshbed import SshBed, hosts_down, hosts_up, leftovers

CATALOGS = Path(os.environ.get("STIX_CATALOG_DIR") or Path(__file__).parents[2] / "shared/catalogs")
INFRA = ["--infra", f"aws/{REGION}", "--instance-type", "m6i.large", "-y"]


# -- plumbing ----------------------------------------------------------------------------


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _log(home: Home, event: str) -> list[dict[str, Any]]:
    out = []
    for line in (home.path / "stixd.log").read_text().splitlines():
        if f'"{event}"' in line:
            rec = json.loads(line)
            if rec.get("event") == event:
                out.append({**rec, "end": _epoch(rec["timestamp"])})
    return out


def _union(spans: list[tuple[float, float]], lo: float, hi: float) -> float:
    """Seconds of [lo, hi] covered by at least one span."""
    total, end = 0.0, lo
    for a, b in sorted(spans):
        a, b = max(a, end), min(b, hi)
        if b > a:
            total += b - a
            end = b
    return total


def _run(home: Home, *args: str, timeout: float = 300) -> tuple[float, float]:
    """(start epoch, seconds) of one stixctl command, which must succeed."""
    t0 = time.time()
    done = subprocess.run(
        home.ctl_cmd(*args), env=home.env, capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        tail = (home.path / "stixd.log").read_text()[-3000:]
        raise SystemExit(f"stixctl {' '.join(args)} failed:\n{done.stderr}\n{tail}")
    return t0, time.time() - t0


def _client(url: str) -> Any:
    from aiobotocore.session import get_session  # type: ignore[import-untyped]

    return get_session().create_client(
        "ec2",
        region_name=REGION,
        endpoint_url=url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


# -- 1. one launch -----------------------------------------------------------------------


def _split(home: Home, cluster: str, t0: float, client_s: float) -> dict[str, Any]:
    ev = home.events(cluster)
    up, running = event_at(ev, "cluster", "UP"), event_at(ev, "job", "PENDING")
    calls = [c for c in _log(home, "aws_call") if t0 <= c["began"] <= up]
    spans = [(c["began"], c["began"] + c["s"]) for c in calls]
    ready = [r for r in _log(home, "ssh_node_ready") if r.get("cluster") == cluster]
    first_boot = min(r["end"] - r["total_s"] for r in ready)
    ssh_from = max(b for a, b in spans if b <= first_boot)
    ssh_to = max(r["end"] for r in ready)
    aws_s = _union(spans, t0, up)
    ssh_s = (ssh_to - ssh_from) - _union(spans, ssh_from, ssh_to)
    made = [c["s"] for c in _log(home, "aws_client_made") if t0 <= c["end"] <= up]
    return {
        "up": up - t0,
        "running": running - t0,
        "client": client_s,
        "aws": aws_s,
        "ssh": ssh_s,
        "rest": (up - t0) - aws_s - ssh_s,
        "calls": len(calls),
        "ops": _by_operation(calls),
        "before_init": event_at(ev, "cluster", "INIT") - t0,
        "first_call": min(a for a, _ in spans) - t0,
        "after_agents": up - ssh_to,
        "client_made": sum(made),
    }


def _by_operation(calls: list[dict[str, Any]]) -> list[tuple[str, int, float]]:
    """(operation, calls, seconds), the costliest first."""
    ops: dict[str, list[float]] = {}
    for c in calls:
        ops.setdefault(c["operation"], []).append(c["s"])
    return sorted(((o, len(s), sum(s)) for o, s in ops.items()), key=lambda t: -t[2])


def _launch_one(home: Home, cluster: str, nodes: int) -> dict[str, Any]:
    t0, took = _run(home, "launch", "-y", "-c", cluster, "--num-nodes", str(nodes), *INFRA, "true")
    return _split(home, cluster, t0, took)


async def _first_request(url: str) -> float:
    """moto's first EC2 request loads its EC2 backend (seconds): paid here, not by a launch."""
    async with _client(url) as ec2:
        t0 = time.perf_counter()
        await ec2.describe_instances()
        return time.perf_counter() - t0


async def _raw_calls(url: str, cluster: str, n: int) -> float:
    async with _client(url) as ec2:
        await ec2.describe_availability_zones()  # the client warm, as the daemon's is
        t0 = time.perf_counter()
        for _ in range(n):
            await ec2.describe_instances(
                Filters=[{"Name": "tag:stix-cluster", "Values": [cluster]}]
            )
        return time.perf_counter() - t0


# -- 2. 50 concurrent launches -----------------------------------------------------------


def _burst(home: Home, aws: AwsBed, moto_pid: int, n: int) -> dict[str, Any]:
    pid = home.daemon_pid()
    rss_before_mb = status_mb(pid)
    cpu0, moto0, seen0 = cpu_seconds(pid), cpu_seconds(moto_pid), len(aws.seen())
    names = [f"b{i:02d}" for i in range(n)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=n) as pool:
        list(
            pool.map(
                lambda c: _run(home, "launch", "-yd", "-c", c, *INFRA, "true", timeout=600), names
            )
        )
    wall = time.perf_counter() - t0
    cpu, moto_cpu = cpu_seconds(pid) - cpu0, cpu_seconds(moto_pid) - moto0
    rows = json.loads(home.ctl("status", "--json").stdout)
    up = sum(1 for r in rows if r["name"] in names and r["status"] == "UP")
    return {
        "n": n,
        "wall": wall,
        "cpu": cpu,
        "moto_cpu": moto_cpu,
        "hwm_mb": status_mb(pid, "VmHWM"),
        "rss_before_mb": rss_before_mb,
        "up": up,
        "requests": len(aws.seen()) - seen0,
        "names": names,
    }


# -- 3. 1,000 instances ------------------------------------------------------------------


async def _make_instances(aws: AwsBed, user: str, clusters: int, per: int) -> list[str]:
    """``per`` instances for each of ``clusters`` clusters: one ``run_instances`` per cluster
    (its tags), then one ``create_tags`` per rank over every cluster's node of that rank."""
    image = aws.an_image()
    names = [f"other{i:03d}" for i in range(clusters)]
    by_rank: list[list[str]] = [[] for _ in range(per)]
    async with _client(aws.moto_url) as ec2:
        for name in names:
            tags = [{"Key": "stix-cluster", "Value": name}, {"Key": "stix-user", "Value": user}]
            made = await ec2.run_instances(
                ImageId=image,
                MinCount=per,
                MaxCount=per,
                InstanceType="m6i.large",
                TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
            )
            for rank, inst in enumerate(made["Instances"]):
                by_rank[rank].append(inst["InstanceId"])
        for rank, ids in enumerate(by_rank):
            await ec2.create_tags(
                Resources=ids, Tags=[{"Key": "stix-node-rank", "Value": str(rank)}]
            )
    return names


async def _paginate(url: str, user: str) -> tuple[float, int]:
    async with _client(url) as ec2:
        await ec2.describe_availability_zones()
        t0 = time.perf_counter()
        count = 0
        pages = ec2.get_paginator("describe_instances").paginate(
            Filters=[
                {"Name": "tag:stix-user", "Values": [user]},
                {
                    "Name": "instance-state-name",
                    "Values": ["pending", "running", "stopping", "stopped"],
                },
            ],
            PaginationConfig={"PageSize": 1000},
        )
        async for page in pages:
            count += sum(len(r["Instances"]) for r in page["Reservations"])
        return time.perf_counter() - t0, count


async def _timed(what: Any) -> tuple[float, Any]:
    """(seconds, result) of an awaitable; the result is the error if it failed."""
    from stixproto.errors import ProvisionError

    t0 = time.perf_counter()
    try:
        got = await what
    except* ProvisionError as group:
        got = group.exceptions[0]
    return time.perf_counter() - t0, got


async def _provider_side(
    aws: AwsBed, root: Path, user: str, clusters: list[str], live: list[str]
) -> dict[str, Any]:
    """find_leaks, then each cluster's ``query``: one after another, then all at once."""
    import anyio

    from stixd.logs import make_logger
    from stixd.providers.aws import AwsProvider
    from stixd.providers.aws.leaks import find_leaks

    env = {**aws.env, "HOME": str(root), "AWS_CONFIG_FILE": str(root / "no-config")}
    log, stream = make_logger(root / "provider.log")
    provider = AwsProvider(root, env, log=log)
    for name in clusters:
        provider.records.update(name, region=REGION)

    async def serial() -> list[Any]:
        return [await provider.query(c) for c in clusters]

    async def together() -> None:
        async with anyio.create_task_group() as tg:
            for c in clusters:
                tg.start_soon(provider.query, c)

    try:
        await provider.check()  # the clients made, as in a running daemon
        out: dict[str, Any] = {}
        leaks = find_leaks(provider.ec2(), user, [REGION], live, young_s=0)
        out["leak_s"], out["leaks"] = await _timed(leaks)
        calls = provider.ec2().calls
        out["serial_s"], out["nodes"] = await _timed(serial())
        out["serial_calls"] = provider.ec2().calls - calls
        calls = provider.ec2().calls
        out["together_s"], out["together_error"] = await _timed(together())
        out["together_calls"] = provider.ec2().calls - calls
    finally:
        await provider.aclose()
        stream.close()
    return out


# -- report ------------------------------------------------------------------------------


def _row(figure: str, seconds: float, base: float | None, note: str = "") -> None:
    ratio = f"{seconds / base:6.2f}x" if base else "   base"
    print(f"{figure:<54} {seconds * 1000:10.1f} ms {ratio}  {note}", flush=True)


def _share(part: float, whole: float) -> str:
    return f"{100 * part / whole:4.1f} % of client start -> UP"


def _report_launch(name: str, f: dict[str, Any], raw: float) -> None:
    up = f["up"]
    _row(f"{name}: client start -> cluster UP", up, raw, f"{f['calls']} EC2 calls")
    _row(f"{name}:   inside EC2 calls (daemon's view)", f["aws"], raw, _share(f["aws"], up))
    for op, count, seconds in f["ops"][:3]:
        _row(f"{name}:     {op} x{count}", seconds, raw)
    _row(f"{name}:   SSH connect + agent bootstrap", f["ssh"], raw, _share(f["ssh"], up))
    _row(
        f"{name}:   rest (control-plane overhead)",
        f["rest"],
        raw,
        _share(f["rest"], up) + f"; client->INIT {f['before_init'] * 1000:.0f}, ->first EC2 call "
        f"{f['first_call'] * 1000:.0f}, botocore client made {f['client_made'] * 1000:.0f}, "
        f"agents ready->UP {f['after_agents'] * 1000:.0f} ms",
    )
    _row(f"{name}: client start -> job PENDING", f["running"], raw, "submitted to the agents")
    _row(f"{name}: client start -> client exit", f["client"], raw, "job `true` done")


@contextmanager
def _beds(ssh: bool, nodes: int) -> Iterator[tuple[AwsBed, SshBed | None]]:
    aws = AwsBed()
    bed: SshBed | None = None
    try:
        bed = hosts_up(nodes) if ssh else None
        yield aws, bed
    finally:
        if bed is not None:
            hosts_down(bed)
        aws.close()
    left = (leftovers(bed) if bed else []) + [f"process {p}" for p in aws.alive()]
    if left:
        raise SystemExit(f"the beds left things behind: {left}")


def _env(home: Home, aws: AwsBed, bed: SshBed | None) -> None:
    home.env.update(aws.env)
    home.env.update(
        {
            "STIX_CATALOG_DIR": str(CATALOGS),
            "AWS_SHARED_CREDENTIALS_FILE": str(home.path / "no-aws-credentials"),
            "AWS_CONFIG_FILE": str(home.path / "no-aws-config"),
            "STIX__DAEMON__LOG_LEVEL": "debug",
            "STIX__DAEMON__HEALTH_CHECK_SECONDS": "3600",
        }
    )
    if bed is not None:
        home.env["STIX_TEST_SSH_HOSTS"] = ",".join(f"root@{h.ip}:22" for h in bed.hosts)
        home.env["STIX_TEST_SSH_KEY"] = str(bed.key)


def _part1(home: Home, aws: AwsBed, nodes: int) -> float:
    launches = {name: _launch_one(home, name, nodes) for name in ("cold", "warm")}
    calls = max(f["calls"] for f in launches.values())
    raw = asyncio.run(_raw_calls(aws.url, "warm", calls))
    for name in launches:
        _run(home, "down", name, "-y")
    _row(f"baseline: {calls} raw describe_instances, one client", raw, None, "same proxy + moto")
    for name, f in launches.items():
        _report_launch(name, f, raw)
    return float(launches["warm"]["up"])


def _part2(home: Home, aws: AwsBed, n: int, single: float) -> list[str]:
    b = _burst(home, aws, aws.procs[0].pid, n)
    _row("baseline: warm single launch, client start -> UP", single, None)
    _row(
        f"{n} concurrent `launch -d`, wall until all returned",
        b["wall"],
        single,
        f"{b['up']} of {n} UP; {b['requests']} EC2 requests ({b['requests'] / n:.1f} per cluster)",
    )
    _row(f"  daemon CPU (utime+stime) for the {n}", b["cpu"], b["wall"], "ratio to the wall")
    _row("  moto's CPU meanwhile, for comparison", b["moto_cpu"], b["wall"], "ratio to the wall")
    print(
        f"{'  daemon peak RSS (VmHWM)':<54} {b['hwm_mb']:10.1f} MB "
        f"{b['hwm_mb'] / b['rss_before_mb']:6.2f}x  vs its RSS before the burst "
        f"({b['rss_before_mb']:.1f} MB)"
    )
    if b["up"] != n:
        raise SystemExit(f"only {b['up']} of {n} clusters UP")
    return list(b["names"])


def _part3(home: Home | None, aws: AwsBed, live: list[str], extra: int, queried: int) -> None:
    user = getpass.getuser()
    if home is not None:
        calls = aws.seen().count("DescribeInstances")
        _, before = _run(home, "status", "--refresh")
        before_calls = aws.seen().count("DescribeInstances") - calls
    per = 10
    others = asyncio.run(_make_instances(aws, user, extra // per, per))
    page_s, total = asyncio.run(_paginate(aws.url, user))
    with tempfile.TemporaryDirectory(prefix="stxbaws") as tmp:
        side = asyncio.run(_provider_side(aws, Path(tmp), user, others[:queried], live))
    scale = 1000 / total
    _row(f"baseline: one describe_instances pagination, {total} inst.", page_s, None)
    _row(
        "find_leaks, per 1,000 instances",
        side["leak_s"] * scale,
        page_s * scale,
        f"{len(side['leaks'])} leaks found in {total} instances, {side['leak_s'] * 1000:.0f} ms",
    )
    n = min(queried, len(others))
    _row(
        f"query {n} clusters one after another",
        side["serial_s"],
        page_s,
        f"{side['serial_calls']} EC2 calls, {sum(map(len, side['nodes']))} nodes; "
        f"{side['serial_s'] / n * 1000:.1f} ms per cluster",
    )
    error = side["together_error"]
    _row(
        f"query {n} clusters all at once",
        side["together_s"],
        page_s,
        f"{side['together_calls']} EC2 calls" + (f"; FAILED: {error}" if error else ""),
    )
    if home is not None:
        calls = aws.seen().count("DescribeInstances")
        _, after = _run(home, "status", "--refresh")
        after_calls = aws.seen().count("DescribeInstances") - calls
        n = len(live)
        say = "{} describe_instances calls, whole stixctl process"
        _row(
            f"status --refresh, {n} UP clusters, before the {extra}",
            before,
            page_s,
            say.format(before_calls),
        )
        _row(
            f"status --refresh, {n} UP clusters, {total} instances",
            after,
            page_s,
            say.format(after_calls),
        )


# -- 4. health rounds --------------------------------------------------------------------

ONE_CLUSTER_ROUND = 2
"""A health round of one cluster: its instances, its disks."""


def _part4(home: Home, aws: AwsBed, live: list[str], rounds: int, period: float = 2.0) -> None:
    home.ctl("daemon", "stop")
    home.env["STIX__DAEMON__HEALTH_CHECK_SECONDS"] = str(period)
    home.ctl("daemon", "start")
    time.sleep(2 * period)  # the restart's reconcile of every cluster
    seen0 = len(aws.seen())
    time.sleep(rounds * period)
    asked = aws.seen()[seen0:]
    per_round = len(asked) / rounds
    kinds = ", ".join(f"{asked.count(a) / rounds:.1f} {a}" for a in sorted(set(asked)))
    figure = f"health round of {len(live)} UP clusters, EC2 requests"
    print(
        f"{figure:<54} {per_round:10.1f}    {per_round / ONE_CLUSTER_ROUND:6.2f}x  "
        f"per round over {rounds}: {kinds}; baseline: one cluster's round ({ONE_CLUSTER_ROUND})",
        flush=True,
    )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--no-ssh", action="store_true", help="part 3 only: no sshd hosts, no root")
    p.add_argument("--nodes", type=int, default=2, help="nodes of the part 1 cluster")
    p.add_argument("--clusters", type=int, default=50, help="concurrent launches (part 2)")
    p.add_argument("--instances", type=int, default=1000, help="extra instances (part 3)")
    p.add_argument("--queried", type=int, default=20, help="clusters queried (part 3)")
    p.add_argument("--rounds", type=int, default=5, help="health rounds counted (part 4)")
    args = p.parse_args()
    began = time.monotonic()
    with _beds(not args.no_ssh, args.nodes) as (aws, bed), stix_home() as home:
        _env(home, aws, bed)
        print(f"{'figure':<54} {'value':>13} {'ratio':>7}  note", flush=True)
        first = asyncio.run(_first_request(aws.moto_url))
        _row("(moto's first EC2 request: its backend loads)", first, None, "kept out of launches")
        live: list[str] = []
        if bed is not None:
            home.ctl("daemon", "start")
            single = _part1(home, aws, args.nodes)
            live = _part2(home, aws, args.clusters, single)
        _part3(home if bed else None, aws, live, args.instances, args.queried)
        if bed is not None:
            _part4(home, aws, live, args.rounds)
    print(f"whole run {time.monotonic() - began:.0f} s")


if __name__ == "__main__":
    main()
