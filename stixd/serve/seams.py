"""The seam between the service actors and the load balancers they drive.

A balancer is a process of its own per service that outlives the daemon (`stixd.balancer`). The
service actor only ever sees these types: it pushes the ready set the moment it changes, takes
the requests the balancer counted since the last take (for the autoscaler), and hears when
requests wait at a service with no replica (to scale from zero at once).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import msgspec

from stixproto.states import ReplicaStatus


@dataclass(frozen=True)
class BalancerSpec:
    """What a service's balancer is started with (from the `service:` section in effect)."""

    service: str
    port: int
    """The endpoint's port on this machine (0: any free port, kept across restarts)."""
    policy: str = "least_load"
    """`least_load`, `round_robin` or `instance_aware_least_load`."""
    stream_timeout_seconds: float | None = None
    tls_keyfile: str | None = None
    tls_certfile: str | None = None
    api_keys: tuple[str, ...] = ()
    """Requests must carry one of these as `Authorization: Bearer KEY` (empty: no auth)."""
    queue_limit: int = 1024
    """Requests held while no replica is ready; more are refused with 503."""


@dataclass(frozen=True)
class ReadyReplica:
    """One replica in rotation: where to send requests and what it runs on."""

    replica_id: int
    url: str
    """`http://host:port` of the replica's service port."""
    version: int = 1
    accelerator: str | None = None
    """For `instance_aware_least_load` and per-accelerator `target_qps_per_replica`."""
    weight: float = 1.0


@dataclass(frozen=True)
class Traffic:
    """What a balancer saw since the last `take_traffic`."""

    arrivals: Sequence[float] = field(default_factory=tuple)
    """Wall-clock times (time.time()) of requests that reached the balancer."""
    suspects: Sequence[int] = field(default_factory=tuple)
    """Replica ids the balancer ejected on its own (connect errors, resets), newest last."""
    waiting: int = 0
    """Requests held in the queue now because no replica is ready."""


class Balancer(Protocol):
    """One running balancer, as the service actor drives it."""

    @property
    def endpoint(self) -> str:
        """`http(s)://127.0.0.1:PORT` that clients of the service call."""
        ...

    async def set_ready(self, replicas: Sequence[ReadyReplica]) -> None:
        """Replace the rotation (idempotent; the balancer keeps it if the daemon goes away)."""
        ...

    async def take_traffic(self) -> Traffic:
        """Requests and ejections since the last take (each is handed out once)."""
        ...

    async def wait_for_demand(self) -> None:
        """Return once a request waits at a service with no ready replica."""
        ...


class Balancers(Protocol):
    """Starts, finds again after a daemon restart, and stops the balancer of each service."""

    async def ensure(self, spec: BalancerSpec) -> Balancer:
        """The service's running balancer, started if none runs (or its spec changed)."""
        ...

    async def stop(self, service: str) -> None:
        """Stop the service's balancer and forget it (nothing if none runs)."""
        ...

    def log_path(self, service: str) -> Path:
        """Where the service's balancer writes its log (`serve logs --load-balancer`)."""
        ...


# -- the autoscaler's inputs and answer (stixd.serve.autoscaler.decide) -----------------------


@dataclass(frozen=True)
class ReplicaView:
    """One replica as the autoscaler sees it."""

    replica_id: int
    version: int
    status: ReplicaStatus
    spot: bool = False
    launched_at: float = 0.0
    """When the replica was decided on (wall clock). Scaling down orders by `replica_id`, as
    SkyPilot does: ids grow in launch order, and the newest goes first among equals."""
    accelerator: str | None = None


@dataclass(frozen=True)
class LaunchOrder:
    """Launch one more replica of ``version``, on spot or on demand."""

    version: int
    spot: bool = False


class ScalerMemory(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """What the autoscaler carries from one round to the next; the service actor stores it in
    its row as it is, so a daemon restart keeps the hysteresis where it was."""

    last_round: float = 0.0
    """When `decide` last ran a decision round, the only time the target may move (0: never)."""
    target: int | None = None
    """The replica count in effect after the last round, before `num_overprovision` (None: not
    decided yet)."""
    upscale_since: float | None = None
    """Since when the wanted count has stayed above the target (upscale hysteresis)."""
    downscale_since: float | None = None
    version: int = 0
    """The service version the last round planned for (0: none yet); a higher one is an update."""
    upscale_rounds: int = 0
    """Consecutive decision rounds the wanted count stayed above the target (SkyPilot counts
    rounds, not seconds: it moves after `int(upscale_delay_seconds / 20)` of them)."""
    downscale_rounds: int = 0
    ready_version: int = 0
    """The newest version that has ever had a READY replica."""
    failed_version: int = 0
    """A version that failed before ever being READY: its rollout stays stopped."""


@dataclass(frozen=True)
class ScalePlan:
    """One round's answer: what to launch, what to stop (in that order), and the memory."""

    launch: tuple[LaunchOrder, ...] = ()
    stop: tuple[int, ...] = ()
    """Replica ids to scale down, in the order to stop them."""
    target: int = 0
    """Replicas of the current version wanted now (the target plus `num_overprovision`)."""
    memory: ScalerMemory = field(default_factory=ScalerMemory)
    rollout_failed: bool = False
    """The current version failed before ever being READY: nothing launched or stopped, older
    versions keep serving; the actor records it (the service is FAILED if nothing else serves)."""
    serving_versions: tuple[int, ...] = ()
    """Versions whose READY replicas belong in the balancer's rotation (blue-green: one)."""
    next_round_at: float = 0.0
    """Call `decide` again by then (the next decision round: 20 s, or 5 s at zero replicas)."""
    qps: float = 0.0
    """Requests per second over the last 60 s, as the round saw them."""
