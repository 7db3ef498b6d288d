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
    STOP = "stop"
    TERMINATE = "terminate"
    STOPPED = "stopped"
    TERMINATED = "terminated"
    STOP_FAILED = "stop_failed"
    TERMINATE_FAILED = "terminate_failed"
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
    (C.INIT, E.FOUND_UP): C.UP,
    (C.INIT, E.FOUND_STOPPED): C.STOPPED,
    (C.INIT, E.FOUND_GONE): C.TERMINATED,
    (C.UP, E.AUTOSTOP): C.AUTOSTOPPING,
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
    (C.STOPPED, E.FOUND_UP): C.UP,
    (C.STOPPED, E.FOUND_GONE): C.TERMINATED,
    (C.STOPPED, E.FOUND_DEGRADED): C.INIT,
    # a user's stop or down: the intent is written before the provider is called; a down
    # overrides a stop (or an autostop) under way
    (C.INIT, E.STOP): C.STOPPING,
    (C.UP, E.STOP): C.STOPPING,
    (C.INIT, E.TERMINATE): C.TERMINATING,
    (C.UP, E.TERMINATE): C.TERMINATING,
    (C.AUTOSTOPPING, E.TERMINATE): C.TERMINATING,
    (C.STOPPED, E.TERMINATE): C.TERMINATING,
    (C.STOPPING, E.TERMINATE): C.TERMINATING,
    (C.STOPPING, E.STOPPED): C.STOPPED,
    (C.TERMINATING, E.TERMINATED): C.TERMINATED,
    # the provider refused: SkyPilot's INIT, live or down, until a look or the next try says
    (C.STOPPING, E.STOP_FAILED): C.INIT,
    (C.AUTOSTOPPING, E.STOP_FAILED): C.INIT,
    (C.TERMINATING, E.TERMINATE_FAILED): C.INIT,
    (C.AUTOSTOPPING, E.TERMINATE_FAILED): C.INIT,
}
