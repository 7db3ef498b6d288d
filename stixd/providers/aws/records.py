"""What the AWS provider must remember between daemon runs: each cluster's region and nodes.

``<stix home>/aws/clusters.json``. The region is written before anything is created (so a
cluster whose launch was cut short is still found and cleaned); the nodes' agent sockets and
SSH addresses after they come up (``connector`` and ``query`` need them without a cloud call).
EC2 stays the truth about which instances exist.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

FILE = "aws/clusters.json"


class Records:
    def __init__(self, home: Path) -> None:
        self.path = home / FILE

    def read(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        return data if isinstance(data, dict) else {}

    def _write(self, data: dict[str, dict[str, Any]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".part")
        partial.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(partial, self.path)

    def get(self, cluster: str) -> dict[str, Any] | None:
        return self.read().get(cluster)

    def update(self, cluster: str, **values: Any) -> dict[str, Any]:
        data = self.read()
        entry = {**data.get(cluster, {}), **values}
        data[cluster] = entry
        self._write(data)
        return entry

    def set_node(self, cluster: str, rank: int, **values: Any) -> None:
        data = self.read()
        entry = data.setdefault(cluster, {})
        nodes = entry.setdefault("nodes", {})
        nodes[str(rank)] = {**nodes.get(str(rank), {}), **values}
        self._write(data)

    def drop(self, cluster: str) -> None:
        data = self.read()
        if data.pop(cluster, None) is not None:
            self._write(data)

    def node_by_ip(self, ip: str) -> dict[str, Any] | None:
        for entry in self.read().values():
            for node in (entry.get("nodes") or {}).values():
                if node.get("ip") == ip:
                    return dict(node)
        return None
