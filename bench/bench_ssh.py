"""The ssh provider on real sshd hosts (network namespaces): launch, concurrent exec, sync.

1. Launch a 3-node cluster (setup ``sleep 0.2``): client start → cluster UP and → first job
   RUNNING, split with the daemon's own records: SSH connect, agent probe / upload / start (the
   ``ssh_node_ready`` log line of the slowest node), setup (the job's SETTING_UP → RUNNING
   events) and the rest (control plane: client, request, bookkeeping, submit). Cold (fresh
   hosts), warm (down, launch again in the same daemon: the zipapp is on the hosts and the SSH
   connections are still open) and warm after a daemon restart (zipapp there, new connections).
   Baseline: ``ssh -i KEY root@host true``, one host and three in parallel.
2. 50 concurrent ``stixctl exec --num-nodes 1`` on the UP cluster: every one accepted, none
   lost, none run twice (the queue and a marker file each job appends to), wall time and per
   exec client start → RUNNING (the agent's ``started_at``), against 50 concurrent ``ssh true``.
3. A 2,000-file workdir (1-8 KiB files in nested directories) synced to the 3 nodes by a
   launch / re-launch, cold (every destination empty: the daemon's workdir is emptied behind
   its back between rounds) and with one file changed, against plain ``rsync -a`` of the same
   tree to the same hosts, three in parallel (and one after another, for comparison); rounds
   alternate who goes first. The daemon logs nothing around its sync phase, so it is timed
   between the two progress messages the client receives around it ("agents ready" or
   "syncing files", then "Synced ..."): only the sync runs between them.

Every figure is a ratio to a baseline measured in the same run; nothing asserts on time.
Needs root, ``sshd`` and ``rsync`` (see tests/sshbed.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import re
import shutil
import subprocess
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.common import FLOOR_CMD, Home, event_at, median, p99, stix_home
from tests.sshbed import SshBed, hosts_down, hosts_up, leftovers

POOL = "bed"
SSH_OPTS = [
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "BatchMode=yes",
    "-o",
    "LogLevel=ERROR",
]
LAUNCH_TASK = (
    "num_nodes: 3\nresources:\n  infra: ssh/bed\n"
    "setup: sleep 0.2\nrun: echo rank-$SKYPILOT_NODE_RANK\n"
)
SYNC_TASK = "num_nodes: 3\nresources:\n  infra: ssh/bed\nworkdir: {tree}\nrun: ls | wc -l\n"
_COPIED = re.compile(r"Synced .*: (\d+) file\(s\) changed")


# -- plumbing ----------------------------------------------------------------------------


def _ssh(bed: SshBed, ip: str, *cmd: str) -> list[str]:
    return ["ssh", "-i", str(bed.key), *SSH_OPTS, f"root@{ip}", *cmd]


def _timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str, int]:
    """(start epoch, seconds, stdout, exit code) of one process."""
    t0 = time.time()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    return t0, time.time() - t0, done.stdout, done.returncode


def _parallel(cmds: list[list[str]], env: dict[str, str] | None = None) -> tuple[float, list]:
    """Run all at once (one thread each); the wall time and each one's `_timed` result."""
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(cmds)) as pool:
        results = list(pool.map(lambda c: _timed(c, env), cmds))
    return time.perf_counter() - t0, results


def _check_all(results: list, what: str) -> None:
    bad = [r for r in results if r[3] != 0]
    if bad:
        raise SystemExit(f"{len(bad)} of {len(results)} {what} failed")


def _node_ready(home: Home, cluster: str) -> list[dict[str, Any]]:
    lines = []
    for line in (home.path / "stixd.log").read_text().splitlines():
        if '"ssh_node_ready"' not in line:
            continue
        rec = json.loads(line)
        if rec.get("cluster") == cluster:
            end = datetime.fromisoformat(rec["timestamp"].replace("Z", "+00:00")).timestamp()
            lines.append({**rec, "end": end})
    return lines


def wait_jobs(home: Home, cluster: str, count: int, within: float = 60.0) -> list[dict]:
    """The queue once `count` jobs have ended (raises if they do not)."""
    deadline = time.monotonic() + within
    while True:
        jobs = json.loads(home.ctl("queue", cluster, "--json").stdout)
        ended = [j for j in jobs if j["ended_at"]]
        if len(ended) >= count:
            return jobs
        if time.monotonic() > deadline:
            raise SystemExit(f"{cluster}: only {len(ended)} of {count} jobs ended in {within} s")
        time.sleep(0.1)


