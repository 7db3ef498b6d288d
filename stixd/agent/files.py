"""The node's own files (queue, socket, lock, logs), and putting them back when a job deletes them.

They live in a hidden directory (`~/.stix/...`) that tasks do not commonly clean, but a job can
still run `rm -rf ~`. The agent notices within a tick (a file's identity changed or vanished),
writes its queue back from the connection it still holds, binds its socket again and retakes its
lock, so the daemon can still reach it, learn why the jobs ended and stop it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
from pathlib import Path

from .store import JobStore

LOCK_FD_ENV = "STIX_AGENT_LOCK_FD"
"""Set only across an upgrade re-exec: the descriptor of the node lock, already held."""
_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"

log = logging.getLogger("stix_agent.files")


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class NodeFiles:
    def __init__(self, node_dir: Path, socket_path: Path) -> None:
        self.node_dir = node_dir
        self.socket_path = socket_path
        self.logs_dir = node_dir / "logs"
        self.db_path = node_dir / "agent.db"
        self.lock_path = node_dir / "agent.lock"
        self.pid_path = node_dir / "agent.pid"
        self.log_path = node_dir / "agent.log"
        self.lock_fd: int | None = None
        self._seen: dict[Path, tuple[int, int] | None] = {}

    def watch(self) -> None:
        """Remember what the files are now; ``lost`` reports any that changed since."""
        watched = (self.node_dir, self.logs_dir, self.db_path, self.lock_path, self.socket_path)
        self._seen = {path: _identity(path) for path in watched}

    def lost(self) -> list[Path]:
        return [path for path, seen in self._seen.items() if _identity(path) != seen]

    def cuts_jobs(self, lost: list[Path]) -> bool:
        """Whether losing ``lost`` cut the running jobs' records or logs."""
        return bool({self.node_dir, self.logs_dir, self.db_path} & set(lost))

    # -- setting up ----------------------------------------------------------------------

    def make_dirs(self) -> None:
        self.node_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.logs_dir.mkdir(exist_ok=True)

    def take_lock(self) -> bool:
        """Hold the node lock (close-on-exec); False if another agent holds it."""
        inherited = os.environ.pop(LOCK_FD_ENV, None)
        if inherited is not None and inherited.isdigit() and self._is_lock(int(inherited)):
            fd = int(inherited)
        else:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.set_inheritable(fd, False)
        self.lock_fd = fd
        return True

    def _is_lock(self, fd: int) -> bool:
        try:
            held = os.fstat(fd)
        except OSError:
            return False
        return (held.st_dev, held.st_ino) == _identity(self.lock_path)

    def log_to_file(self) -> None:
        root = logging.getLogger()
        for handler in list(root.handlers):
            if isinstance(handler, logging.FileHandler) and handler.baseFilename == str(
                self.log_path
            ):
                root.removeHandler(handler)
                handler.close()
        handler = logging.FileHandler(self.log_path)
        handler.setFormatter(logging.Formatter(_LOG_FORMAT))
        root.addHandler(handler)
        root.setLevel(logging.INFO)

    def write_pid(self) -> None:
        tmp = self.pid_path.with_name(self.pid_path.name + ".tmp")
        tmp.write_text(f"{os.getpid()}\n")
        os.replace(tmp, self.pid_path)

    def remove_pid(self) -> None:
        with contextlib.suppress(OSError):
            if self.pid_path.read_text().strip() == str(os.getpid()):
                self.pid_path.unlink()

    def bind(self) -> socket.socket:
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()  # stale: no live agent answered on it
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        previous_umask = os.umask(0o177)  # never exists with a mode wider than 0600
        try:
            listener.bind(str(self.socket_path))
        finally:
            os.umask(previous_umask)
        os.chmod(self.socket_path, 0o600)
        return listener

    # -- putting back ----------------------------------------------------------------------

    def restore(self, store: JobStore) -> socket.socket | None:
        """Put back what was deleted; returns a new listener if the socket had to be bound again.

        The queue is written back from the store's open connection, which still reads the
        deleted file; the lock is taken again on a new file, so no second agent can start.
        """
        lost = set(self.lost())
        self.make_dirs()
        self.log_to_file()
        if self.db_path in lost:
            store.write_back()
        if self.lock_path in lost:
            old = self.lock_fd
            if self.take_lock() and old is not None:
                os.close(old)
        self.write_pid()
        listener = self.bind() if self.socket_path in lost else None
        self.watch()
        return listener
