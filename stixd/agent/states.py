"""Job states and the moves allowed between them.

Every state write is a conditional UPDATE whose condition comes from ``TRANSITIONS``, so a
terminal state (for example a CANCELLED recorded by the agent) is never overwritten by a runner.
"""

from __future__ import annotations

import enum


class JobState(str, enum.Enum):  # noqa: UP042 - StrEnum needs Python 3.11; nodes may be older
    INIT = "INIT"
    PENDING = "PENDING"
    SETTING_UP = "SETTING_UP"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    FAILED_SETUP = "FAILED_SETUP"
    FAILED_DRIVER = "FAILED_DRIVER"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL: frozenset[JobState] = frozenset(
    {
        JobState.SUCCEEDED,
        JobState.FAILED,
        JobState.FAILED_SETUP,
        JobState.FAILED_DRIVER,
        JobState.CANCELLED,
    }
)
ACTIVE: frozenset[JobState] = frozenset(s for s in JobState if s not in TERMINAL)

_ABORTS = frozenset({JobState.CANCELLED, JobState.FAILED_DRIVER})

TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.INIT: frozenset({JobState.PENDING}) | _ABORTS,
    JobState.PENDING: frozenset({JobState.SETTING_UP, JobState.RUNNING, JobState.SUCCEEDED})
    | _ABORTS,
    JobState.SETTING_UP: frozenset({JobState.RUNNING, JobState.SUCCEEDED, JobState.FAILED_SETUP})
    | _ABORTS,
    JobState.RUNNING: frozenset({JobState.SUCCEEDED, JobState.FAILED}) | _ABORTS,
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.FAILED_SETUP: frozenset(),
    JobState.FAILED_DRIVER: frozenset(),
    JobState.CANCELLED: frozenset(),
}
"""For each state, the states a job in it may move to. Terminal states go nowhere."""


def sources_of(target: JobState) -> frozenset[JobState]:
    """The states from which a job may move to ``target``."""
    return frozenset(source for source, targets in TRANSITIONS.items() if target in targets)
