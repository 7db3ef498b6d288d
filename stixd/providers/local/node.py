"""What a local node's processes start with, and how to find every one of them again.

A local node's agent, its runners and its jobs run as this user on this machine, started from the
daemon. They must not inherit stix's own interpreter setup: with stix's virtualenv on `PATH` (or
its `PYTHONPATH`), a task's `pip install` installs into stix's venv and can break stix. So the
agent starts from the user's environment minus everything stix's own Python and configuration
put there, and the jobs inherit that.

Every process of a node also carries a marker the daemon sets (`STIX_LOCAL_NODE=<node dir>`), so
`stop` and `down` find them all, even a job's detached children and an agent whose socket and
files a job deleted: nothing on the node's disk is needed to find them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path

from stixd.private_home import JOB_UMASK_ENV

NODE_MARKER = "STIX_LOCAL_NODE"
_DAEMON_PREFIXES = ("STIX_", "SKYPILOT_")
"""stix's configuration and its job variables; the agent sets a job's own ones itself."""
_INTERPRETER_VARS = frozenset(
    {
        "VIRTUAL_ENV",
        "VIRTUAL_ENV_PROMPT",
        "PYTHONPATH",
        "PYTHONHOME",
        "PYTHONSAFEPATH",
        "PYTHONEXECUTABLE",
        "PYTHONNOUSERSITE",
        "__PYVENV_LAUNCHER__",
    }
)


def stix_prefixes(environ: Mapping[str, str]) -> list[str]:
    """The virtualenvs stix runs from: the active one and this interpreter's, if a venv."""
    prefixes = []
    if environ.get("VIRTUAL_ENV"):
        prefixes.append(environ["VIRTUAL_ENV"])
    if sys.prefix != sys.base_prefix:
        prefixes.append(sys.prefix)
    return [os.path.realpath(p) for p in prefixes]


def _inside(path: str, prefixes: list[str]) -> bool:
    real = os.path.realpath(path) if path else ""
    return any(real == p or real.startswith(p + os.sep) for p in prefixes)


def node_environment(
    environ: Mapping[str, str], *, node_dir: Path, home: Path, prefixes: list[str]
) -> dict[str, str]:
    """The environment a local node's agent starts with, and so every job on the node."""
    env = {
        key: value
        for key, value in environ.items()
        if key not in _INTERPRETER_VARS and not key.startswith(_DAEMON_PREFIXES)
    }
    path = environ.get("PATH", os.defpath).split(os.pathsep)
    env["PATH"] = os.pathsep.join(p for p in path if not _inside(p, prefixes))
    env["HOME"] = str(home)
    env[NODE_MARKER] = str(node_dir)
    if JOB_UMASK_ENV in environ:  # the umask the user started stixd with, for the jobs
        env[JOB_UMASK_ENV] = environ[JOB_UMASK_ENV]
    return env


def _marker_of(pid: int) -> str | None:
    """The node a process is marked for, if any."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            entries = f.read().split(b"\0")
    except OSError:  # gone, or another user's
        return None
    prefix = f"{NODE_MARKER}=".encode()
    for entry in entries:
        if entry.startswith(prefix):
            return entry[len(prefix) :].decode(errors="replace")
    return None


def marked_processes(node_dirs_under: Path) -> dict[Path, list[int]]:
    """Live processes of this user marked for a node directory inside ``node_dirs_under``
    (a cluster's directory), by node directory; nothing without /proc."""
    if not os.path.isdir("/proc"):
        return {}
    me, uid = os.getpid(), os.getuid()
    found: dict[Path, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            if os.stat(f"/proc/{name}").st_uid != uid:
                continue
        except OSError:
            continue
        marked = _marker_of(int(name))
        if marked is not None and Path(marked).parent == node_dirs_under:
            found.setdefault(Path(marked), []).append(int(name))
    return found


def kill_marked(node_dirs_under: Path) -> list[int]:
    """SIGKILL every process marked for a node inside ``node_dirs_under``; returns those
    signalled (some may have forked meanwhile, so callers repeat until none is left)."""
    pids = [pid for group in marked_processes(node_dirs_under).values() for pid in group]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    return pids
