"""The gang gate: a multi-node job's runner waits after setup until every node has set up.

Two marker files per job under the node directory: `<id>.ready` (this node's setup is done, the
runner waits) and `<id>.go` (the daemon saw every node ready and released them). Files, so the
gate survives an agent restart and needs no schema change.
"""

from __future__ import annotations

from pathlib import Path


def _path(node_dir: Path, job_id: int, suffix: str) -> Path:
    return node_dir / "gates" / f"{job_id}.{suffix}"


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


def mark_ready(node_dir: Path, job_id: int) -> None:
    _touch(_path(node_dir, job_id, "ready"))


def is_ready(node_dir: Path, job_id: int) -> bool:
    return _path(node_dir, job_id, "ready").exists()


def release(node_dir: Path, job_id: int) -> None:
    _touch(_path(node_dir, job_id, "go"))


def released(node_dir: Path, job_id: int) -> bool:
    return _path(node_dir, job_id, "go").exists()
