"""What every provider offers the actors: one small, idempotent interface.

Actors reach infrastructure only through this protocol. Errors say whether to retry and what
to block, so a launcher can fail over to the next choice.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from stixd.agent_client import AgentClient
from stixproto.errors import ProvisionError


class NodeStatus(enum.StrEnum):
    RUNNING = "RUNNING"
    STOPPED = "STOPPED"
    UNREACHABLE = "UNREACHABLE"
    """The machine did not answer at all (a host down or partitioned), as opposed to one
    that answers without an agent (stopped)."""


@dataclass(frozen=True)
class NodeInfo:
    rank: int
    ip: str
    status: NodeStatus
    agent_address: str
    workdir: str
    home: str
    pid: int | None = None
    address: str = ""
    """How the provider reaches the node when ``ip`` alone does not say (the ssh provider: the
    pool host's key, which includes its jump host); empty means ``ip``."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "ip": self.ip,
            "status": self.status.value,
            "agent_address": self.agent_address,
            "workdir": self.workdir,
            "home": self.home,
            "pid": self.pid,
            "address": self.address,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> NodeInfo:
        return cls(
            rank=raw["rank"],
            ip=raw["ip"],
            status=NodeStatus(raw["status"]),
            agent_address=raw["agent_address"],
            workdir=raw["workdir"],
            home=raw["home"],
            pid=raw.get("pid"),
            address=raw.get("address", ""),
        )


@dataclass(frozen=True)
class ProvisionRequest:
    cluster: str
    num_nodes: int
    agent_pyz: Path
    resources: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CheckResult:
    enabled: bool
    reason: str


@dataclass(frozen=True)
class Mount:
    """A local path to place on every node at `dest` (as the node resolves it)."""

    source: str
    dest: str


@dataclass(frozen=True)
class NodeLoss:
    """A node whose machine went away under a live cluster, as the cloud tells it."""

    rank: int
    why: str
    """One sentence naming the machine and the cloud's reason."""
    preempted: bool
    """The cloud took it back (a spot interruption), rather than someone stopping it."""


@runtime_checkable
class ReportsLostNodes(Protocol):
    """A provider that can tell, after ``query``, which nodes' machines the cloud took away.

    The cluster actor ends their jobs at once (no grace: the machine will not come back) and
    records each loss, so a managed job recovers without waiting for a timeout."""

    def lost_nodes(self, cluster: str) -> list[NodeLoss]: ...


@dataclass(frozen=True)
class Machine:
    """What a node's machine is now, as its cloud lists it (changed outside stix or not)."""

    rank: int
    instance_type: str
    spot: bool
    region: str
    address: str | None = None
    """Where this machine reaches it."""
    disk_gb: int | None = None


@runtime_checkable
class ReportsMachines(Protocol):
    """A provider that can tell, after ``query``, what each live node's machine is: the
    cluster records it, so a resize or new address made outside stix shows in status and
    cost-report."""

    def machines(self, cluster: str) -> list[Machine]: ...


class CapacityError(ProvisionError):
    """No capacity or quota for this choice: block it and try the next one."""

    def __init__(self, message: str, block: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.block = block or {}


class Provider(Protocol):
    name: str

    async def check(self) -> CheckResult: ...

    async def launch(self, req: ProvisionRequest) -> list[NodeInfo]: ...

    async def query(self, cluster: str) -> list[NodeInfo]: ...

    async def stop(self, cluster: str) -> None: ...

    async def start(self, req: ProvisionRequest) -> list[NodeInfo]: ...

    async def terminate(self, cluster: str) -> None: ...

    async def open_ports(self, cluster: str, ports: list[int]) -> None: ...

    async def sync(self, node: NodeInfo, mounts: list[Mount]) -> int: ...

    def connector(self, node: NodeInfo) -> AgentClient: ...
