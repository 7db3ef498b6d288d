"""Where a mount's destination lands on a node, the same rule on every infra. Kept apart from
the SSH sync so that the daemon's storage and Kubernetes code need not import asyncssh."""

from __future__ import annotations

from stixd.providers.base import NodeInfo


def resolve_dest(node: NodeInfo, dest: str) -> str:
    """``~/x`` lands in the node's home, ``/x`` where it says, relative paths in the workdir."""
    if dest == "~" or dest.startswith("~/"):
        return node.home.rstrip("/") + dest[1:]
    if dest.startswith("/"):
        return dest
    return f"{node.workdir.rstrip('/')}/{dest}"
