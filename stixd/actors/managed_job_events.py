"""What moves a managed job: its events and transition table, and the messages its phases
send the actor when they end."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from stixproto.states import JobStatus
from stixproto.states import ManagedJobStatus as S


class MEvent(enum.Enum):
    START = "start"
    UP = "up"
    LOST = "lost"
    RESTART = "restart"
    NEXT_TASK = "next_task"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    FAILED_SETUP = "failed_setup"
    FAILED_PRECHECKS = "failed_prechecks"
    NO_RESOURCE = "no_resource"
    CANCEL = "cancel"
    CANCELLED = "cancelled"
    CONTROLLER_FAILED = "controller_failed"


E = MEvent
LIVE = (S.PENDING, S.STARTING, S.RUNNING, S.RECOVERING)
ENDS = {
    E.SUCCEEDED: S.SUCCEEDED,
    E.FAILED: S.FAILED,
    E.FAILED_SETUP: S.FAILED_SETUP,
}
ACTIVE = (S.STARTING, S.RUNNING, S.RECOVERING)
"""States with a cluster in play: a run may end, or the cluster be lost, in any of them."""
MANAGED_TRANSITIONS: dict[tuple[S, MEvent], S] = {
    (S.PENDING, E.START): S.STARTING,
    (S.PENDING, E.FAILED_PRECHECKS): S.FAILED_PRECHECKS,
    (S.STARTING, E.FAILED_PRECHECKS): S.FAILED_PRECHECKS,
    (S.STARTING, E.UP): S.RUNNING,
    (S.RECOVERING, E.UP): S.RUNNING,
    (S.STARTING, E.NO_RESOURCE): S.FAILED_NO_RESOURCE,
    (S.RECOVERING, E.NO_RESOURCE): S.FAILED_NO_RESOURCE,
    **{(s, E.LOST): S.RECOVERING for s in ACTIVE},
    **{(s, E.RESTART): S.RECOVERING for s in ACTIVE},
    **{(s, E.NEXT_TASK): S.STARTING for s in ACTIVE},
    **{(s, e): end for s in ACTIVE for e, end in ENDS.items()},
    **{(s, E.CANCEL): S.CANCELLING for s in LIVE},
    (S.CANCELLING, E.CANCELLED): S.CANCELLED,
    **{(s, E.CONTROLLER_FAILED): S.FAILED_CONTROLLER for s in (*LIVE, S.CANCELLING)},
}


class Advance:
    """Resume the work of the current state (at start, and after each decision)."""


@dataclass(frozen=True)
class Up:
    """A cluster took the task: its job ``job_id`` on cluster incarnation ``uid``."""

    uid: str
    job_id: int


class Running:
    """The run passed its setup and runs the task's `run` (SkyPilot's RUNNING)."""


@dataclass(frozen=True)
class LaunchFailed:
    why: str
    precheck: bool
    """The task itself cannot run anywhere (retrying cannot help)."""


@dataclass(frozen=True)
class Ended:
    """The run on the cluster reached a final state."""

    state: JobStatus
    why: str
    exit_code: int | None = None


@dataclass(frozen=True)
class TornDown:
    then: MEvent
