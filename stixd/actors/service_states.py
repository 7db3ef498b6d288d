"""What moves a service and a replica: their events and transition tables (SkyServe's states).

A replica that fails is torn down before it shows its failure: it goes SHUTTING_DOWN with the
end state it will take written in its row, and takes that end state once its cluster is gone
(so a daemon restart mid-teardown finishes the teardown). A replica shut down on purpose, and a
service taken down, leave no row at all (`Store.delete`), as SkyServe forgets them.
"""

from __future__ import annotations

import enum

from stixproto.states import ReplicaStatus as R
from stixproto.states import ServiceStatus as S


class ServiceEvent(enum.Enum):
    BALANCER_UP = "balancer_up"
    BALANCER_FAILED = "balancer_failed"
    REPLICA_READY = "replica_ready"
    NONE_READY = "none_ready"
    SCALED_TO_ZERO = "scaled_to_zero"
    REPLICAS_FAILING = "replicas_failing"
    UPDATE = "update"
    DOWN = "down"
    CLEANUP_FAILED = "cleanup_failed"


SE = ServiceEvent
RUNNING_SERVICE = (S.REPLICA_INIT, S.READY, S.NO_REPLICA, S.FAILED)
"""States a decision round moves between, by what the replicas are doing."""
ROUND_TARGETS = {
    SE.REPLICA_READY: S.READY,
    SE.NONE_READY: S.REPLICA_INIT,
    SE.SCALED_TO_ZERO: S.NO_REPLICA,
    SE.REPLICAS_FAILING: S.FAILED,
}
SERVICE_TRANSITIONS: dict[tuple[S, ServiceEvent], S] = {
    (S.CONTROLLER_INIT, SE.BALANCER_UP): S.REPLICA_INIT,
    (S.CONTROLLER_FAILED, SE.BALANCER_UP): S.REPLICA_INIT,
    (S.CONTROLLER_INIT, SE.BALANCER_FAILED): S.CONTROLLER_FAILED,
    **{(s, e): to for s in RUNNING_SERVICE for e, to in ROUND_TARGETS.items() if s is not to},
    **{(s, SE.BALANCER_FAILED): S.CONTROLLER_FAILED for s in RUNNING_SERVICE},
    **{(s, SE.UPDATE): s for s in (S.REPLICA_INIT, S.READY, S.NO_REPLICA)},
    (S.FAILED, SE.UPDATE): S.REPLICA_INIT,
    **{
        (s, SE.DOWN): S.SHUTTING_DOWN
        for s in (*RUNNING_SERVICE, S.CONTROLLER_INIT, S.CONTROLLER_FAILED, S.FAILED_CLEANUP)
    },
    (S.SHUTTING_DOWN, SE.CLEANUP_FAILED): S.FAILED_CLEANUP,
}


class ReplicaEvent(enum.Enum):
    LAUNCH = "launch"
    UP = "up"
    PROBE_PASSED = "probe_passed"
    PROBE_FAILED = "probe_failed"
    FAILING = "failing"
    """Something ended it (see the end events): tear its cluster down first."""
    SHUTDOWN = "shutdown"
    # the end it takes once its cluster is torn down
    FAILED = "failed"
    FAILED_INITIAL_DELAY = "failed_initial_delay"
    FAILED_PROBING = "failed_probing"
    FAILED_PROVISION = "failed_provision"
    PREEMPTED = "preempted"
    CLEANUP_FAILED = "cleanup_failed"


RE = ReplicaEvent
LIVE_REPLICA = (R.PENDING, R.PROVISIONING, R.STARTING, R.READY, R.NOT_READY, R.UNKNOWN)
ENDS: dict[ReplicaEvent, R] = {
    RE.FAILED: R.FAILED,
    RE.FAILED_INITIAL_DELAY: R.FAILED_INITIAL_DELAY,
    RE.FAILED_PROBING: R.FAILED_PROBING,
    RE.FAILED_PROVISION: R.FAILED_PROVISION,
    RE.PREEMPTED: R.PREEMPTED,
    RE.CLEANUP_FAILED: R.FAILED_CLEANUP,
}
REPLICA_TRANSITIONS: dict[tuple[R, ReplicaEvent], R] = {
    (R.PENDING, RE.LAUNCH): R.PROVISIONING,
    (R.PROVISIONING, RE.UP): R.STARTING,
    (R.STARTING, RE.PROBE_PASSED): R.READY,
    (R.NOT_READY, RE.PROBE_PASSED): R.READY,
    (R.UNKNOWN, RE.PROBE_PASSED): R.READY,
    (R.READY, RE.PROBE_FAILED): R.NOT_READY,
    **{(s, RE.FAILING): R.SHUTTING_DOWN for s in LIVE_REPLICA},
    **{(s, RE.SHUTDOWN): R.SHUTTING_DOWN for s in LIVE_REPLICA},
    **{(R.SHUTTING_DOWN, e): end for e, end in ENDS.items()},
}
