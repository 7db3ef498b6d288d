"""Idleness and autostop: the dead-man's switch that stops the node when nobody uses it.

It runs inside the agent, so it works when the controlling daemon is gone.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from .store import JobStore

SELF_STOPPED_FILE = "self_stopped.json"
_AUTOSTOP_KEY = "autostop"
_SET_AT_KEY = "autostop_set_at"
_SELF_STOP_KEY = "self_stop_command"


@dataclasses.dataclass(frozen=True)
class Autostop:
    idle_minutes: float
    down: bool
    grace_minutes: float

    @property
    def after_s(self) -> float:
        """Idle seconds after which the node stops itself."""
        return (self.idle_minutes + self.grace_minutes) * 60.0

    def to_wire(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_autostop(store: JobStore) -> Autostop | None:
    raw = store.meta(_AUTOSTOP_KEY)
    fields = json.loads(raw) if raw else None
    return Autostop(**fields) if fields else None


def save_autostop(store: JobStore, autostop: Autostop | None, now: float) -> None:
    """Persist the setting (None cancels); setting it restarts the idle clock."""
    value = json.dumps(autostop.to_wire() if autostop else None)
    store.set_meta(_AUTOSTOP_KEY, value)
    store.set_meta(_SET_AT_KEY, repr(now))


def idle_since(store: JobStore, active_jobs: int, boot_time: float) -> float | None:
    """Since when the node has had nothing to do, or None while any job is unfinished."""
    if active_jobs:
        return None
    return max(
        store.created_at(),
        boot_time,
        store.last_ended_at() or 0.0,
        float(store.meta(_SET_AT_KEY) or 0.0),
    )


def autostop_due(autostop: Autostop | None, since: float | None, now: float) -> bool:
    return autostop is not None and since is not None and now - since >= autostop.after_s


def stop_node(
    node_dir: Path, autostop: Autostop, now: float, idle_for: float, *, remove: Path
) -> None:
    """Leave the node stopped: a ``self_stopped.json`` record, or with ``down`` no directory
    (``remove``, which holds the node directory: a local node's whole sandbox)."""
    if autostop.down:
        if remove != node_dir and remove not in node_dir.parents:
            remove = node_dir  # never anything that is not the node's own
        shutil.rmtree(remove, ignore_errors=True)
        return
    record = {
        "at": now,
        "reason": f"idle for {idle_for:.0f}s, autostop after {autostop.after_s:.0f}s",
        "down": False,
    }
    tmp = node_dir / (SELF_STOPPED_FILE + ".tmp")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, node_dir / SELF_STOPPED_FILE)


def load_self_stop(store: JobStore) -> str | None:
    """The command that stops the machine itself (a cloud VM's ``shutdown``), if any."""
    raw = store.meta(_SELF_STOP_KEY)
    command = json.loads(raw) if raw else None
    return str(command) if command else None


def save_self_stop(store: JobStore, command: str | None) -> None:
    store.set_meta(_SELF_STOP_KEY, json.dumps(command))


def stop_machine(command: str) -> int:
    """Start ``command`` (in its own session: it outlives this agent) to stop the machine."""
    proc = subprocess.Popen(
        ["/bin/sh", "-c", command],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    return proc.pid
