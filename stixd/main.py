"""`stixd`: the daemon.

`stixd` starts it in the background; `stixd --foreground` is for service managers.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

from stixd.private_home import HomeNotPrivate, keep_private
from stixproto.paths import socket_path, stix_home

ALREADY_RUNNING = 75
"""Exit code of `stixd --foreground` when another daemon holds the home (EX_TEMPFAIL)."""
START_SECONDS = 30.0
"""How long a start waits for the daemon to answer (and for another start to finish first)."""


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
    # asyncssh keeps DSA keys readable; cryptography 51 warns when it is imported. A daemon's
    # log is no place for a library's note to its maintainers.
    warnings.filterwarnings("ignore", message="DSA is deprecated", module="asyncssh")
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
    try:
        if print_only:
            text = (
                units.render_launchd_plist(stixd, home, os.environ)
                if platform == "darwin"
                else units.render_systemd_unit(stixd, home, os.environ)
            )
            sys.stdout.write(text)
            return 0
        path = units.install_unit(platform, stixd, home, environ=os.environ)
    except ValueError as exc:  # a path or variable a service file cannot hold, or the platform
        print(f"stixd: {exc}", file=sys.stderr)
        return 2
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


def daemon_command(home: Path, *args: str) -> list[str]:
    """`python -P -m stixd`: -P keeps the caller's working directory off sys.path, so a
    project with its own `stixd/` or `stixproto/` package cannot shadow the daemon's modules."""
    return [sys.executable, "-P", "-m", "stixd", *args, "--home", str(home)]


@contextlib.contextmanager
def _starting(home: Path, timeout: float) -> Iterator[bool]:
    """Hold the start lock: concurrent starts queue here, and all but the first find the
    daemon running. Yields False if another start held it past `timeout`."""
    with (home / "stixd.start.lock").open("a+") as lock:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    yield False
                    return
                time.sleep(0.02)
        try:
            yield True
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def _daemon_holds_lock(home: Path) -> bool:
    """Whether a daemon (started here or by a service manager) owns this home right now."""
    with (home / "stixd.lock").open("a+") as lock:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
        return False


def _spawn_foreground(home: Path) -> subprocess.Popen[bytes]:
    with (home / "stixd.out").open("ab") as out:
        return subprocess.Popen(
            daemon_command(home, "--foreground"),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
            close_fds=True,
        )


def _start_background(home: Path) -> int:
    """Start a detached `stixd --foreground` and return once its socket answers.

    Exactly one daemon comes up however many starts race: they queue on the start lock, and a
    start that finds a daemon running (or one that a service manager is starting) succeeds.
    """
    sock = socket_path(home)
    with _starting(home, START_SECONDS) as mine:
        if not mine:
            print(
                f"another start of stixd for {home} has not finished within "
                f"{START_SECONDS:g}s; see {home / 'stixd.out'}",
                file=sys.stderr,
            )
            return 1
        if _alive(sock):
            print(f"stixd is already running (socket {sock})")
            return 0
        proc = _spawn_foreground(home)
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if _alive(sock):
                return 0
            if proc.poll() is not None and not _alive(sock):
                if proc.returncode != ALREADY_RUNNING:
                    tail = (home / "stixd.out").read_text(errors="replace")[-1500:]
                    print(
                        f"stixd exited with code {proc.returncode} while starting:\n{tail}",
                        file=sys.stderr,
                    )
                    return 1
                if not _daemon_holds_lock(home):  # the daemon in our way has exited since
                    proc = _spawn_foreground(home)
            time.sleep(0.02)
    print(
        f"stixd did not answer on {sock} within {START_SECONDS:g}s; see {home / 'stixd.log'}",
        file=sys.stderr,
    )
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
        return ALREADY_RUNNING
    lock.seek(0)
    lock.truncate()
    lock.write(str(os.getpid()))
    lock.flush()
    _allow_every_descriptor()
    import anyio  # the daemon's own imports: not paid by a start that finds it running

    from stixd.config import ConfigError, load_config
    from stixd.daemon import serve

    try:
        config = load_config(home)
    except ConfigError as exc:
        print(f"stixd: {exc}", file=sys.stderr)
        return 2
    profile = os.environ.get(PROFILE_ENV)
    if not profile:
        anyio.run(serve, home, config, _end_process)
        return 0
    import cProfile  # for benchmarks: where the daemon's CPU goes, written at exit

    prof = cProfile.Profile()

    def end_profiled() -> NoReturn:
        prof.disable()
        prof.dump_stats(profile)
        _end_process()

    prof.enable()
    try:
        anyio.run(serve, home, config, end_profiled)
    finally:
        prof.disable()
        prof.dump_stats(profile)
    return 0


SOFT_DESCRIPTORS_CAP = 1 << 16
"""The soft descriptor limit asked for when the hard one is unlimited (macOS refuses that)."""


def _allow_every_descriptor() -> None:
    """Raise the soft limit on open descriptors to the hard one. The soft limit is often 1,024
    (systemd's default for a service, a login shell's), while a daemon with thousands of
    clusters and jobs holds a connection or a file for many of them at once; the hard limit is
    the operator's bound, and stays."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = SOFT_DESCRIPTORS_CAP if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < wanted:
        with contextlib.suppress(ValueError, OSError):  # kept as it was: still a daemon
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def _end_process() -> NoReturn:
    """End a stopped daemon at once: its store and providers are closed (`stixd.daemon`)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
