"""Copy a local file or tree into a node sandbox, touching only what changed."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


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
    so a re-sync costs a directory walk plus the changed files only.
    """
    if not src.exists():
        raise FileNotFoundError(f"{src} does not exist")
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not src.is_dir() or src.is_symlink():
        return _copy_one(src, dst)
    if dst.exists() and (not dst.is_dir() or dst.is_symlink()):
        _remove(dst)
    copied = 0
    for root, dirs, files in os.walk(src):
        rel = Path(root).relative_to(src)
        target_dir = dst / rel
        target_dir.mkdir(parents=True, exist_ok=True)
        wanted = set(dirs) | set(files)
        for existing in os.listdir(target_dir):
            if existing not in wanted:
                _remove(target_dir / existing)
        for name in files:
            copied += _copy_one(Path(root) / name, target_dir / name)
        for name in list(dirs):
            if (Path(root) / name).is_symlink():
                copied += _copy_one(Path(root) / name, target_dir / name)
                dirs.remove(name)
    return copied
