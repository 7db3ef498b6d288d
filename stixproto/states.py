"""State names, spelled as SkyPilot spells them so users and scripts keep working."""

from __future__ import annotations

import enum


class ClusterStatus(enum.StrEnum):
    INIT = "INIT"
    UP = "UP"
    AUTOSTOPPING = "AUTOSTOPPING"
    STOPPED = "STOPPED"
    # SkyPilot drops the row of a terminated cluster; stix keeps it as history.
    TERMINATED = "TERMINATED"
    # A user's stop or down in flight, written before the provider is called, so a daemon
    # restart finishes it. `status` shows them as SkyPilot does a cluster that may be live or
    # down (`shown`), with what is under way as the record's activity.
    STOPPING = "STOPPING"
    TERMINATING = "TERMINATING"

    @property
    def is_terminal(self) -> bool:
        return self is ClusterStatus.TERMINATED

    @property
    def shown(self) -> str:
        """The name `status` gives: SkyPilot's (INIT: "may be live or down"), so scripts that
        read it keep working."""
        if self in (ClusterStatus.STOPPING, ClusterStatus.TERMINATING):
            return ClusterStatus.INIT.value
        return self.value


class JobStatus(enum.StrEnum):
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
    def is_terminal(self) -> bool:
        return self in _TERMINAL_JOB

    @property
    def is_failure(self) -> bool:
        return self in _TERMINAL_JOB and self is not JobStatus.SUCCEEDED


_TERMINAL_JOB = frozenset(
    {
        JobStatus.SUCCEEDED,
        JobStatus.FAILED,
        JobStatus.FAILED_SETUP,
        JobStatus.FAILED_DRIVER,
        JobStatus.CANCELLED,
    }
)


class ManagedJobStatus(enum.StrEnum):
    """A managed job: launched, watched, recovered and torn down by the daemon itself."""

    PENDING = "PENDING"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    RECOVERING = "RECOVERING"
    CANCELLING = "CANCELLING"
    SUCCEEDED = "SUCCEEDED"
    CANCELLED = "CANCELLED"
    FAILED = "FAILED"
    FAILED_SETUP = "FAILED_SETUP"
    FAILED_PRECHECKS = "FAILED_PRECHECKS"
    FAILED_NO_RESOURCE = "FAILED_NO_RESOURCE"
    FAILED_CONTROLLER = "FAILED_CONTROLLER"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL_MANAGED


_TERMINAL_MANAGED = frozenset(
    {
        ManagedJobStatus.SUCCEEDED,
        ManagedJobStatus.CANCELLED,
        ManagedJobStatus.FAILED,
        ManagedJobStatus.FAILED_SETUP,
        ManagedJobStatus.FAILED_PRECHECKS,
        ManagedJobStatus.FAILED_NO_RESOURCE,
        ManagedJobStatus.FAILED_CONTROLLER,
    }
)


class PoolStatus(enum.StrEnum):
    """A pool of long-lived workers that managed jobs run on (`jobs pool apply`)."""

    PROVISIONING = "PROVISIONING"
    READY = "READY"
    SHUTTING_DOWN = "SHUTTING_DOWN"
    FAILED = "FAILED"
    """A worker could not be made (its launch or its setup failed); `apply` again retries."""
    DOWN = "DOWN"

    @property
    def is_terminal(self) -> bool:
        return self is PoolStatus.DOWN
