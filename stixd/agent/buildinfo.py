"""The agent's build id: a short hash of its source files, so any code change is a new build.

Inside a zipapp the id is read from ``_build.txt`` written by the bundler; run from source it is
computed from the package's own files with the same function the bundler uses.
"""

from __future__ import annotations

import hashlib
import pkgutil
from pathlib import Path

BUILD_FILE = "_build.txt"
BUILD_ID_LENGTH = 12


def source_files(package_dir: Path) -> list[Path]:
    """The files that make up the agent package, in a stable order."""
    return sorted(
        path
        for path in package_dir.rglob("*.py")
        if "__pycache__" not in path.relative_to(package_dir).parts
    )


def source_build_id(package_dir: Path) -> str:
    digest = hashlib.sha256()
    for path in source_files(package_dir):
        digest.update(path.relative_to(package_dir).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:BUILD_ID_LENGTH]


def current_build() -> str:
    try:
        recorded = pkgutil.get_data(__package__ or "", BUILD_FILE)
    except OSError:
        recorded = None
    if recorded:
        return recorded.decode().strip()
    return source_build_id(Path(__file__).resolve().parent)
