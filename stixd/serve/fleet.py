"""Which replicas count, which go first when scaling down, and which versions serve.

SkyPilot's order for scaling down: replicas earliest in their start-up first (they serve nothing
yet), then older versions, then the highest replica id (the newest launched) among equals.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Callable, Iterable, Sequence

from stixd.serve.seams import ReplicaView
from stixproto.states import ReplicaStatus


class UpdateMode(enum.StrEnum):
    """How a new version replaces the old (`serve update --mode`)."""

    ROLLING = "rolling"
    """Old replicas leave one for one as new ones become READY; both versions serve meanwhile."""
    BLUE_GREEN = "blue_green"
    """The old version serves alone until the new one has the target READY, then all go."""


_LEAVING = frozenset({ReplicaStatus.SHUTTING_DOWN})

_SCALE_DOWN_RANK = {
    # UNKNOWN is not in SkyPilot's order (it counts such a replica as ended); stix counts it while
    # its cluster cannot be read, and lets it go before any replica that may still serve.
    ReplicaStatus.UNKNOWN: 0,
    ReplicaStatus.PENDING: 1,
    ReplicaStatus.PROVISIONING: 2,
    ReplicaStatus.STARTING: 3,
    ReplicaStatus.NOT_READY: 4,
    ReplicaStatus.READY: 5,
}

UNRECOVERABLE = frozenset(
    {
        ReplicaStatus.FAILED,
        ReplicaStatus.FAILED_INITIAL_DELAY,
        ReplicaStatus.FAILED_PROVISION,
    }
)
"""Ends that, for a version never READY, mean the version itself is broken (relaunching it would
loop). SkyPilot stops on the first two; stix also on a failed provision, which comes only after
the optimizer ran out of choices."""

WAS_READY = frozenset({ReplicaStatus.READY, ReplicaStatus.NOT_READY, ReplicaStatus.FAILED_PROBING})
"""States only a replica that has passed a readiness probe can be in."""


def live(replicas: Iterable[ReplicaView]) -> list[ReplicaView]:
    """Replicas that count towards the target: not ended and not on their way out."""
    return [r for r in replicas if not r.status.is_terminal and r.status not in _LEAVING]


def scale_down_order(
    replicas: Iterable[ReplicaView], qps: Callable[[ReplicaView], float] | None = None
) -> list[ReplicaView]:
    """``replicas`` (all live) in the order to stop them; with ``qps`` (a per-accelerator
    target), the weakest first among replicas at the same stage, then as above."""
    if qps is None:
        return sorted(
            replicas, key=lambda r: (_SCALE_DOWN_RANK[r.status], r.version, -r.replica_id)
        )
    return sorted(
        replicas, key=lambda r: (_SCALE_DOWN_RANK[r.status], qps(r), r.version, -r.replica_id)
    )


def first_to_stop(
    replicas: Iterable[ReplicaView],
    count: int,
    qps: Callable[[ReplicaView], float] | None = None,
) -> list[ReplicaView]:
    return scale_down_order(replicas, qps)[:count] if count > 0 else []


def ready_count(replicas: Iterable[ReplicaView]) -> int:
    return sum(r.status is ReplicaStatus.READY for r in replicas)


def blue_green_serving(replicas: Sequence[ReplicaView]) -> int | None:
    """The older version that keeps serving alone until the new one takes over: the one with
    the most READY replicas (the newer on a tie); None if none is READY."""
    counts = Counter(r.version for r in replicas if r.status is ReplicaStatus.READY)
    if not counts:
        return None
    return max(counts, key=lambda v: (counts[v], v))


def ready_versions(replicas: Iterable[ReplicaView]) -> tuple[int, ...]:
    return tuple(sorted({r.version for r in replicas if r.status is ReplicaStatus.READY}))
