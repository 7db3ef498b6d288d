"""`stixd`: the daemon.

`stixd` starts it in the background; `stixd --foreground` is for service managers.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import anyio

from stixd.private_home import HomeNotPrivate, keep_private
from stixproto.paths import socket_path, stix_home


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="stixd", description="The stix daemon.")
    p.add_argument(
        "--foreground", action="store_true", help="run in this process (for systemd/launchd)"
    )
    p.add_argument("--home", help="stix home (default $STIX_HOME or ~/.stix)")
    sub = p.add_subparsers(dest="command")
    inst = sub.add_parser("install", help="write a systemd user unit or a launchd plist for stixd")
    inst.add_argument("--print", action="store_true", help="print the unit instead of writing it")
    inst.add_argument("--platform", default=sys.platform)
    return p.parse_args(argv)


PROFILE_ENV = "STIX_PROFILE"
"""A file to write a cProfile of the daemon to when it stops (benchmarks and debugging)."""


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    home = Path(args.home).expanduser().resolve() if args.home else stix_home()
    try:
        keep_private(home)  # before the first file is written
    except HomeNotPrivate as exc:
        print(f"stixd: {exc}", file=sys.stderr)
        return 2
    if args.command == "install":
        return _install(home, args.print, args.platform)
    if args.foreground:
        return _run_foreground(home)
    return _start_background(home)


def _stixd_path() -> str:
    exe = Path(sys.argv[0]).resolve() if sys.argv and sys.argv[0] else None
    if exe and exe.name == "stixd" and exe.exists():
        return str(exe)
    candidate = Path(sys.executable).with_name("stixd")
    return str(candidate)


def _install(home: Path, print_only: bool, platform: str) -> int:
    from stixd import units

    stixd = _stixd_path()
    if print_only:
        text = (
            units.render_launchd_plist(stixd, home)
            if platform == "darwin"
            else units.render_systemd_unit(stixd, home)
        )
        sys.stdout.write(text)
        return 0
    path = units.install_unit(platform, stixd, home)
    print(f"wrote {path}")
    print(units.next_steps(platform, path))
    return 0


def _alive(path: Path) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()


def _start_background(home: Path) -> int:
    """Start a detached `stixd --foreground` and return once its socket answers."""
    sock = socket_path(home)
    if _alive(sock):
        print(f"stixd is already running (socket {sock})")
        return 0
    out = (home / "stixd.out").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "stixd", "--foreground", "--home", str(home)],
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=out,
        start_new_session=True,
        close_fds=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if _alive(sock):
            return 0
        if proc.poll() is not None and not _alive(sock):
            tail = (home / "stixd.out").read_text(errors="replace")[-1500:]
            print(
                f"stixd exited with code {proc.returncode} while starting:\n{tail}", file=sys.stderr
            )
            return 1
        time.sleep(0.02)
    print(f"stixd did not answer on {sock} within 30s; see {home / 'stixd.log'}", file=sys.stderr)
    return 1


def _run_foreground(home: Path) -> int:
    lock_path = home / "stixd.lock"
    lock = lock_path.open("a+")
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        print(
            f"stixd is already running for {home} (pid {lock.read().strip() or '?'})",
            file=sys.stderr,
        )
        return 1
    lock.seek(0)
    lock.truncate()
    lock.write(str(os.getpid()))
    lock.flush()
    from stixd.config import ConfigError, load_config
    from stixd.daemon import serve

    try:
        config = load_config(home)
    except ConfigError as exc:
        print(f"stixd: {exc}", file=sys.stderr)
        return 2
    profile = os.environ.get(PROFILE_ENV)
    if not profile:
        anyio.run(serve, home, config)
        return 0
    import cProfile  # for benchmarks: where the daemon's CPU goes, written at exit

    with cProfile.Profile() as prof:
        try:
            anyio.run(serve, home, config)
        finally:
            prof.dump_stats(profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
