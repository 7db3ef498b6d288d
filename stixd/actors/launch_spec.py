"""What `launch --fast` compares: the launch spec a cluster was last set up for, and a
signature of the local files its last sync copied.

SkyPilot's `--fast` skips setup when the cluster is UP and its config is unchanged. Here the
spec (resources, nodes, setup, envs, mounts) decides whether setup runs again, and the files'
signature whether the workdir and file mounts are copied again: an edited source file is synced,
an unchanged tree is not touched, and neither makes setup run again.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator

import msgspec

from stixd.actors.syncing import WORKDIR_DEST
from stixproto.task import Task, resolved_envs, secret_names

MAX_FILES = 200_000
"""Files looked at for the signature; a bigger tree is always synced (rsync compares it)."""


def spec_digest(task: Task) -> str:
    """The parts of a task that setup depends on. Secret values stay out of it (a digest of a
    short secret can be guessed back); a changed secret name still counts."""
    secrets = set(secret_names(task))
    envs = {k: v for k, v in resolved_envs(task).items() if k not in secrets}
    shape = {
        "resources": msgspec.to_builtins(task.resources),
        "num_nodes": task.num_nodes,
        "setup": task.setup,
        "envs": envs,
        "secrets": sorted(secrets),
        "workdir": task.workdir,
        "file_mounts": msgspec.to_builtins(task.file_mounts),
        "volumes": task.volumes,
    }
    return hashlib.sha256(msgspec.json.encode(shape, order="sorted")).hexdigest()


def files_digest(task: Task) -> str | None:
    """Path, size and modification time of every local file the sync would copy; None when
    there are too many to be worth comparing. Blocking: run it in a thread."""
    sources = {WORKDIR_DEST: task.workdir} if isinstance(task.workdir, str) else {}
    sources.update(task.copy_mounts())
    h = hashlib.sha256()
    seen = 0
    for dest in sorted(sources):
        source = sources[dest]
        h.update(f"\0{dest}\0{source}\0".encode(errors="surrogateescape"))
        if "://" in source:
            return None  # a bucket: its contents are not ours to stat
        for entry in _entries(source):
            seen += 1
            if seen > MAX_FILES:
                return None
            h.update(entry.encode(errors="surrogateescape"))
    return h.hexdigest()


def _entries(source: str) -> Iterator[str]:
    try:
        top = os.lstat(source)
    except OSError:
        yield "missing"
        return
    if not os.path.isdir(source):
        yield _line("", top)
        return
    for root, dirs, files in os.walk(source):
        dirs.sort()
        for name in sorted(files + [d for d in dirs if os.path.islink(os.path.join(root, d))]):
            path = os.path.join(root, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue  # gone while walking: the sync will not find it either
            yield _line(os.path.relpath(path, source), st)


def _line(rel: str, st: os.stat_result) -> str:
    return f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_mode}\n"
