"""Facts about processes: is a recorded runner still the same process, who is in its group.

A runner is identified by its pid plus its start time from ``/proc/<pid>/stat``, so a pid reused
by an unrelated process is never mistaken for the runner (and never signalled).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys

_PROC = "/proc"


def _stat_fields(pid: int) -> list[str] | None:
    """Fields 3.. of ``/proc/<pid>/stat`` (after the parenthesised command name)."""
    try:
        with open(f"{_PROC}/{pid}/stat", "rb") as f:
            raw = f.read().decode("ascii", "replace")
    except OSError:
        return None
    return raw[raw.rfind(")") + 2 :].split()


def start_token(pid: int) -> str | None:
    """The process's start time as an opaque token, or None if it is gone or a zombie.

    Without /proc (macOS) the token is "" for any live pid: liveness is all we can tell.
    """
    if not os.path.isdir(_PROC):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return ""
        return ""
    fields = _stat_fields(pid)
    if fields is None or len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    return fields[19]


def is_same_process(pid: int, token: str | None) -> bool:
    current = start_token(pid)
    return current is not None and (not token or not current or current == token)


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is ``pgid``."""
    if not os.path.isdir(_PROC):
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return []
        return [pgid]
    members = []
    for name in os.listdir(_PROC):
        if not name.isdigit():
            continue
        fields = _stat_fields(int(name))
        if fields and len(fields) > 2 and fields[0] not in ("Z", "X") and fields[2] == str(pgid):
            members.append(int(name))
    return members


def signal_group(pgid: int, token: str | None, sig: signal.Signals) -> None:
    """Signal a runner's whole process group, unless its leader's pid now names someone else."""
    leader = start_token(pgid)
    if leader is not None and token and leader and leader != token:
        return
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        # The runner may not have called setsid() yet; it then still runs in our group, so
        # signal it alone. Its signals are blocked until setsid, so the signal waits for it.
        if leader is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pgid, sig)
    except PermissionError:
        pass  # not ours to signal: the pgid now belongs to another user's process


def processes_with_env(entry: str) -> list[int]:
    """Live processes of this user, other than this one, whose environment holds ``entry``
    (``NAME=value``) as they were started; none without /proc."""
    if not os.path.isdir(_PROC):
        return []
    wanted, me, uid = entry.encode(), os.getpid(), os.getuid()
    found = []
    for name in os.listdir(_PROC):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            if os.stat(f"{_PROC}/{name}").st_uid != uid:
                continue
            with open(f"{_PROC}/{name}/environ", "rb") as f:
                if wanted in f.read().split(b"\0"):
                    found.append(int(name))
        except OSError:  # gone meanwhile
            continue
    return found


def kill_processes_with_env(entry: str) -> list[int]:
    """SIGKILL every process ``processes_with_env`` finds; returns them (callers repeat until
    none is left, as one may have forked meanwhile)."""
    pids = processes_with_env(entry)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    return pids


def boot_time() -> float:
    """When this machine booted (unix time), or 0.0 if that cannot be read."""
    try:
        with open(f"{_PROC}/stat") as f:
            for line in f:
                if line.startswith("btime "):
                    return float(line.split()[1])
    except OSError:
        pass
    return 0.0


def close_inherited_fds(keep: set[int]) -> None:
    """Close every descriptor above stderr except those in ``keep`` (used in a fresh fork)."""
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        fds = list(range(3, 4096 if sys.platform != "darwin" else 1024))
    for fd in fds:
        if fd > 2 and fd not in keep:
            with contextlib.suppress(OSError):
                os.close(fd)
