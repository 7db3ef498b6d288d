"""Uploading a workdir to three nodes: a task's ``workdir:`` synced by stix, against plain rsync.

The tree of bench/bench_storage_upload.py (default 10,000 files, 1 GiB: ten large files hold
80 % of the bytes, the rest small files in 100 folders, plus a top-level ``.gitignore`` that
matches none of them) is the ``workdir:`` of a 3-node task on the SSH infra, three sshd hosts in
network namespaces (tests/sshbed.py). That is the path stix puts a local folder on nodes by (a
COPY file mount from a local folder takes the same one: ``stixd.actors.syncing``, every node's
``sync`` at once, rsync over SSH). Measured:

- stix: a ``launch`` on the UP cluster, timed between the two progress lines the client gets
  around the sync ("agents ready" / "syncing files", then "Synced ..."), cold (every node's
  ``~/sky_workdir`` removed behind the daemon's back first; the first round also makes the
  cluster, outside the timed window) and with nothing changed;
- the baseline: plain ``rsync -a`` of the same tree to the same three hosts over SSH, all three
  at once (as stix does), and with ``--serial`` one after another too, into folders of their
  own, cold and unchanged.

Rounds alternate who goes first (the load of this machine drifts) and each sync starts with the
page cache written back (``sync``); medians are printed with stix's figures as ratios to the
baselines. Nothing asserts on time. Needs root, ``sshd`` and ``rsync``; the bed's namespaces,
processes and files are removed at the end (checked), the daemon and its home too.
``--small`` (1,000 files, 64 MiB, one round) is a quick run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

from bench.bench_ssh import SYNC_TASK, daemon_sync, plain_rsync, wait_jobs, write_pool
from bench.bench_storage_upload import make_tree
from bench.common import Home, median, stix_home
from tests.sshbed import SshBed, hosts_down, hosts_up, leftovers

GITIGNORE = "__pycache__/\n*.pyc\n.venv/\n"
"""A workdir's usual top-level ignore file; it matches nothing in the tree, so stix and plain
rsync send the same files, while stix still reads it and checks the nodes' copy of it."""
CLUSTER = "sync"
"""The cluster `bench_ssh.sync_round` launches on."""

Figures = dict[str, list[float]]


def one_round(
    home: Home, bed: SshBed, tree: Path, task: Path, into: Figures, first: bool, serial: bool
) -> None:
    """A sync by stix and plain rsync to the hosts at once (and, with `serial`, one after
    another), stix first when `first`. Each starts with no dirty page left to write back (the
    bytes the one before wrote would otherwise throttle its writes)."""
    if first:
        os.sync()
        ours, copied = daemon_sync(home, CLUSTER, task)
    os.sync()
    parallel, one_by_one = plain_rsync(bed, tree, "tree", serial=serial)
    into.setdefault("parallel", []).append(parallel)
    if one_by_one is not None:
        into.setdefault("serial", []).append(one_by_one)
    if not first:
        os.sync()
        ours, copied = daemon_sync(home, CLUSTER, task)
    into.setdefault("stix", []).append(ours)
    into.setdefault("copied", []).append(copied)


def empty_nodes(bed: SshBed) -> None:
    """Every destination emptied: stix's workdir (behind the daemon's back) and rsync's."""
    for host in bed.hosts:
        for name in ("sky_workdir", "parallel_tree", "serial_tree"):
            shutil.rmtree(host.home / name, ignore_errors=True)


def measure(
    home: Home, bed: SshBed, files: int, mib: int, rounds: int, serial: bool
) -> tuple[Figures, Figures]:
    """(cold, unchanged) figures of `rounds` rounds each."""
    tree = home.path / "tree"
    tree.mkdir()
    t0 = time.perf_counter()
    make_tree(tree, files, mib << 20)
    (tree / ".gitignore").write_text(GITIGNORE)
    print(f"tree: {files} files, {mib} MiB, made in {time.perf_counter() - t0:.1f} s", flush=True)
    task = home.path / "sync.yaml"
    task.write_text(SYNC_TASK.format(tree=tree))
    cold: Figures = {}
    unchanged: Figures = {}
    for r in range(rounds):
        empty_nodes(bed)
        t0 = time.perf_counter()
        one_round(home, bed, tree, task, cold, r % 2 == 0, serial)
        took = time.perf_counter() - t0
        print(f"cold round {r + 1}: stix {cold['stix'][-1]:.2f} s (round {took:.0f} s)", flush=True)
    for r in range(rounds):
        one_round(home, bed, tree, task, unchanged, r % 2 == 1, serial)
        print(f"unchanged round {r + 1}: stix {unchanged['stix'][-1]:.2f} s", flush=True)
    t0 = time.perf_counter()
    wait_jobs(home, CLUSTER, 2 * rounds, within=120.0)
    home.ctl("down", CLUSTER, "-y")
    empty_nodes(bed)
    print(f"jobs ended, cluster down in {time.perf_counter() - t0:.0f} s", flush=True)
    return cold, unchanged


def report(files: int, mib: int, cold: Figures, unchanged: Figures) -> None:
    rounds = len(cold["stix"])
    print(f"\n{files} files / {mib} MiB to 3 SSH nodes, median of {rounds} round(s)")
    print(f"{'':40}{'cold':>10}{'unchanged':>12}")
    rows = [("stix workdir sync (s)", "stix"), ("rsync -a, 3 hosts in parallel (s)", "parallel")]
    bases = [("parallel", "3 hosts in parallel")]
    if "serial" in cold:
        rows.append(("rsync -a, one host after another (s)", "serial"))
        bases.append(("serial", "one host after another"))
    for label, key in rows:
        print(f"{label:40}{median(cold[key]):10.2f}{median(unchanged[key]):12.2f}")
    print(f"files stix copied per round: cold {cold['copied']}, unchanged {unchanged['copied']}")
    for base, name in bases:
        print(
            f"stix / rsync -a to {name}: "
            f"cold {median(cold['stix']) / median(cold[base]):.2f}x, "
            f"unchanged {median(unchanged['stix']) / median(unchanged[base]):.2f}x"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--files", type=int, default=10_000)
    p.add_argument("--mib", type=int, default=1024)
    p.add_argument("--rounds", type=int, default=2, help="rounds, cold and unchanged each")
    p.add_argument("--serial", action="store_true", help="also rsync one host after another")
    p.add_argument("--small", action="store_true", help="1,000 files, 64 MiB, one round")
    args = p.parse_args()
    if args.small:
        args.files, args.mib, args.rounds = 1000, 64, 1
    if not 2 <= args.files <= 1_000_000 or not 1 <= args.mib <= 16 * 1024:
        p.error("--files in 2..1000000, --mib in 1..16384")
    if not 1 <= args.rounds <= 20:
        p.error("--rounds in 1..20")
    began = ended = time.monotonic()
    bed = hosts_up(3)
    try:
        with stix_home() as home:
            write_pool(home, bed)
            home.ctl("daemon", "start")
            cold, unchanged = measure(home, bed, args.files, args.mib, args.rounds, args.serial)
            ended = time.monotonic()
    finally:
        hosts_down(bed)
    print(f"daemon stopped, hosts removed in {time.monotonic() - ended:.0f} s", flush=True)
    left = leftovers(bed)
    if left:
        raise SystemExit(f"the SSH bed left things behind: {left}")
    report(args.files, args.mib, cold, unchanged)
    print(f"whole run {time.monotonic() - began:.0f} s")


if __name__ == "__main__":
    main()