def launch_streaming(home: Home, cluster: str, task: Path) -> tuple[float, list[tuple]]:
    """`launch -d`, stamping each progress line (stderr) as it arrives; (start, stamps)."""
    t0 = time.time()
    proc = subprocess.Popen(
        home.ctl_cmd("launch", "-c", cluster, "-y", "-d", str(task)),
        env=home.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    stamps = [(time.time(), line.rstrip()) for line in proc.stderr]
    if proc.wait() != 0:
        raise SystemExit(f"launch {cluster} failed:\n" + "\n".join(s for _, s in stamps))
    return t0, stamps


def write_pool(home: Home, bed: SshBed) -> None:
    """The home's SSH node pool `POOL`: every host of the bed, as root with the bed's key."""
    ips = "".join(f"    - {h.ip}\n" for h in bed.hosts)
    (home.path / "ssh_node_pools.yaml").write_text(
        f"{POOL}:\n  user: root\n  identity_file: {bed.key}\n  hosts:\n{ips}"
    )


def _down(home: Home, cluster: str) -> None:
    home.ctl("down", cluster, "-y")


# -- 1. launch ---------------------------------------------------------------------------


@dataclasses.dataclass
class LaunchFigures:
    up: float
    running: float
    connect: float
    probe: float
    upload: float
    start: float
    agent_other: float
    """Rest of the slowest node's `total_s`: creating the remote workdir."""
    setup: float
    before: float
    """Client start → the cluster INIT: client start-up and the request reaching the actor."""
    after_agents: float
    """Slowest agent ready → cluster UP (agent version checks, store writes, job created)."""
    submit: float
    """Cluster UP → job SETTING_UP (the job submitted to every agent)."""

    @property
    def rest(self) -> float:
        return self.running - self.connect - self.probe - self.upload - self.start - self.setup


def _launch(home: Home, cluster: str, task: Path) -> LaunchFigures:
    t0, _ = launch_streaming(home, cluster, task)
    wait_jobs(home, cluster, 1)
    ev = home.events(cluster)
    nodes = _node_ready(home, cluster)
    if len(nodes) != 3:
        raise SystemExit(f"{cluster}: {len(nodes)} ssh_node_ready log lines, want 3")
    slow = max(nodes, key=lambda n: n["end"])
    phases = {k: slow.get(f"{k}_s", 0.0) for k in ("connect", "probe", "upload", "start")}
    setting_up, running = event_at(ev, "job", "SETTING_UP"), event_at(ev, "job", "RUNNING")
    up = event_at(ev, "cluster", "UP")
    return LaunchFigures(
        up=up - t0,
        running=running - t0,
        **phases,
        agent_other=slow["total_s"] - sum(phases.values()),
        setup=running - setting_up,
        before=event_at(ev, "cluster", "INIT") - t0,
        after_agents=up - slow["end"],
        submit=setting_up - up,
    )


# -- 2. concurrent exec ------------------------------------------------------------------


def _concurrent_exec(home: Home, bed: SshBed, cluster: str, n: int) -> dict[str, Any]:
    head = bed.hosts[0].ip
    ssh_wall, ssh_runs = _parallel([_ssh(bed, head, "true")] * n)
    _check_all(ssh_runs, "concurrent ssh true")
    py_wall, _ = _parallel([FLOOR_CMD] * n)
    before = len(json.loads(home.ctl("queue", cluster, "--json").stdout))
    cmds = [
        home.ctl_cmd("exec", cluster, "-d", "--json", "--num-nodes", "1", f"echo {i} >> ~/ran.txt")
        for i in range(n)
    ]
    wall, runs = _parallel(cmds, home.env)
    accepted = [r for r in runs if r[3] == 0]
    jobs = wait_jobs(home, cluster, before + len(accepted))
    by_id = {j["job_id"]: j for j in jobs}
    latencies = []
    for t0, _, out, _ in accepted:
        job = by_id[json.loads(out.strip().splitlines()[-1])["job_id"]]
        latencies.append(job["started_at"] - t0)
    ran: Counter[int] = Counter()
    for host in bed.hosts:
        marker = host.home / "ran.txt"
        if marker.exists():
            ran.update(map(int, marker.read_text().split()))
    new = [j for j in jobs if j["job_id"] > before]
    return {
        "n": n,
        "wall": wall,
        "ssh_wall": ssh_wall,
        "py_wall": py_wall,
        "ssh_each": [r[1] for r in ssh_runs],
        "latencies": latencies,
        "accepted": len(accepted),
        "lost": sum(1 for i in range(n) if ran[i] == 0),
        "twice": sum(1 for c in ran.values() if c > 1),
        "succeeded": sum(1 for j in new if j["status"] == "SUCCEEDED"),
        "ids_unique": len({j["job_id"] for j in jobs}) == len(jobs),
    }


# -- 3. workdir sync ---------------------------------------------------------------------


def _make_tree(root: Path, files: int) -> list[Path]:
    """`files` files of 1-8 KiB, ten to a directory, two levels deep."""
    rng = random.Random(6)
    made = []
    for i in range(files):
        d = root / f"d{i // 100:02d}" / f"s{i // 10 % 10}"
        d.mkdir(parents=True, exist_ok=True)
        path = d / f"f{i:04d}.txt"
        path.write_bytes(rng.randbytes(rng.randint(1024, 8192)))
        made.append(path)
    return made


def rsync_argvs(bed: SshBed, tree: Path, dest: str) -> list[list[str]]:
    shell = " ".join(["ssh", "-i", str(bed.key), *SSH_OPTS])
    return [["rsync", "-a", "-e", shell, f"{tree}/", f"root@{h.ip}:{dest}/"] for h in bed.hosts]


def plain_rsync(
    bed: SshBed, tree: Path, dest: str, *, serial: bool = True
) -> tuple[float, float | None]:
    """Plain rsync to the 3 hosts in parallel, and (`serial`) one host after another (own
    copies: ``parallel_DEST``, ``serial_DEST``); the wall time of each."""
    parallel, runs = _parallel(rsync_argvs(bed, tree, f"parallel_{dest}"))
    _check_all(runs, "plain rsync")
    if not serial:
        return parallel, None
    runs = [_timed(argv) for argv in rsync_argvs(bed, tree, f"serial_{dest}")]
    _check_all(runs, "plain rsync")
    return parallel, sum(r[1] for r in runs)


def daemon_sync(home: Home, cluster: str, task: Path) -> tuple[float, int]:
    """Seconds between the progress line before the sync and the "Synced" one; files copied."""
    _, stamps = launch_streaming(home, cluster, task)
    began = next(t for t, s in stamps if "agents ready" in s or "syncing files" in s)
    ended, line = next((t, s) for t, s in stamps if "Synced" in s)
    found = _COPIED.search(line)
    return ended - began, int(found.group(1)) if found else -1


def sync_round(
    home: Home, bed: SshBed, tree: Path, task: Path, dest: str, into: dict, daemon_first: bool
) -> None:
    """One sync by the daemon and one by plain rsync (in the order given: the load of this
    machine drifts, so rounds alternate who goes first)."""
    if daemon_first:
        ours, copied = daemon_sync(home, "sync", task)
    parallel, serial = plain_rsync(bed, tree, dest)
    if not daemon_first:
        ours, copied = daemon_sync(home, "sync", task)
    for key, value in (("parallel", parallel), ("serial", serial), ("ours", ours)):
        into.setdefault(key, []).append(value)
    into.setdefault("copied", []).append(copied)


def _sync(home: Home, bed: SshBed, files: int, rounds: int) -> tuple[dict, dict]:
    """Cold rounds (every destination empty: the daemon's workdir is emptied behind its back,
    plain rsync gets a new directory), then rounds with one more file changed each time."""
    tree = home.path / "tree"
    made = _make_tree(tree, files)
    task = home.path / "sync.yaml"
    task.write_text(SYNC_TASK.format(tree=tree))
    cold: dict[str, list] = {}
    one: dict[str, list] = {}
    for r in range(rounds):
        for host in bed.hosts:
            shutil.rmtree(host.home / "sky_workdir", ignore_errors=True)
        sync_round(home, bed, tree, task, f"cold{r}", cold, r % 2 == 1)
    for r in range(rounds):
        with made[r * 7].open("ab") as f:
            f.write(b"changed\n")
        sync_round(home, bed, tree, task, f"cold{rounds - 1}", one, r % 2 == 1)
    wait_jobs(home, "sync", 2 * rounds)
    _down(home, "sync")
    return cold, one


# -- report ------------------------------------------------------------------------------


def _row(figure: str, seconds: float, base: float | None, note: str = "") -> None:
    ratio = f"{seconds / base:6.2f}x" if base else "   base"
    print(f"{figure:<52} {seconds * 1000:9.1f} ms {ratio}  {note}")


def _report_launch(name: str, f: LaunchFigures, base: float) -> None:
    warm = name != "cold"
    _row(f"{name}: client start -> cluster UP", f.up, base)
    _row(f"{name}: client start -> first job RUNNING", f.running, base)
    kept = "the daemon kept the connection open after down" if name == "warm" else ""
    _row(f"{name}:   ssh connect (slowest node)", f.connect, base, kept)
    _row(f"{name}:   agent probe", f.probe, base)
    there = "zipapp there: only a `test -f`" if warm else "zipapp sent by SFTP"
    _row(f"{name}:   agent upload", f.upload, base, there)
    _row(f"{name}:   agent start", f.start, base, "spawn, until its hello answers")
    _row(f"{name}:   setup (job SETTING_UP -> RUNNING)", f.setup, base, "setup: sleep 0.2")
    _row(
        f"{name}:   rest (control plane)",
        f.rest,
        base,
        f"client->INIT {f.before * 1000:.0f}, agents ready->UP {f.after_agents * 1000:.0f}, "
        f"UP->SETTING_UP {f.submit * 1000:.0f}, remote mkdir {f.agent_other * 1000:.0f} ms",
    )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--execs", type=int, default=50)
    p.add_argument("--files", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=4, help="sync rounds, cold and warm")
    args = p.parse_args()
    began = time.monotonic()
    bed = hosts_up(3)
    try:
        with stix_home() as home:
            write_pool(home, bed)
            home.ctl("daemon", "start")
            one = median([_timed(_ssh(bed, bed.hosts[0].ip, "true"))[1] for _ in range(5)])
            three = median(
                [_parallel([_ssh(bed, h.ip, "true") for h in bed.hosts])[0] for _ in range(3)]
            )
            task = home.path / "launch.yaml"
            task.write_text(LAUNCH_TASK)
            cold = _launch(home, "cold", task)
            _down(home, "cold")
            warm = _launch(home, "warm", task)
            _down(home, "warm")
            home.ctl("daemon", "stop")
            home.ctl("daemon", "start")
            fresh = _launch(home, "fresh", task)
            burst = _concurrent_exec(home, bed, "fresh", args.execs)
            _down(home, "fresh")
            cold_sync, one_sync = _sync(home, bed, args.files, args.rounds)
    finally:
        hosts_down(bed)
    left = leftovers(bed)
    if left:
        raise SystemExit(f"the SSH bed left things behind: {left}")
    print(f"{'figure':<52} {'value':>12} {'ratio':>7}  note")
    _row("baseline: ssh root@host true, 1 host (median of 5)", one, None)
    _row("baseline: ssh true to 3 hosts in parallel", three, one)
    for name, figures in (("cold", cold), ("warm", warm), ("warm, new daemon", fresh)):
        _report_launch(name, figures, one)
    n = burst["n"]
    ssh_each = burst["ssh_each"]
    _row(f"baseline: {n} concurrent ssh true, wall", burst["ssh_wall"], None)
    py = burst["py_wall"]
    _row(f"  {n} concurrent venv python -c pass, wall", py, burst["ssh_wall"], "for comparison")
    _row(
        f"{n} concurrent exec, wall",
        burst["wall"],
        burst["ssh_wall"],
        f"{burst['accepted']} accepted, {burst['lost']} lost, {burst['twice']} run twice, "
        f"{burst['succeeded']} SUCCEEDED, job ids unique: {burst['ids_unique']}",
    )
    _row(
        "  exec client start -> RUNNING, median",
        median(burst["latencies"]),
        median(ssh_each),
        "vs median ssh true of the concurrent 50",
    )
    _row("  exec client start -> RUNNING, p99", p99(burst["latencies"]), p99(ssh_each), "vs p99")
    files, rounds = args.files, args.rounds
    for label, got in ((f"{files} files, cold", cold_sync), ("one file changed", one_sync)):
        base = median(got["parallel"])
        _row(f"baseline: plain rsync to 3 hosts, {label}", base, None, f"median of {rounds}")
        _row("  the same, one host after another", median(got["serial"]), base, "comparison")
        _row(
            f"sync workdir to 3 nodes, {label}",
            median(got["ours"]),
            base,
            f"daemon, between its progress lines; files copied {got['copied']}",
        )
    print(f"whole run {time.monotonic() - began:.0f} s")
    if burst["accepted"] != n or burst["lost"] or burst["twice"] or not burst["ids_unique"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
