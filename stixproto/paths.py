"""Where stix keeps its files: the same answer for the client and the daemon.

Every path made from a name (a cluster's sandbox, a node's directory on a host, a managed
job's logs) is made by `child_path`, which refuses a name that would leave its parent: stix
deletes such directories, and a name is whatever a user typed (or an earlier version stored).
"""

from __future__ import annotations

import os
from pathlib import Path, PurePath
from typing import TypeVar

from stixproto.errors import InvalidRequest

MAX_COMPONENT_BYTES = 255
"""A file name's limit on Linux and macOS file systems (NAME_MAX)."""

P = TypeVar("P", bound=PurePath)


class PathOutsideParent(InvalidRequest):
    """A name that is not one plain path component: ``..``, a ``/``, NUL, or too long."""


def stix_home() -> Path:
    return Path(os.environ.get("STIX_HOME") or "~/.stix").expanduser().resolve()


def client_catalog_dir() -> str | None:
    """This process's ``STIX_CATALOG_DIR``, absolute (the daemon runs elsewhere), or None."""
    value = os.environ.get("STIX_CATALOG_DIR")
    return os.path.abspath(os.path.expanduser(value)) if value else None


def socket_path(home: Path) -> Path:
    return home / "stixd.sock"


def child_path(parent: P, name: str) -> P:
    """``parent / name`` when ``name`` is one plain component; else `PathOutsideParent`.

    Works for local paths (`Path`) and for paths on a remote host (`PurePosixPath`). A symlink
    at the result is not followed here; the callers that delete (``shutil.rmtree``) refuse
    symlinks themselves.
    """
    if (
        not name
        or name in (".", "..")
        or "/" in name
        or "\0" in name
        or len(name.encode("utf-8", "surrogateescape")) > MAX_COMPONENT_BYTES
    ):
        shown = repr(name[:40]) + ("..." if len(name) > 40 else "")
        raise PathOutsideParent(f"{shown} is not usable as a file name under {parent}")
    child = parent / name
    if child.parent != parent:  # belt and braces: the checks above already make this hold
        raise PathOutsideParent(f"{name!r} leaves {parent}")
    return child


def path_under(parent: Path, relative: str) -> Path:
    """``parent / relative`` for a relative path of several parts (a file mount's destination
    in a node's sandbox); `PathOutsideParent` unless it lies strictly below ``parent`` (a sync
    replaces what is at the destination: ``..`` must not climb out, nor ``parent`` itself go)."""
    base = Path(os.path.normpath(parent))
    target = Path(os.path.normpath(base / relative.lstrip("/")))
    if base not in target.parents:
        raise PathOutsideParent(f"{relative!r} leaves {parent}")
    return target
