"""The daemon's half of a tree sync into a pod: compare the source with what the pod lists,
then one tar stream of what differs, with its byte count announced (``inpod/tarsync.py`` is the
pod's half).

The comparison is ``filesync.sync_path``'s: a file is sent unless the pod has one of the same
size and mtime (a link: the same target); what the source's ignore files exclude is neither
sent nor removed; whatever else the pod has that the source has not is removed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stixd.providers.shared.syncfilter import SyncFilter

BLOCK = tarfile.BLOCKSIZE
RECORD = tarfile.RECORDSIZE  # what a tar is padded to, as tarfile and GNU tar write it
CHUNK = 256 * 1024
SLICE = 1024 * 1024
"""The most of one file read at a time: a file of many GB costs the daemon this, not its size."""


@dataclasses.dataclass(frozen=True)
class Entry:
    kind: str  # "f", "d" or "l"
    size: int
    mtime_ns: int
    target: str


def read_listing(raw: str) -> tuple[str, dict[str, Entry]]:
    """The pod's answer to ``list``: the kind of the path itself ("none" when missing) and every
    entry, by path relative to it (the path itself is "")."""
    data: dict[str, Any] = json.loads(raw)
    entries = {
        str(rel): Entry(str(kind), int(size), int(mtime), str(target))
        for rel, kind, size, mtime, target in data["entries"]
    }
    return str(data["kind"]), entries


@dataclasses.dataclass
class Plan:
    root: str
    """The pod's folder the paths are relative to."""
    reset: bool = False
    """Remove ``root`` itself first (it is a file where a folder goes)."""
    remove: list[str] = dataclasses.field(default_factory=list)
    send: list[tuple[str, Path]] = dataclasses.field(default_factory=list)
    """(path in the pod, relative to ``root``; the local file, folder or link)."""

    @property
    def files(self) -> int:
        return sum(1 for _, local in self.send if not _is_real_dir(local))

    @property
    def empty(self) -> bool:
        return not (self.reset or self.remove or self.send)


def _is_real_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()


def _same(local: Path, there: Entry | None) -> bool:
    if there is None:
        return False
    st = local.lstat()
    if local.is_symlink():
        return there.kind == "l" and there.target == os.readlink(local)
    return there.kind == "f" and there.size == st.st_size and there.mtime_ns == st.st_mtime_ns


def plan_file(local: Path, remote: str, kind: str, there: dict[str, Entry]) -> Plan:
    """Sending one file (or link) to the path ``remote``."""
    parent, _, name = remote.rstrip("/").rpartition("/")
    plan = Plan(root=parent or ("/" if remote.startswith("/") else "."))
    if _same(local, there.get("")):
        return plan
    if kind == "d":
        plan.remove.append(name)
    plan.send.append((name, local))
    return plan


def plan_tree(src: Path, remote: str, kind: str, there: dict[str, Entry]) -> Plan:
    """Making the folder ``remote`` a copy of ``src``, as ``filesync.sync_path`` would."""
    plan = Plan(root=remote, reset=kind not in ("d", "none"))
    if plan.reset:
        there = {}
    rules = SyncFilter(src)
    wanted: dict[str, set[str]] = {"": set()}
    for rel, real_dir, kept in rules.walk():
        if not kept:
            continue
        parent, _, name = rel.rpartition("/")
        wanted[parent].add(name)
        found = there.get(rel)
        if real_dir:
            wanted[rel] = set()
            if found is None or found.kind != "d":
                if found is not None:
                    plan.remove.append(rel)
                plan.send.append((rel, src / rel))
        elif not _same(src / rel, found):
            if found is not None and found.kind == "d":
                plan.remove.append(rel)
            plan.send.append((rel, src / rel))
    for rel, found in there.items():
        parent, _, name = rel.rpartition("/")
        gone = rel and parent in wanted and name not in wanted[parent]
        if gone and not rules.excludes(rel, found.kind == "d"):
            plan.remove.append(rel)
    return plan


def _member(rel: str, local: Path) -> tuple[tarfile.TarInfo, os.stat_result]:
    """The tar header of ``local``, made from one ``lstat``: no owner names looked up, and a
    whole-second mtime so no PAX header is needed for it (the exact one goes in ``times``)."""
    st = local.lstat()
    info = tarfile.TarInfo(rel)
    info.mode = st.st_mode & 0o7777
    info.mtime = int(st.st_mtime)
    if stat.S_ISLNK(st.st_mode):
        info.type, info.linkname = tarfile.SYMTYPE, os.readlink(local)
    elif stat.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
    else:
        info.size = st.st_size
    return info, st


class TarStream:
    """The tar of what a plan sends, made as it is sent: its exact byte count is known before
    the first byte (every header is made from one ``lstat`` up front), so the pod is told how
    much to read and building overlaps sending and unpacking, as ``tar c | tar x`` does.

    Files are read in slices of ``SLICE`` bytes as the pieces are sent, never whole. A file
    that changes size between the ``lstat`` and its read is sent as tar itself does it: cut or
    padded with NULs to the announced size, with its old mtime, so the next sync sees it differ
    and sends it again. Failing the sync instead would make a workdir with a log being written
    to never sync; the count never changes once announced, which the pod's reader relies on."""

    def __init__(self, plan: Plan) -> None:
        self.members: list[tuple[bytes, Path | None, int]] = []
        """(header, the file to read or None, its size in the header)."""
        self.times: dict[str, int] = {}
        for rel, local in plan.send:
            info, st = _member(rel, local)
            if not info.isdir():
                self.times[rel] = st.st_mtime_ns
            header = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
            self.members.append((header, local if info.isfile() else None, info.size))
        body = sum(len(header) + _padded(size) for header, _, size in self.members)
        self.size = _padded(body + 2 * BLOCK, RECORD)

    def chunks(self, at_least: int = CHUNK) -> Iterator[bytes]:
        """The tar in pieces of about ``at_least`` bytes (many small files to a piece)."""
        piece = bytearray()
        sent = 0
        for header, local, size in self.members:
            piece += header
            for part in _slices(local, size) if local is not None else ():
                piece += part
                if len(piece) >= at_least:
                    sent += len(piece)
                    yield bytes(piece)
                    piece.clear()
            piece += bytes(_padded(size) - size)
            if len(piece) >= at_least:
                sent += len(piece)
                yield bytes(piece)
                piece.clear()
        piece += bytes(self.size - sent - len(piece))
        yield bytes(piece)


def _padded(size: int, unit: int = BLOCK) -> int:
    return -(-size // unit) * unit


def _slices(local: Path, size: int) -> Iterator[bytes]:
    """Exactly ``size`` bytes of ``local``, at most ``SLICE`` at a time: what it holds, cut at
    ``size`` or padded with NULs to it (it shrank, or cannot be read, since its ``lstat``)."""
    left = size
    with contextlib.suppress(OSError), local.open("rb") as data:
        while left and (got := data.read(min(left, SLICE))):
            left -= len(got)
            yield got
    while left:
        pad = min(left, SLICE)
        left -= pad
        yield bytes(pad)


def apply_header(plan: Plan, size: int, times: dict[str, int]) -> bytes:
    """What ``apply`` reads before the tar: a line with the header's length, then the header."""
    header = json.dumps({"reset": plan.reset, "remove": plan.remove, "size": size, "times": times})
    raw = header.encode()
    return b"%d\n" % len(raw) + raw
