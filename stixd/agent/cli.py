"""``stix-agent serve``: start (at most) one agent for a node and run it until it ends.

Starting twice is harmless: a per-node ``flock`` decides, and the loser exits 0 with a message.
An ``upgrade`` re-execs this process in place with the lock handed over, so there is never a
moment where a second agent could take the node.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import socket
import stat
import sys
from pathlib import Path
from typing import Any

from .buildinfo import current_build
from .files import LOCK_FD_ENV, NodeFiles
from .jobs import JobManager
from .mount import clean_stale
from .procs import boot_time
from .runner import RunnerContext
from .server import AgentServer, Exit, NodeIdentity
from .store import JobStore

JOB_UMASK_ENV = "STIX_JOB_UMASK"
"""The umask jobs run with, in octal, when it is not the one the agent was started with: set by
stixd for agents on `local` (it runs with 077 itself) and across an upgrade re-exec."""
PRIVATE_UMASK = 0o077
OWN_FILES = ("agent.db", "agent.db-wal", "agent.db-shm", "agent.log", "agent.out", "agent.pid")

log = logging.getLogger("stix_agent")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stix-agent", description="stix on-node agent")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the agent for one node")
    serve.add_argument("--node-dir", required=True, type=Path, help="the node's state directory")
    serve.add_argument("--socket", required=True, type=Path, help="Unix socket to listen on")
    serve.add_argument("--cluster", required=True, help="cluster name (shown by ps)")
    serve.add_argument("--rank", required=True, type=int, help="node rank in the cluster")
    serve.add_argument("--num-gpus", type=float, default=0.0, help="GPUs jobs may use")
    serve.add_argument("--node-ip", default="127.0.0.1", help="this node's IP for jobs")
    serve.add_argument(
        "--down-removes",
        type=Path,
        help="the directory autostop with down removes (default: the node directory; "
        "it must contain the node directory)",
    )
    commands.add_parser("build", help="print this agent's build id")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "build":
        print(current_build())
        return 0
    identity = NodeIdentity(
        cluster=args.cluster,
        rank=args.rank,
        num_gpus=args.num_gpus,
        node_ip=args.node_ip,
        node_dir=args.node_dir.expanduser().absolute(),
        socket_path=args.socket.expanduser().absolute(),
        down_removes=(args.down_removes or args.node_dir).expanduser().absolute(),
    )
    return serve(identity)


def serve(identity: NodeIdentity) -> int:
    job_umask = _private_umask()
    files = NodeFiles(identity.node_dir, identity.socket_path)
    files.make_dirs()
    _make_private(identity.node_dir)
    files.log_to_file()
    who = f"cluster {identity.cluster!r} rank {identity.rank}"

    if not files.take_lock():
        other = ask_hello(identity.socket_path)
        pid = other.get("pid", "unknown") if other else "unknown"
        _say(f"an agent for {who} is already running (pid {pid}); not starting another")
        return 0
    other = ask_hello(identity.socket_path)
    if other is not None:
        _say(f"another agent (pid {other.get('pid')}) answers on {identity.socket_path}; exiting")
        assert files.lock_fd is not None
        os.close(files.lock_fd)
        return 0

    files.write_pid()
    stale = clean_stale(identity.node_dir)  # a previous agent's mounts whose rclone died
    if stale:
        log.warning("stale_mounts_unmounted count=%d", stale)
    store = JobStore(files.db_path, create=True)
    notify_read, notify_write = os.pipe()
    os.set_blocking(notify_read, False)
    os.set_blocking(notify_write, False)
    ctx = RunnerContext(identity.node_dir, store.path, files.logs_dir, notify_write, job_umask)
    listener = files.bind()
    files.watch()
    server = AgentServer(
        identity,
        JobManager(store, ctx, identity.num_gpus),
        build=current_build(),
        boot_time=boot_time(),
        listener=listener,
        notify_fd=notify_read,
        files=files,
    )
    log.info("agent_serving %s pid=%d build=%s", who, os.getpid(), server.build)
    outcome = asyncio.run(server.run())
    store.close()
    server.close_listener()
    if outcome.exec_pyz is not None:
        assert files.lock_fd is not None
        return _reexec(outcome, files.lock_fd, job_umask)
    if outcome.unlink_socket:
        _unlink_if(identity.socket_path, server.socket_inode)
    files.remove_pid()
    log.info("agent_exited code=%d", outcome.code)
    return outcome.code


def _private_umask() -> int:
    """Make everything the agent creates private (its queue holds a pending job's secrets), and
    return the umask its jobs run with: the one given by stixd, else the one it was started with."""
    started_with = os.umask(PRIVATE_UMASK)
    given = os.environ.pop(JOB_UMASK_ENV, "")
    try:
        return int(given, 8) & 0o777 if given else started_with
    except ValueError:
        return started_with


def _make_private(node_dir: Path) -> None:
    """Take group and other bits off the node's folder and the agent's own files in it (an
    earlier agent, or a node folder made by hand, may have left them wider)."""
    logs = node_dir / "logs"
    own = [node_dir, logs, *(node_dir / n for n in OWN_FILES), *logs.glob("*.log")]
    for path in own:
        with contextlib.suppress(OSError):  # missing yet, or not ours to change
            mode = path.lstat().st_mode
            if not stat.S_ISLNK(mode) and mode & 0o077:
                os.chmod(path, stat.S_IMODE(mode) & 0o700)


def _say(message: str) -> None:
    log.info(message)
    print(f"stix-agent: {message}", flush=True)


def ask_hello(path: Path, timeout: float = 1.0) -> dict[str, Any] | None:
    """The hello reply of an agent listening on ``path``, or None if none answers."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            sock.sendall(b'{"op":"hello"}\n')
            reply = sock.makefile("rb").readline()
        answer = json.loads(reply)
    except (OSError, ValueError, RecursionError):
        return None
    return answer if isinstance(answer, dict) and answer.get("ok") else None


def _unlink_if(path: Path, inode: int) -> None:
    """Remove the socket file unless it was already replaced by a newer agent's."""
    with contextlib.suppress(FileNotFoundError):
        if path.stat().st_ino == inode:
            path.unlink()


def _reexec(outcome: Exit, lock_fd: int, job_umask: int) -> int:
    """Replace this process with the new zipapp (same pid, same arguments, lock handed over)."""
    assert outcome.exec_pyz is not None
    os.set_inheritable(lock_fd, True)
    os.environ[LOCK_FD_ENV] = str(lock_fd)
    os.environ[JOB_UMASK_ENV] = f"{job_umask:03o}"
    attempts = [
        [sys.executable, outcome.exec_pyz, *sys.argv[1:]],
        list(getattr(sys, "orig_argv", [sys.executable, *sys.argv])),  # fall back to ourselves
    ]
    for argv in attempts:
        log.info("agent_reexec argv=%s", argv)
        logging.shutdown()
        try:
            os.execv(sys.executable, argv)
        except OSError:
            log.exception("agent_reexec_failed argv=%s", argv)
    return 1
