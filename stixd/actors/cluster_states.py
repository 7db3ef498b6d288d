"""A cluster's events and the state each one moves it to: the table `ClusterActor` runs on."""

from __future__ import annotations

import enum

from stixproto.states import ClusterStatus


class ClusterEvent(enum.Enum):
    LAUNCH = "launch"
    START = "start"
    PROVISIONED = "provisioned"
    PROVISION_FAILED = "provision_failed"
    AUTOSTOP = "autostop"
    STOPPED = "stopped"
    TERMINATED = "terminated"
    FOUND_UP = "found_up"
    FOUND_STOPPED = "found_stopped"
    FOUND_GONE = "found_gone"
    FOUND_DEGRADED = "found_degraded"


C, E = ClusterStatus, ClusterEvent
CLUSTER_TRANSITIONS: dict[tuple[ClusterStatus, ClusterEvent], ClusterStatus] = {
    (C.TERMINATED, E.LAUNCH): C.INIT,
    (C.INIT, E.LAUNCH): C.INIT,
    (C.INIT, E.PROVISIONED): C.UP,
    (C.INIT, E.PROVISION_FAILED): C.INIT,
    (C.INIT, E.STOPPED): C.STOPPED,
    (C.INIT, E.TERMINATED): C.TERMINATED,
    (C.INIT, E.FOUND_UP): C.UP,
    (C.INIT, E.FOUND_STOPPED): C.STOPPED,
    (C.INIT, E.FOUND_GONE): C.TERMINATED,
    (C.UP, E.AUTOSTOP): C.AUTOSTOPPING,
    (C.UP, E.STOPPED): C.STOPPED,
    (C.UP, E.TERMINATED): C.TERMINATED,
    (C.UP, E.FOUND_STOPPED): C.STOPPED,
    (C.UP, E.FOUND_GONE): C.TERMINATED,
    (C.UP, E.FOUND_DEGRADED): C.INIT,
    (C.AUTOSTOPPING, E.STOPPED): C.STOPPED,
    (C.AUTOSTOPPING, E.TERMINATED): C.TERMINATED,
    (C.AUTOSTOPPING, E.FOUND_UP): C.UP,
    (C.AUTOSTOPPING, E.FOUND_STOPPED): C.STOPPED,
    (C.AUTOSTOPPING, E.FOUND_GONE): C.TERMINATED,
    (C.AUTOSTOPPING, E.FOUND_DEGRADED): C.INIT,
    (C.STOPPED, E.LAUNCH): C.INIT,
    (C.STOPPED, E.START): C.INIT,
    (C.STOPPED, E.TERMINATED): C.TERMINATED,
    (C.STOPPED, E.FOUND_UP): C.UP,
    (C.STOPPED, E.FOUND_GONE): C.TERMINATED,
    (C.STOPPED, E.FOUND_DEGRADED): C.INIT,
}
