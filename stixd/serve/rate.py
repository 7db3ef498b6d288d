"""How many replicas the traffic asks for, and when the target may follow (SkyPilot's
request-rate autoscaler, in its numbers).

Requests per second are the arrivals of the last 60 s divided by 60 (a caller may shorten the
window: tests do). A plain
`target_qps_per_replica` wants `ceil(qps / target)` replicas; the per-accelerator form weighs
each replica by its own accelerator's target. Either is clipped to [min, max]. The target then
moves by hysteresis: only after the wanted count has stayed above (below) it for
`int(upscale_delay_seconds / 20)` (`downscale_…`) consecutive decision rounds, and at once when
the target is zero. The 20 s period is SkyPilot's default; a caller may shorten it (tests do).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from stixd.serve.seams import ReplicaView
from stixproto.states import ReplicaStatus
from stixproto.task.service import Scaling

WINDOW_SECONDS = 60.0
ROUND_SECONDS = 20.0
"""A decision round every 20 s ..."""
ROUND_AT_ZERO_SECONDS = 5.0
"""... or every 5 s while the service wants no replica."""

_CAPACITY = frozenset({ReplicaStatus.READY, ReplicaStatus.STARTING, ReplicaStatus.PROVISIONING})
"""Replicas the per-accelerator form counts as serving capacity (now or soon)."""


def requests_in_window(
    arrivals: Sequence[float], now: float, *, window_seconds: float = WINDOW_SECONDS
) -> int:
    """Arrivals at or after `now - 60` (``arrivals`` sorted ascending, as the balancer logs them;
    later-than-now stamps count, as in SkyPilot)."""
    return len(arrivals) - bisect.bisect_left(arrivals, now - window_seconds)


def recent_arrivals(
    kept: Sequence[float],
    fresh: Iterable[float],
    now: float,
    *,
    window_seconds: float = WINDOW_SECONDS,
) -> list[float]:
    """The arrivals a service keeps for its next round: ``kept`` (sorted, from the last round)
    and ``fresh`` (from the balancers, any order) within the window, sorted."""
    edge = now - window_seconds
    merged = [*kept[bisect.bisect_left(kept, edge) :], *(a for a in fresh if a >= edge)]
    merged.sort()  # two sorted runs at most when fresh is in order: linear
    return merged


def clip(count: int, scaling: Scaling) -> int:
    return max(scaling.min_replicas, min(scaling.max_replicas, count))


def wanted_replicas(scaling: Scaling, qps: float, live: Sequence[ReplicaView]) -> int:
    """The replica count the traffic asks for, clipped to [min, max] (no overprovision)."""
    per_replica = scaling.target_qps_per_replica
    if per_replica is None:
        # No target (SkyServe refuses min 0 < max without one; stix serves it): one replica
        # while requests come, none once the window has none, so such a service still wakes.
        awake = qps > 0 and scaling.min_replicas == 0 and scaling.max_replicas > 0
        return 1 if awake else scaling.min_replicas
    if isinstance(per_replica, Mapping):
        return _wanted_by_accelerator(
            scaling, {k: float(v) for k, v in per_replica.items()}, qps, live
        )
    if per_replica <= 0:  # the spec allows 0: any traffic at all wants every replica allowed
        return scaling.max_replicas if qps > 0 else scaling.min_replicas
    return clip(math.ceil(qps / per_replica), scaling)


def accelerator_qps(targets: Mapping[str, float], accelerator: str | None) -> float:
    """A replica's own target: its accelerator's entry (`A100` matches a key `A100:1`), else the
    smallest target (a replica of unknown kind is assumed the weakest)."""
    name = accelerator or "unknown"
    if name in targets:
        return targets[name]
    base = name.split(":")[0]
    for key, value in targets.items():
        if key.split(":")[0] == base:
            return value
    return min(targets.values())


def _wanted_by_accelerator(
    scaling: Scaling, targets: dict[str, float], qps: float, live: Sequence[ReplicaView]
) -> int:
    capacity = sum(accelerator_qps(targets, r.accelerator) for r in live if r.status in _CAPACITY)
    if capacity <= 0:
        return clip(scaling.min_replicas, scaling)
    strongest = max(targets.values())
    if qps >= capacity:
        # Short of capacity: add replicas of the strongest kind for the excess.
        excess = qps - capacity
        extra = math.ceil(excess / strongest) if strongest > 0 else scaling.max_replicas
        return clip(len(live) + extra, scaling)
    # Enough capacity: keep the fewest READY replicas, strongest first, that carry the traffic.
    ready = sorted(
        (accelerator_qps(targets, r.accelerator) for r in live if r.status is ReplicaStatus.READY),
        reverse=True,
    ) or [strongest]
    count, carried = 0, 0.0
    for each in ready:
        count += 1
        carried += each
        if carried > qps:
            break
    return clip(count, scaling)


@dataclass(frozen=True)
class Hysteresis:
    """The target and the two round counters, before and after one decision round."""

    target: int
    up: int = 0
    down: int = 0

    def step(
        self, wanted: int, scaling: Scaling, *, round_seconds: float = ROUND_SECONDS
    ) -> Hysteresis:
        """One decision round; ``round_seconds`` apart (a delay counts as that many rounds)."""
        if self.target == 0:  # scale from zero at once
            return Hysteresis(wanted)
        if wanted > self.target:
            up = self.up + 1
            if up >= int(scaling.upscale_delay_seconds / round_seconds):
                return Hysteresis(wanted)
            return Hysteresis(self.target, up=up)
        if wanted < self.target:
            down = self.down + 1
            if down >= int(scaling.downscale_delay_seconds / round_seconds):
                return Hysteresis(wanted)
            return Hysteresis(self.target, down=down)
        return Hysteresis(self.target)


def round_interval(final_target: int, *, round_seconds: float = ROUND_SECONDS) -> float:
    """Seconds to the next decision round; ``round_seconds`` shortens both periods (the one at
    zero is never longer than it)."""
    if final_target == 0:
        return min(ROUND_AT_ZERO_SECONDS, round_seconds)
    return round_seconds
