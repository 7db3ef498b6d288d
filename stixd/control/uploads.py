"""A remote client's local files (a task's workdir and file mounts), kept on the server.

Each user has a folder of uploads, one per client path (``<home>/uploads/<user>/<id>/tree``).
`UploadPlan` lists everything under the client's directory and its ignore files; the server
keeps what a sync would send (`SyncFilter`: the same ``.skyignore``/``.gitignore`` rules a
workdir sync to a node follows, so ignored files never leave the client), deletes what is no
longer there, and asks for the files it lacks or holds another version of (size or mtime differ);
`UploadFiles` brings them. The task then names the tree on the server in place of the client's
path; a remote request may name no other local path (`stixd.control.remote_paths`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path, PurePosixPath
from typing import Any

import anyio
import msgspec

from stixd.app import App
from stixd.providers.shared.syncfilter import GIT_EXCLUDE, GITIGNORE, SKYIGNORE, SyncFilter
from stixproto import messages as m
from stixproto.errors import InvalidRequest
from stixproto.paths import child_path

UPLOADS = "uploads"
MAX_IGNORE_BYTES = 1 << 20
Meta = tuple[int, int, int]
"""size, mtime_ns, mode"""
_FILES = msgspec.json.Decoder(dict[str, tuple[int, int, int]])


def user_root(app: App, user: str) -> Path:
    """Every upload of `user`: the only local paths a request of theirs over HTTP may name."""
    return child_path(app.home / UPLOADS, user)


def _folder(app: App, user: str, source: str) -> Path:
    return child_path(user_root(app, user), hashlib.sha256(source.encode()).hexdigest()[:20])


def _relative(rel: str) -> str:
    """A client's relative path, refused unless it stays below the folder it names."""
    parts = PurePosixPath(rel).parts
    if (
        not parts
        or rel.startswith("/")
        or "\0" in rel
        or any(p in ("", ".", "..") for p in rel.split("/"))
    ):
        raise InvalidRequest(f"upload: {rel[:200]!r} is not a path below the uploaded directory")
    return rel


def _is_ignore_file(rel: str) -> bool:
    return rel == GIT_EXCLUDE or rel.rsplit("/", 1)[-1] in (GITIGNORE, SKYIGNORE)


def _read_files(path: Path) -> dict[str, Meta]:
    try:
        return _FILES.decode(path.read_bytes())
    except (OSError, msgspec.DecodeError):
        return {}


def _write_files(path: Path, files: dict[str, Meta]) -> None:
    partial = path.with_suffix(".partial")
    partial.write_bytes(msgspec.json.encode(files))
    os.replace(partial, path)


class Uploads:
    """The uploads of one daemon; one plan or batch at a time per folder."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.locks: dict[Path, anyio.Lock] = {}

    async def handle(self, user: str, req: m.UploadPlan | m.UploadFiles) -> Any:
        folder = _folder(self.app, user, req.source)
        lock = self.locks.setdefault(folder, anyio.Lock())
        async with lock:
            if isinstance(req, m.UploadPlan):
                return await anyio.to_thread.run_sync(_plan, folder, req)
            await anyio.to_thread.run_sync(_store, folder, req)
            return m.OkReply(message=f"{len(req.files)} file(s) stored")


def _kept(req: m.UploadPlan, rules: Path) -> tuple[dict[str, Meta], list[str]]:
    """The files and directories a sync of the client's directory sends."""
    if req.is_file:
        if len(req.entries) != 1 or req.entries[0].is_dir or "/" in req.entries[0].path:
            raise InvalidRequest("upload: a file upload lists exactly that one file")
        e = req.entries[0]
        return {_relative(e.path): (e.size, e.mtime_ns, e.mode)}, []
    shutil.rmtree(rules, ignore_errors=True)
    rules.mkdir(parents=True)
    for rel, data in req.ignore_files.items():
        if not _is_ignore_file(_relative(rel)) or len(data) > MAX_IGNORE_BYTES:
            raise InvalidRequest(f"upload: {rel[:200]!r} is not an ignore file stix reads")
        (rules / rel).parent.mkdir(parents=True, exist_ok=True)
        (rules / rel).write_bytes(data)
    rule = SyncFilter(rules)
    files: dict[str, Meta] = {}
    dirs: list[str] = []
    for e in req.entries:
        if rule.excludes(_relative(e.path), e.is_dir):
            continue
        if e.is_dir:
            dirs.append(e.path)
        else:
            files[e.path] = (e.size, e.mtime_ns, e.mode)
    return files, dirs


def _plan(folder: Path, req: m.UploadPlan) -> m.UploadNeeds:
    folder.mkdir(parents=True, exist_ok=True)
    tree = folder / "tree"
    files, dirs = _kept(req, folder / "rules")
    held = _read_files(folder / "held.json")
    tree.mkdir(exist_ok=True)
    for current, subdirs, names in os.walk(tree, topdown=False):  # what the client no longer has
        rel_dir = os.path.relpath(current, tree)
        prefix = "" if rel_dir == "." else rel_dir.replace(os.sep, "/") + "/"
        for name in names:
            if prefix + name not in files:
                os.unlink(os.path.join(current, name))
                held.pop(prefix + name, None)
        for name in subdirs:
            path = os.path.join(current, name)
            if prefix + name not in dirs and not os.listdir(path):
                os.rmdir(path)
    for rel in dirs:
        (tree / rel).mkdir(parents=True, exist_ok=True)
    held = {rel: meta for rel, meta in held.items() if files.get(rel) == meta}
    _write_files(folder / "held.json", held)
    _write_files(folder / "wanted.json", files)
    target = tree / req.entries[0].path if req.is_file else tree
    return m.UploadNeeds(target=str(target), needed=sorted(set(files) - set(held)))


def _store(folder: Path, req: m.UploadFiles) -> None:
    wanted = _read_files(folder / "wanted.json")
    held = _read_files(folder / "held.json")
    tree = folder / "tree"
    for rel, data in req.files.items():
        meta = wanted.get(_relative(rel))
        if meta is None or meta[0] != len(data):
            raise InvalidRequest(
                f"upload: {rel[:200]!r} is not a file the last plan asked for (or its size "
                "changed since): upload again"
            )
        _size, mtime_ns, mode = meta
        path = tree / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".stix-partial")
        partial.write_bytes(data)
        os.chmod(partial, mode & 0o700 or 0o600)  # the home is private; the owner's x stays
        os.utime(partial, ns=(mtime_ns, mtime_ns))
        os.replace(partial, path)
        held[rel] = meta
    _write_files(folder / "held.json", held)
