"""What a terminate left on a pool host it could not reach, in ``<home>/ssh_leftovers.json``.

The host goes back to the pool anyway (it may never come back, and `down` must end), but the
cluster's agent may still run there with its jobs: a server holding its port, an agent a new
cluster of the same name would adopt. The next launch that takes the host shuts that agent
down (its jobs with it) and removes its files before it starts its own.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

import msgspec

LEFTOVERS_FILE = "ssh_leftovers.json"


class Leftover(msgspec.Struct, frozen=True, kw_only=True):
    cluster: str
    rank: int
    socket: str | None = None
    """Where its agent listened (None: it never started one)."""
    paths: list[str] = []
    """Its files on the host (workdir, node directory), removed once the agent is down."""


class Leftovers:
    """Per host (``PoolHost.key``), what terminated clusters left there. Read-modify-write
    under an ``flock`` and a rename, as the allocations; the methods block (worker thread)."""

    def __init__(self, home: Path) -> None:
        self.path = home / LEFTOVERS_FILE
        self._lock_path = home / (LEFTOVERS_FILE + ".lock")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, list[Leftover]]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            data = self._read()
            before = msgspec.json.encode(data)
            yield data
            after = msgspec.json.encode({k: v for k, v in data.items() if v})
            if after != before:
                partial = self.path.with_name(f"{self.path.name}.{os.getpid()}.part")
                partial.write_bytes(msgspec.json.format(after))
                os.replace(partial, self.path)
        finally:
            os.close(fd)

    def _read(self) -> dict[str, list[Leftover]]:
        try:
            return msgspec.json.decode(self.path.read_bytes(), type=dict[str, list[Leftover]])
        except FileNotFoundError:
            return {}
        except msgspec.DecodeError:  # a damaged note: what it said is lost, the pool still works
            return {}

    def add(self, host: str, left: Leftover) -> None:
        with self._locked() as data:
            found = data.setdefault(host, [])
            if left not in found:
                found.append(left)

    def on(self, host: str) -> list[Leftover]:
        with self._locked() as data:
            return list(data.get(host, []))

    def drop(self, host: str, left: Leftover) -> None:
        with self._locked() as data:
            data[host] = [x for x in data.get(host, []) if x != left]
