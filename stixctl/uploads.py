"""Before a request goes to a remote API server: upload the local files its tasks name.

A task's workdir and the local sources of its file mounts are listed (every entry, and the
ignore files among them) in an `UploadPlan`; the server answers which files it lacks or holds
another version of, after leaving out what the ignore files exclude (the rules of a sync to a
node, applied by the server), and those are sent in `UploadFiles` batches. The task then names
the server's copies. So a second launch of the same workdir sends only what changed.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from typing import Any

import msgspec

from stixproto import messages as m
from stixproto.errors import InvalidRequest
from stixproto.framing import MAX_FRAME
from stixproto.task.model import Storage, Task

Ask = Callable[[Any], Any]
"""Sends one request to the server and returns its final reply (raising its error)."""

BATCH_BYTES = 4 * 1024 * 1024
FILE_MAX = MAX_FRAME - 64 * 1024
"""A file travels in one frame for now: files past this are refused, with what to do."""
IGNORE_NAMES = (".gitignore", ".skyignore")
GIT_EXCLUDE = ".git/info/exclude"


def _local(source: str) -> bool:
    return "://" not in source


def with_uploads(request: Any, ask: Ask) -> Any:
    """`request` with its tasks' local paths replaced by their uploads on the server (the same
    request when it names none)."""
    done: dict[str, str] = {}

    def there(path: str) -> str:
        if path not in done:
            done[path] = upload(path, ask)
        return done[path]

    changes: dict[str, Any] = {}
    task = getattr(request, "task", None)
    if isinstance(task, Task):
        changes["task"] = _task_there(task, there)
    tasks = getattr(request, "tasks", None)
    if isinstance(tasks, list) and any(isinstance(t, Task) for t in tasks):
        changes["tasks"] = [_task_there(t, there) if isinstance(t, Task) else t for t in tasks]
    if not done:
        return request
    return msgspec.structs.replace(request, **changes)


def _task_there(task: Task, there: Callable[[str], str]) -> Task:
    workdir = there(task.workdir) if isinstance(task.workdir, str) else task.workdir
    mounts: dict[str, str | Storage] = {}
    for dest, src in task.file_mounts.items():
        if isinstance(src, str) and _local(src):
            src = there(src)
        elif isinstance(src, Storage) and isinstance(src.source, str) and _local(src.source):
            src = msgspec.structs.replace(src, source=there(src.source))
        elif isinstance(src, Storage) and isinstance(src.source, list):
            sources = [there(s) if _local(s) else s for s in src.source]
            src = msgspec.structs.replace(src, source=sources)
        mounts[dest] = src
    if workdir == task.workdir and mounts == task.file_mounts:
        return task
    return msgspec.structs.replace(task, workdir=workdir, file_mounts=mounts)


def upload(source: str, ask: Ask) -> str:
    """Upload the file or directory `source` (absolute); its path on the server."""
    try:
        info = os.stat(source)
    except OSError as exc:
        raise InvalidRequest(f"{source}: {exc.strerror} on this machine") from None
    if stat.S_ISDIR(info.st_mode):
        plan = _plan_directory(source)
    else:
        name = os.path.basename(source)
        entry = m.UploadEntry(name, False, info.st_size, info.st_mtime_ns, info.st_mode & 0o7777)
        plan = m.UploadPlan(source=source, is_file=True, entries=[entry])
    needs = ask(plan)
    root = source if not plan.is_file else os.path.dirname(source)
    batch: dict[str, bytes] = {}
    size = 0
    for rel in needs.needed:
        data = _read(os.path.join(root, rel))
        if size + len(data) > BATCH_BYTES and batch:
            ask(m.UploadFiles(source=source, files=batch))
            batch, size = {}, 0
        batch[rel] = data
        size += len(data)
    if batch:
        ask(m.UploadFiles(source=source, files=batch))
    return str(needs.target)


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(FILE_MAX + 1)
    except OSError as exc:
        raise InvalidRequest(f"cannot upload {path}: {exc.strerror}") from None
    if len(data) > FILE_MAX:
        raise InvalidRequest(
            f"cannot upload {path}: files past {FILE_MAX // (1024 * 1024)} MiB are not uploaded "
            "yet; put it in a bucket and mount that, or list it in .skyignore"
        )
    return data


def _plan_directory(source: str) -> m.UploadPlan:
    """Every entry under `source` (a symlink to a directory is not followed, a symlink to a
    file is sent as the file) and the ignore files among them."""
    entries: list[m.UploadEntry] = []
    ignore_files: dict[str, bytes] = {}
    for current, dirs, files in os.walk(source):
        rel_dir = os.path.relpath(current, source)
        prefix = "" if rel_dir == "." else rel_dir.replace(os.sep, "/") + "/"
        for name in sorted(dirs):
            path = os.path.join(current, name)
            if os.path.islink(path):
                continue
            info = os.stat(path)
            entries.append(m.UploadEntry(prefix + name, True, 0, info.st_mtime_ns, 0o700))
        for name in sorted(files):
            rel = prefix + name
            try:
                info = os.stat(os.path.join(current, name))
            except OSError:
                continue  # a dangling symlink: nothing to send
            if not stat.S_ISREG(info.st_mode):
                continue
            entries.append(
                m.UploadEntry(rel, False, info.st_size, info.st_mtime_ns, info.st_mode & 0o7777)
            )
            if name in IGNORE_NAMES or rel == GIT_EXCLUDE:
                ignore_files[rel] = _read(os.path.join(current, name))
    return m.UploadPlan(source=source, is_file=False, entries=entries, ignore_files=ignore_files)
