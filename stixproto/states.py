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


class ServiceStatus(enum.StrEnum):
    """A service (`serve up`): SkyServe's names, so scripts that read `sky serve status` work."""

    CONTROLLER_INIT = "CONTROLLER_INIT"
    """Accepted; the daemon is starting the service's load balancer."""
    REPLICA_INIT = "REPLICA_INIT"
    """The balancer is up; no replica has become READY yet."""
    READY = "READY"
    """At least one replica is READY and in the balancer's rotation."""
    NO_REPLICA = "NO_REPLICA"
    """Scaled to zero (or every replica is gone): requests wait in the balancer's queue."""
    SHUTTING_DOWN = "SHUTTING_DOWN"
    FAILED = "FAILED"
    """Replicas keep failing before they ever become ready; `serve update` or `down` next."""
    FAILED_CLEANUP = "FAILED_CLEANUP"
    """`serve down` could not tear every replica down; `down --purge` forgets it."""
    CONTROLLER_FAILED = "CONTROLLER_FAILED"
    """The load balancer could not be started or kept running."""

    @property
    def is_failed(self) -> bool:
        return self in _FAILED_SERVICE


_FAILED_SERVICE = frozenset(
    {ServiceStatus.FAILED, ServiceStatus.FAILED_CLEANUP, ServiceStatus.CONTROLLER_FAILED}
)


class ReplicaStatus(enum.StrEnum):
    """One replica of a service, which owns one cluster (SkyServe's replica states)."""

    PENDING = "PENDING"
    """Decided on, waiting for its launch to start."""
    PROVISIONING = "PROVISIONING"
    """Its cluster is being launched."""
    STARTING = "STARTING"
    """The cluster is up and the service's command runs; readiness probes have not passed yet."""
    READY = "READY"
    NOT_READY = "NOT_READY"
    """Was READY, now failing probes (out of rotation until it passes again)."""
    SHUTTING_DOWN = "SHUTTING_DOWN"
    FAILED = "FAILED"
    """The service's command exited."""
    FAILED_INITIAL_DELAY = "FAILED_INITIAL_DELAY"
    """Never passed a probe within `initial_delay_seconds`."""
    FAILED_PROBING = "FAILED_PROBING"
    """Was READY and kept failing probes past the failure threshold."""
    FAILED_PROVISION = "FAILED_PROVISION"
    """Its cluster could not be launched anywhere the plan allows."""
    FAILED_CLEANUP = "FAILED_CLEANUP"
    """Its cluster could not be torn down; the leak reconciler keeps trying."""
    PREEMPTED = "PREEMPTED"
    """Its spot cluster was taken back; a new replica replaces it."""
    UNKNOWN = "UNKNOWN"
    """Its cluster's state cannot be read right now."""

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL_REPLICA

    @property
    def is_failed(self) -> bool:
        return self in _TERMINAL_REPLICA and self is not ReplicaStatus.PREEMPTED


_TERMINAL_REPLICA = frozenset(
    {
        ReplicaStatus.FAILED,
        ReplicaStatus.FAILED_INITIAL_DELAY,
        ReplicaStatus.FAILED_PROBING,
        ReplicaStatus.FAILED_PROVISION,
        ReplicaStatus.FAILED_CLEANUP,
        ReplicaStatus.PREEMPTED,
    }
)


class StorageStatus(enum.StrEnum):
    """SkyPilot's storage states, plus DELETING: a delete in flight, written before the bucket
    is touched, so a daemon restart finishes it."""

    INIT = "INIT"
    INIT_FAILED = "INIT_FAILED"
    UPLOAD_FAILED = "UPLOAD_FAILED"
    READY = "READY"
    DELETING = "DELETING"
