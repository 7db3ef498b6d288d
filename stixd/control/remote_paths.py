"""What a request from the HTTP API may not name yet: files on the client's machine.

A task's local paths (its workdir, the local sources of its file mounts) name files where the
client runs. Until the client uploads them to the server, the daemon would read its own files
at those paths instead, and a user could have the server's files (its store, its keys) synced
to their cluster; so a remote request that names any is refused in one line.
"""

from __future__ import annotations

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


def refuse_local_paths(request: Any) -> None:
    tasks = [getattr(request, "task", None), *getattr(request, "tasks", [])]
    for task in tasks:
        if isinstance(task, Task) and (paths := local_paths(task)):
            raise InvalidRequest(
                f"the task names files on your machine ({paths[0][:200]}), which the API "
                "server cannot read yet: run it against a local stixd, or use a git workdir "
                "or bucket URLs (s3://, gs://) for its files"
            )
