"""The local files a forwarded request names, handed to the replica that runs its actor.

A request's tasks may name files of the replica that took it: a remote client's uploads there
(stixd/control/uploads.py), or any path of its host for a client of its socket. The replica
that runs the actor may be on another host, or have another home: so before a request is
forwarded, each such file or directory is pushed to the owner over the protocol a remote
client uploads with (`UploadPlan`, then `UploadFiles` for what the owner lacks or holds
another version of), as the user who asked, and the request then names the owner's copies.
A second request naming the same tree sends only what changed. Bounded as a client's upload
is: one file in one frame at most, files sent in batches of a few MiB.

Copying beats sharing a folder between replicas: it works between hosts, and the owner checks
the paths it is given are that user's uploads there (stixd/control/replica_auth.py), as it
does for a remote client's.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from stixd.control.remote_paths import local_paths, tasks_of, with_paths
from stixproto import messages as m
from stixproto.errors import InternalError, InvalidRequest
from stixproto.framing import MAX_FRAME

Send = Callable[[Any], Awaitable[Any]]
"""Sends one request to the owner and returns its final reply (raising its error)."""

BATCH_BYTES = 4 * 1024 * 1024
FILE_MAX = MAX_FRAME - 64 * 1024
"""A file travels in one frame, as a client's does: a larger one is refused, saying why."""
IGNORE_NAMES = (".gitignore", ".skyignore")
GIT_EXCLUDE = ".git/info/exclude"


async def hand_over(request: Any, send: Send) -> Any:
    """`request` naming the owner's copies of the local files its tasks name, pushed there
    first (the same request when it names none)."""
    paths = sorted({p for task in tasks_of(request) for p in local_paths(task)})
    there = {path: await push(path, send) for path in paths}
    return with_paths(request, there)


async def push(source: str, send: Send) -> str:
    """Push the file or directory `source` of this replica to the owner; its path there."""
    source = os.path.expanduser(source)  # (a client of this replica's socket is its user)
    if not os.path.isabs(source):
        raise InvalidRequest(f"the task names {source[:200]!r}: give an absolute path")
    plan = await anyio.to_thread.run_sync(_plan, source)
    needs = await send(plan)
    if not isinstance(needs, m.UploadNeeds):
        raise InternalError(f"the replica asked to keep {source} answered {type(needs).__name__}")
    planned = {e.path for e in plan.entries if not e.is_dir}
    root = os.path.dirname(source) if plan.is_file else source
    batch: dict[str, bytes] = {}
    size = 0
    for rel in needs.needed:
        if rel not in planned:  # only what this replica offered leaves it
            raise InternalError(f"the replica asked for {rel[:200]!r}, not a file of {source}")
        data = await anyio.to_thread.run_sync(_read, os.path.join(root, rel))
        if size + len(data) > BATCH_BYTES and batch:
            await send(m.UploadFiles(source=source, files=batch))
            batch, size = {}, 0
        batch[rel] = data
        size += len(data)
    if batch:
        await send(m.UploadFiles(source=source, files=batch))
    return needs.target


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(FILE_MAX + 1)
    except OSError as exc:
        raise InvalidRequest(
            f"cannot hand {path} to the replica that runs this: {exc.strerror}"
        ) from None
    if len(data) > FILE_MAX:
        raise InvalidRequest(
            f"cannot hand {path} to the replica that runs this: files past "
            f"{FILE_MAX // (1024 * 1024)} MiB are not uploaded; put it in a bucket and mount "
            "that, or list it in .skyignore"
        )
    return data


def _plan(source: str) -> m.UploadPlan:
    """Every entry under `source` (a symlink to a directory is not followed, one to a file is
    sent as the file) and the ignore files among them; or the one file `source` is."""
    try:
        info = os.stat(source)
    except OSError as exc:
        raise InvalidRequest(f"the task names {source}: {exc.strerror} on this replica") from None
    if not stat.S_ISDIR(info.st_mode):
        name = os.path.basename(source)
        entry = m.UploadEntry(name, False, info.st_size, info.st_mtime_ns, info.st_mode & 0o7777)
        return m.UploadPlan(source=source, is_file=True, entries=[entry])
    entries: list[m.UploadEntry] = []
    ignore_files: dict[str, bytes] = {}
    for current, dirs, files in os.walk(source):
        rel_dir = os.path.relpath(current, source)
        prefix = "" if rel_dir == "." else rel_dir.replace(os.sep, "/") + "/"
        for name in sorted(dirs):
            path = os.path.join(current, name)
            if not os.path.islink(path):
                mtime = os.stat(path).st_mtime_ns
                entries.append(m.UploadEntry(prefix + name, True, 0, mtime, 0o700))
        for name in sorted(files):
            rel = prefix + name
            try:
                found = os.stat(os.path.join(current, name))
            except OSError:
                continue  # a dangling symlink: nothing to send
            if not stat.S_ISREG(found.st_mode):
                continue
            mode = found.st_mode & 0o7777
            entries.append(m.UploadEntry(rel, False, found.st_size, found.st_mtime_ns, mode))
            if name in IGNORE_NAMES or rel == GIT_EXCLUDE:
                ignore_files[rel] = _read(os.path.join(current, name))
    return m.UploadPlan(source=source, is_file=False, entries=entries, ignore_files=ignore_files)
