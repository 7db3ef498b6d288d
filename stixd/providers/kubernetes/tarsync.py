"""The daemon's half of a tree sync into a pod: compare the source with what the pod lists,
then one tar stream of what differs, with its byte count announced (``inpod/tarsync.py`` is the
pod's half).

The comparison is ``filesync.sync_path``'s: a file is sent unless the pod has one of the same
size and mtime (a link: the same target); what the source's ignore files exclude is neither
sent nor removed; whatever else the pod has that the source has not is removed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import tarfile
import tempfile
from pathlib import Path
from typing import IO, Any

from stixd.providers.shared.syncfilter import SyncFilter

SPOOL_IN_MEMORY = 8 * 1024 * 1024  # a bigger tar goes to a temporary file


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


def build_tar(plan: Plan) -> tuple[IO[bytes], int, dict[str, int]]:
    """The tar of what the plan sends (a spooled file at its start), its byte count, and the
    mtime in ns each sent file or link should get."""
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115 (returned)
    times: dict[str, int] = {}
    try:
        with tarfile.open(fileobj=spool, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for rel, local in plan.send:
                info, st = _member(rel, local)
                if info.isdir():
                    tar.addfile(info)
                    continue
                times[rel] = st.st_mtime_ns
                if info.issym():
                    tar.addfile(info)
                    continue
                with local.open("rb") as data:
                    tar.addfile(info, data)
        size = spool.tell()
        spool.seek(0)
    except BaseException:
        spool.close()
        raise
    return spool, size, times


def apply_header(plan: Plan, size: int, times: dict[str, int]) -> bytes:
    """What ``apply`` reads before the tar: a line with the header's length, then the header."""
    header = json.dumps({"reset": plan.reset, "remove": plan.remove, "size": size, "times": times})
    raw = header.encode()
    return b"%d\n" % len(raw) + raw
