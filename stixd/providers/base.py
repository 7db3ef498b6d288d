"""What every provider offers the actors: one small, idempotent interface.

Actors reach infrastructure only through this protocol. Errors say whether to retry and what
to block, so a launcher can fail over to the next choice.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

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
    progress: Callable[[str], None] | None = field(default=None, compare=False, repr=False)
    """Where a provider tells what a long wait is waiting for (a pod's events), as launch
    progress; None: nobody listens."""


@dataclass(frozen=True)
class CheckResult:
    enabled: bool
    reason: str
    details: tuple[str, ...] = ()
    """A line per part the infra checks on its own (a Kubernetes context each)."""


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


@dataclass(frozen=True)
class Block:
    """What a capacity or quota error rules out: every launch choice matching each field that
    is set (None: any), on ``infra``."""

    infra: str
    region: str | None = None
    """A cloud's region, or an ssh pool."""
    zone: str | None = None
    instance_type: str | None = None
    use_spot: bool | None = None
    reason: str = ""
    """The cloud's own word for it (``InsufficientInstanceCapacity``), for the no-fit message."""
    remember_s: float = 0.0
    """How long later launches avoid it too (a quota rarely changes soon); 0: this launch's
    failover only (capacity comes back)."""


class CapacityError(ProvisionError):
    """No capacity or quota for this choice: block ``block`` and try the next one."""

    def __init__(self, message: str, block: Block) -> None:
        super().__init__(message)
        self.block = block


class Provider(Protocol):
    """What every provider does. ``launch`` is idempotent and also restarts a stopped cluster
    (there is no separate start). Abilities only some have are in ``abilities.py``."""

    name: str

    async def check(self) -> CheckResult: ...

    async def launch(self, req: ProvisionRequest) -> list[NodeInfo]: ...

    async def query(self, cluster: str) -> list[NodeInfo]: ...

    async def stop(self, cluster: str) -> None: ...

    async def terminate(self, cluster: str) -> None: ...

    async def sync(self, node: NodeInfo, mounts: list[Mount]) -> int: ...

    def connector(self, node: NodeInfo) -> AgentClient: ...
