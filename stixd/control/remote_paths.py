"""The local paths a request over HTTP may name: its sender's uploads, nothing else.

A remote client uploads the files its task names (`stixd.control.uploads`) and sends the task
with the paths of those uploads. Any other local path would make the daemon read its own files
(its store, its keys) and sync them to the user's cluster, so it is refused in one line. A
replica that forwards a request to another hands it those files first, and the request then
names their copies there (`with_paths`, stixd/control/handoff.py).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import msgspec

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
    for task in tasks_of(request):
        for path in local_paths(task):
            normal = Path(os.path.normpath(path))
            if normal.is_absolute() and uploads in normal.parents:
                continue
            raise InvalidRequest(
                f"the task names {path[:200]}, a path on the server: a remote client uploads "
                "its local files first (stixctl does), so the server never reads its own"
            )


def _moved(source: str, there: dict[str, str]) -> str:
    return there.get(source, source) if _local(source) else source


def task_with_paths(task: Task, there: dict[str, str]) -> Task:
    """`task` naming `there[path]` for each local path of it that `there` holds."""
    workdir = _moved(task.workdir, there) if isinstance(task.workdir, str) else task.workdir
    mounts: dict[str, str | Storage] = {}
    for dest, src in task.file_mounts.items():
        if isinstance(src, str):
            src = _moved(src, there)
        elif isinstance(src, Storage) and isinstance(src.source, str):
            src = msgspec.structs.replace(src, source=_moved(src.source, there))
        elif isinstance(src, Storage) and isinstance(src.source, list):
            src = msgspec.structs.replace(src, source=[_moved(s, there) for s in src.source])
        mounts[dest] = src
    if workdir == task.workdir and mounts == task.file_mounts:
        return task
    return msgspec.structs.replace(task, workdir=workdir, file_mounts=mounts)


def tasks_of(request: Any) -> list[Task]:
    """The tasks a request carries (`task`, `tasks`)."""
    found = [getattr(request, "task", None), *getattr(request, "tasks", [])]
    return [t for t in found if isinstance(t, Task)]


def with_paths(request: Any, there: dict[str, str]) -> Any:
    """`request` with its tasks naming `there[path]` in place of each local `path`."""
    if not there:
        return request
    changes: dict[str, Any] = {}
    if isinstance(getattr(request, "task", None), Task):
        changes["task"] = task_with_paths(request.task, there)
    tasks = getattr(request, "tasks", None)
    if isinstance(tasks, list):
        changes["tasks"] = [task_with_paths(t, there) if isinstance(t, Task) else t for t in tasks]
    return msgspec.structs.replace(request, **changes) if changes else request
