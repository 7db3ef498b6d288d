"""The local paths a request over HTTP may name: its sender's uploads, nothing else.

A remote client uploads the files its task names (`stixd.control.uploads`) and sends the task
with the paths of those uploads. Any other local path would make the daemon read its own files
(its store, its keys) and sync them to the user's cluster, so it is refused in one line.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from stixproto.errors import InvalidRequest
from stixproto.task.model import Storage, Task


def _local(source: str) -> bool:
    return "://" not in source


def local_paths(task: Task) -> list[str]:
    """The local paths a task names: its workdir (not a git one), its local mount sources."""
    found = [task.workdir] if isinstance(task.workdir, str) else []
    for src in task.file_mounts.values():
        if isinstance(src, str):
            found += [src] if _local(src) else []
        elif isinstance(src, Storage) and src.source is not None:
            sources = [src.source] if isinstance(src.source, str) else src.source
            found += [s for s in sources if _local(s)]
    return found


def refuse_local_paths(request: Any, uploads: Path) -> None:
    """Refuse a task naming a local path that is not one of the caller's `uploads`."""
    tasks = [getattr(request, "task", None), *getattr(request, "tasks", [])]
    for task in tasks:
        if not isinstance(task, Task):
            continue
        for path in local_paths(task):
            normal = Path(os.path.normpath(path))
            if normal.is_absolute() and uploads in normal.parents:
                continue
            raise InvalidRequest(
                f"the task names {path[:200]}, a path on the server: a remote client uploads "
                "its local files first (stixctl does), so the server never reads its own"
            )
