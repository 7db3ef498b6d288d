"""What a service and its replicas store in their rows (spec and data columns), as Structs.

A service's row keeps every version's task (`serve update` adds one), the autoscaler's memory
and the next replica id; a replica's row (id ``<service>/<replica id>``, parent the service)
keeps the version it runs, the port it serves on and what its launch and probes found.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta

from stixd.actors.specs import Count
from stixd.serve.seams import ScalerMemory
from stixproto.bounds import MAX_ID

Version = Annotated[int, Meta(ge=1, le=MAX_ID)]
ReplicaId = Annotated[int, Meta(ge=1, le=MAX_ID)]
Port = Annotated[int, Meta(ge=1, le=65535)]

SERVICE = "service"
REPLICA = "replica"


class _Record(msgspec.Struct, frozen=True, kw_only=True):
    """Immutable: a change is a write (`Actor.save`)."""


class ServiceVersion(_Record, frozen=True, kw_only=True):
    version: Version
    task: dict[str, Any]
    """`msgspec.to_builtins(Task)` of this version (secret values kept to launch replicas)."""
    mode: str = "rolling"
    """How this version replaces the one before: `rolling` or `blue_green`."""
    at: float = 0.0


class ServiceSpec(_Record, frozen=True, kw_only=True):
    versions: list[ServiceVersion] = []
    config: list[dict[str, Any]] = []
    created_at: float = 0.0
    owner: str | None = None
    """Who made it (a user's name); None: made before owners were kept, the local owner's."""
    workspace: str | None = None
    """The workspace it was made in; None: the default one."""


class ServiceData(_Record, frozen=True, kw_only=True):
    version: Version = 1
    """The version replicas are launched at now (the newest `serve update`'s)."""
    memory: ScalerMemory = msgspec.field(default_factory=ScalerMemory)
    next_replica: ReplicaId = 1
    endpoint: str | None = None
    uptime_since: float | None = None
    broken_version: Version | None = None
    """A version that failed before it was ever READY: its rollout stopped."""
    failure_reason: str | None = None
    purge: bool = False
    """`down --purge`: forget the service even if a replica cannot be torn down."""
    quarantine: str | None = None


class ReplicaSpec(_Record, frozen=True, kw_only=True):
    service: str
    replica_id: ReplicaId
    version: Version
    port: Port
    """The port its command serves on (`$STIX_SERVE_PORT`); probed and balanced to."""
    spot: bool = False
    launched_at: float = 0.0
    accelerator: str | None = None
    """The accelerator its task asks for, when it names one (per-accelerator QPS targets)."""
    owner: str | None = None
    """Its service's owner and workspace: its cluster is made for them."""
    workspace: str | None = None


class ReplicaData(_Record, frozen=True, kw_only=True):
    cluster_uid: str | None = None
    job_id: int | None = None
    url: str | None = None
    infra: str | None = None
    resources: str = ""
    started_at: float | None = None
    """When its command was submitted (the initial delay counts from here)."""
    ready_since: float | None = None
    ever_ready: bool = False
    probe_failures: Count = 0
    not_ready_since: float | None = None
    failure_reason: str | None = None
    end: str | None = None
    """The end state's event (`ReplicaEvent`) it takes once its cluster is torn down; None
    for a replica shut down on purpose (its row goes)."""
    purge: bool = False
    quarantine: str | None = None
    replaceable: bool = False
    """Its end is its infra's failure, not its version's (a load balancer that never gave an
    address): it does not stop the version's rollout, the service launches another."""


def replica_row_id(service: str, replica_id: int) -> str:
    return f"{service}/{replica_id}"


def replica_cluster(service: str, replica_id: int) -> str:
    """SkyServe's ``<service>-<id>`` (service names leave room for the id, `stixproto.names`)."""
    return f"{service}-{replica_id}"
