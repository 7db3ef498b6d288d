"""How many replicas of which version a service wants now: a pure function of the spec, the
replicas, the requests seen and the clock (no I/O, no hidden state — `ScalerMemory` carries
the hysteresis between rounds).

This first version keeps a fixed count (`replicas: N`, or `min_replicas` without a QPS target)
and rolls a new version in by replacing old replicas as new ones become READY; the request-rate
autoscaler builds on the same signature.
"""

from __future__ import annotations

from collections.abc import Sequence

from stixd.serve.seams import LaunchOrder, ReplicaView, ScalePlan, ScalerMemory
from stixproto.states import ReplicaStatus
from stixproto.task.service import Scaling

_LEAVING = frozenset({ReplicaStatus.SHUTTING_DOWN})


def live(replicas: Sequence[ReplicaView]) -> list[ReplicaView]:
    """Replicas that count towards the target: not ended and not on their way out."""
    return [r for r in replicas if not r.status.is_terminal and r.status not in _LEAVING]


def decide(
    scaling: Scaling,
    replicas: Sequence[ReplicaView],
    arrivals: Sequence[float],
    now: float,
    memory: ScalerMemory,
    *,
    version: int,
) -> ScalePlan:
    """The plan for this round: keep ``scaling.min_replicas`` of ``version`` running, never more
    than ``scaling.max_replicas`` in all, and let older versions go only as new ones are READY.
    """
    del arrivals  # the fixed-count policy does not look at traffic
    target = scaling.min_replicas
    running = live(replicas)
    new = [r for r in running if r.version == version]
    old = [r for r in running if r.version != version]
    ready_new = sum(r.status is ReplicaStatus.READY for r in new)
    stop: list[int] = []
    # Too many of the current version: the newest go first, not-ready before ready.
    if len(new) > target:
        extra = sorted(new, key=lambda r: (r.status is ReplicaStatus.READY, -r.launched_at))
        stop += [r.replica_id for r in extra[: len(new) - target]]
    # Old versions leave as new ones are ready to take their place (oldest first).
    keep_old = max(0, target - ready_new)
    by_age = sorted(old, key=lambda r: (r.status is ReplicaStatus.READY, r.launched_at))
    stop += [r.replica_id for r in by_age[: max(0, len(old) - keep_old)]]
    staying = len(running) - len(stop)
    room = max(0, scaling.max_replicas - staying)
    missing = max(0, target - min(len(new), target))
    launch = tuple(LaunchOrder(version) for _ in range(min(missing, room)))
    changed = memory.target != target
    return ScalePlan(
        launch=launch,
        stop=tuple(stop),
        target=target,
        memory=ScalerMemory(
            last_round=now if changed else memory.last_round,
            target=target,
            upscale_since=None,
            downscale_since=None,
        ),
    )
