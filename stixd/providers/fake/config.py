"""The ``fake:`` section of the config file."""

from __future__ import annotations

from typing import Annotated

import msgspec

from stixproto.bounds import MAX_COUNT, MAX_SECONDS

Seconds = Annotated[float, msgspec.Meta(ge=0, le=MAX_SECONDS)]


class FakeConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """The ``fake`` provider: in-memory nodes for tests and benchmarks, never real work."""

    enabled: bool = False
    regions: Annotated[tuple[str, ...], msgspec.Meta(min_length=1)] = ("fake-1", "fake-2", "fake-3")
    launch_seconds: Seconds = 0.0
    no_capacity_regions: tuple[str, ...] = ()
    no_capacity_launches: Annotated[int, msgspec.Meta(ge=0, le=MAX_COUNT)] = 0
    run_seconds: Seconds = 3600.0
    stop_seconds: Seconds = 0.0
    terminate_seconds: Seconds = 0.0
    persist: bool = False
    """Keep the fake machines in a file of the stix home, so they outlive a daemon restart as a
    cloud's do (a test that kills the daemon mid-call then sees what is left)."""
