"""Copy a local file or tree into a node sandbox, touching only what changed and leaving out
what the source's ignore files exclude (`stixd.providers.shared.syncfilter`)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from stixd.providers.shared.syncfilter import SyncFilter


def _same(src: os.stat_result, dst: Path) -> bool:
    try:
        st = dst.lstat()
    except FileNotFoundError:
        return False
    return st.st_size == src.st_size and st.st_mtime_ns == src.st_mtime_ns


def _copy_one(src: Path, dst: Path) -> int:
    st = src.lstat()
    if src.is_symlink():
        target = os.readlink(src)
        if dst.is_symlink() and os.readlink(dst) == target:
            return 0
        if dst.exists() or dst.is_symlink():
            _remove(dst)
        dst.symlink_to(target)
        return 1
    if _same(st, dst):
        return 0
    if dst.is_dir() and not dst.is_symlink():
        shutil.rmtree(dst)
    shutil.copy2(src, dst)
    return 1


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def sync_path(src: Path, dst: Path) -> int:
    """Make `dst` a copy of `src` (file or directory); return how many files were written.

    Unchanged files (same size and mtime) are skipped and files gone from `src` are removed,
    so a re-sync costs a directory walk plus the changed files only. A directory's
    ``.skyignore`` / ``.gitignore`` rules apply: what they exclude is not copied, and is left
    alone where it already exists in `dst`.
    """
    if not src.exists():
        raise FileNotFoundError(f"{src} does not exist")
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not src.is_dir() or src.is_symlink():
        return _copy_one(src, dst)
    if dst.exists() and (not dst.is_dir() or dst.is_symlink()):
        _remove(dst)
    rules = SyncFilter(src)
    dst.mkdir(exist_ok=True)
    wanted: dict[str, set[str]] = {"": set()}
    copied = 0
    for rel, real_dir, kept in rules.walk():
        parent, _, name = rel.rpartition("/")
        if not kept:
            continue
        wanted[parent].add(name)
        if real_dir:
            wanted[rel] = set()
            if not _is_real_dir(dst / rel):
                if (dst / rel).exists() or (dst / rel).is_symlink():
                    _remove(dst / rel)
                (dst / rel).mkdir()
        else:
            copied += _copy_one(src / rel, dst / rel)
    for parent, names in wanted.items():
        for existing in os.listdir(dst / parent):
            rel = f"{parent}/{existing}" if parent else existing
            if existing not in names and not rules.excludes(rel, _is_real_dir(dst / rel)):
                _remove(dst / rel)
    return copied


def _is_real_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()
