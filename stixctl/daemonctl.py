"""`stixctl daemon start|stop|status|logs|install`: this machine's stixd, over its socket even
when commands go to a remote API server (`stixctl api login`)."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from stixctl.client import call, start_daemon, wait_gone
from stixproto import messages as m
from stixproto.bounds import MAX_LINES
from stixproto.errors import DaemonUnavailable, InvalidRequest


def run(home: Path, a: argparse.Namespace) -> int:
    if a.action == "start":
        start_daemon(home)
        info = call(home, m.DaemonStatus(), autostart=False, local=True)
        print(f"stixd {info.version} is running (pid {info.pid}, home {info.home})")
        return 0
    if a.action == "stop":
        try:
            pid = call(home, m.DaemonStatus(), autostart=False, local=True).pid
            call(home, m.Shutdown(), autostart=False, local=True)
        except DaemonUnavailable:
            print("stixd is not running")
            return 0
        if not wait_gone(home, pid):
            print("stixd did not stop within 30s", file=sys.stderr)
            return 1
        print("stixd stopped (clusters and jobs keep running on their nodes)")
        return 0
    if a.action == "status":
        try:
            info = call(home, m.DaemonStatus(), autostart=False, local=True)
        except DaemonUnavailable as exc:
            print(exc.message)
            return 1
        if a.json:
            import msgspec

            print(msgspec.json.encode(info).decode())
            return 0
        actors = ", ".join(f"{n} {k}" for k, n in sorted(info.actors.items())) or "none"
        print(
            f"stixd {info.version} (protocol {info.protocol}) running, pid {info.pid}, "
            f"up {int(time.time() - info.started_at)}s, home {info.home}, actors: {actors}"
        )
        return 0
    if a.action == "logs":
        if not 0 <= a.tail <= MAX_LINES:
            raise InvalidRequest(f"daemon logs: --tail must be from 0 to {MAX_LINES}, not {a.tail}")
        return _logs(home / "stixd.log", a.tail, a.follow)
    cmd = [sys.executable, "-P", "-m", "stixd", "--home", str(home), "install"]
    if a.print:
        cmd.append("--print")
    return subprocess.call(cmd)


def _logs(path: Path, tail: int, follow: bool) -> int:
    if not path.exists():
        print(f"no daemon log yet at {path}")
        return 1
    with path.open("rb") as f:
        lines = f.read().splitlines()[-tail:] if tail else []
        for line in lines:
            sys.stdout.write(line.decode(errors="replace") + "\n")
        sys.stdout.flush()
        while follow:
            chunk = f.read()
            if chunk:
                sys.stdout.write(chunk.decode(errors="replace"))
                sys.stdout.flush()
            else:
                time.sleep(0.2)
    return 0
