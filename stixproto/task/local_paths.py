"""A task's local paths (workdir, file mount sources) made absolute against a directory.

Apart from the loader so that `stixctl` can resolve the paths of a task the daemon read for it
(against the client's own directory, as SkyPilot does) without importing the task rules.
"""

from __future__ import annotations

import os

import msgspec

from stixproto.task.model import Storage, Task


def _local(src: str) -> str:
    """Absolute form of a local path (against the caller's cwd, as SkyPilot resolves them).
    A path still holding an unset `$VAR` is left alone so messages show what was written."""
    if "://" in src or "$" in src:
        return src
    return os.path.abspath(os.path.expanduser(src))


def resolve_paths(task: Task) -> Task:
    """Workdir and local mount sources made absolute, so the daemon can read them."""
    workdir = _local(task.workdir) if isinstance(task.workdir, str) else task.workdir
    mounts: dict[str, str | Storage] = {}
    for dest, src in task.file_mounts.items():
        if isinstance(src, str):
            src = _local(src)
        elif src.source is not None and not isinstance(src.source, str):
            src = msgspec.structs.replace(src, source=[_local(s) for s in src.source])
        elif isinstance(src.source, str):
            src = msgspec.structs.replace(src, source=_local(src.source))
        mounts[dest] = src
    return msgspec.structs.replace(task, workdir=workdir, file_mounts=mounts)
