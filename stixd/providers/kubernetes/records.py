"""What the Kubernetes provider remembers between daemon runs: where each cluster's pods are.

``<stix home>/kubernetes/clusters.json``: per cluster its context, namespace, node count and
the owner id its pods were named with,
written before any pod is made (a launch cut short is still found and cleaned), then each
node as it came up (``query`` lists a lost pod's node from it). The API server stays the truth
about which pods exist.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

FILE = "kubernetes/clusters.json"


@dataclasses.dataclass(frozen=True)
class Where:
    context: str
    namespace: str
    num_nodes: int
    owner: str = ""
    """The home's owner id the pods carry (``owner.py``); empty for a cluster made before."""


class Records:
    def __init__(self, home: Path) -> None:
        self.path = home / FILE

    def read(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write(self, data: dict[str, dict[str, Any]]) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        partial = self.path.with_name(f"{self.path.name}.{os.getpid()}.part")
        partial.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(partial, self.path)

    def where(self, cluster: str) -> Where | None:
        entry = self.read().get(cluster)
        if not isinstance(entry, dict) or not entry.get("context"):
            return None
        return Where(
            str(entry["context"]),
            str(entry.get("namespace") or ""),
            int(entry.get("nodes") or 0),
            str(entry.get("owner") or ""),
        )

    def place(self, cluster: str, where: Where) -> None:
        data = self.read()
        entry = data.get(cluster) or {}
        if (entry.get("context"), entry.get("namespace"), entry.get("owner") or "") != (
            where.context,
            where.namespace,
            where.owner,
        ):
            entry = {}  # a new place: what was known of the old one does not hold
        entry.update(
            context=where.context,
            namespace=where.namespace,
            nodes=where.num_nodes,
            owner=where.owner,
        )
        data[cluster] = entry
        self._write(data)

    def node(self, cluster: str, rank: int) -> dict[str, Any]:
        entry = self.read().get(cluster) or {}
        found = (entry.get("ranks") or {}).get(str(rank))
        return dict(found) if isinstance(found, dict) else {}

    def set_node(self, cluster: str, rank: int, node: dict[str, Any]) -> None:
        data = self.read()
        entry = data.setdefault(cluster, {})
        entry.setdefault("ranks", {})[str(rank)] = node
        self._write(data)

    def remember(self, cluster: str, **values: str) -> None:
        data = self.read()
        data.setdefault(cluster, {}).update(values)
        self._write(data)

    def remembered(self, cluster: str, key: str) -> str | None:
        value = (self.read().get(cluster) or {}).get(key)
        return value if isinstance(value, str) else None

    def drop(self, cluster: str) -> None:
        data = self.read()
        if data.pop(cluster, None) is not None:
            self._write(data)
