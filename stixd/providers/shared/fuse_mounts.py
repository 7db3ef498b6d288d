"""FUSE mounts (a bucket mounted by rclone, `stixd/agent/mount.py`) found under a folder and
lazily unmounted: a node's folder is removed only once nothing mounted inside it is left, so a
removal never walks into a bucket and deletes its objects (an agent that died cannot unmount)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from stixd.agent.mount import UNMOUNT_FLUSH_S, WRITE_BACK_MAX_S

SHUTDOWN_DEADLINE_S = 15.0 + UNMOUNT_FLUSH_S + WRITE_BACK_MAX_S
"""How long a stop or down waits for a node agent's ``shutdown`` answer: the agent ends its
jobs, then flushes every mount's writes (at most ``UNMOUNT_FLUSH_S`` plus the longest
write-back delay a task may set) before it answers and unmounts; a stop that gave up sooner
would remove the node's folders, unmounting under writes still pending."""


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def fuse_mounts_under(root: Path) -> list[str]:
    """Mount points at or below ``root`` whose type is FUSE (deepest first)."""
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as f:
            lines = [line.split(" ") for line in f]
    except OSError:
        return []
    top = str(root)
    points = [
        _unescape(parts[1]) for parts in lines if len(parts) > 2 and parts[2].startswith("fuse")
    ]
    found = [p for p in points if p == top or p.startswith(top.rstrip("/") + "/")]
    return sorted(set(found), key=len, reverse=True)


def unmount_under(root: Path) -> list[str]:
    """Lazily unmount every FUSE mount under ``root``; the points still mounted after."""
    tool = shutil.which("fusermount3") or shutil.which("fusermount")
    for point in fuse_mounts_under(root):
        if tool is not None:
            subprocess.run([tool, "-uz", point], capture_output=True, check=False, timeout=30)
        if point in fuse_mounts_under(root):
            subprocess.run(["umount", "-l", point], capture_output=True, check=False, timeout=30)
    return fuse_mounts_under(root)
