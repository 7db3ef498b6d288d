"""The ``fake:`` section of the config file."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from stixd.providers.local.config import NetworkMode
from stixproto.bounds import MAX_COUNT, MAX_SECONDS

Seconds = Annotated[float, msgspec.Meta(ge=0, le=MAX_SECONDS)]
NodeKind = Literal["memory", "process"]
"""``memory``: nodes run nothing, a job's life is a function of time (thousands cost nothing);
``process``: each node is a local node (stixd/providers/local/): its agent and jobs run on this
machine as real processes, so a service's replicas answer HTTP."""


class FakeConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """The ``fake`` provider, for tests and benchmarks: a cloud's regions, prices, latency,
    capacity errors and preemptions, over nodes that run nothing or run on this machine."""

    enabled: bool = False
    nodes: NodeKind = "memory"
    network: NetworkMode = "auto"
    """Process nodes' networks, as ``local.network``: a namespace each where this machine
    allows it (two replicas then bind one port), else this machine's."""
    regions: Annotated[tuple[str, ...], msgspec.Meta(min_length=1)] = ("fake-1", "fake-2", "fake-3")
    launch_seconds: Seconds = 0.0
    spot_launch_seconds: Seconds | None = None
    """A spot launch's time (None: ``launch_seconds``): spot capacity is often slower to get, and
    a test then sees an on-demand stand-in READY before the spot replica it stands in for."""
    no_capacity_regions: tuple[str, ...] = ()
    no_capacity_launches: Annotated[int, msgspec.Meta(ge=0, le=MAX_COUNT)] = 0
    run_seconds: Seconds = 3600.0
    stop_seconds: Seconds = 0.0
    terminate_seconds: Seconds = 0.0
    persist: bool = False
    """Keep the fake machines in a file of the stix home, so they outlive a daemon restart as a
    cloud's do (a test that kills the daemon mid-call then sees what is left)."""
