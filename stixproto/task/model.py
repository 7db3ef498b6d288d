"""The shapes of a task file: `Task`, the structs inside it and `Dag`, holding what the user wrote.

Only the shapes live here, and this module imports nothing else of `stixproto.task` (the one
exception is `Task.from_yaml`, below): `stixproto.messages` (and so every `stixctl` command)
imports it and the client's start-up is measured, and every other module of the package builds
on it. Fields keep the user's shape (`accelerators: {L4, A10G}` stays a map); the rules and the
normalised views are functions of `resources`, `service`, `storage` and `parsing`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

Scalar = str | int | float | bool
Number = int | float
AcceleratorCount = int | float | None
AcceleratorsSpec = str | dict[str, AcceleratorCount] | list[str | dict[str, AcceleratorCount]]


class _Shape(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """A closed map: an unknown key is an error, an unset key is left out when written."""


# -- resources ----------------------------------------------------------------------------------


class AcceleratorArgs(_Shape):
    """TPU-only knobs."""

    runtime_version: str | None = None
    tpu_name: str | None = None
    tpu_vm: bool | None = None
    gcp_queued_resource: bool | None = None


class AutostopConfig(_Shape):
    idle_minutes: int | None = None
    down: bool | None = None
    wait_for: str | None = None
    hook: str | None = None
    hook_timeout: int | None = None


class Resources(_Shape):
    infra: str | None = None
    cloud: str | None = None
    region: str | None = None
    zone: str | None = None
    cpus: Number | str | None = None
    memory: Number | str | None = None
    accelerators: AcceleratorsSpec | None = None
    accelerator_args: AcceleratorArgs | None = None
    instance_type: str | None = None
    use_spot: bool | None = None
    job_recovery: str | dict[str, Any] | None = None
    spot_recovery: str | dict[str, Any] | None = None
    disk_size: int | str | None = None
    disk_tier: str | None = None
    network_tier: str | None = None
    ports: int | str | list[int | str] | None = None
    labels: dict[str, str] | None = None
    image_id: str | dict[str, str] | None = None
    any_of: list[Resources] | None = None
    ordered: list[Resources] | None = None
    autostop: bool | int | str | AutostopConfig | None = None
    priority: int | None = None
    local_disk: str | None = None
    max_hourly_cost: Number | None = None
    volumes: list[dict[str, Any]] | None = None

    @property
    def is_ordered(self) -> bool:
        """True when the alternatives (`ordered`) are tried strictly in order."""
        return self.ordered is not None


# -- file mounts ------------------------------------------------------------------------------


class Storage(_Shape):
    """A SkyPilot Storage (bucket) mount: `name` and/or `source`, plus how it is mounted."""

    name: str | None = None
    source: str | list[str] | None = None
    store: str | None = None
    persistent: bool | None = None
    mode: str | None = None
    type: str | None = None
    """A MOUNT_CACHED preset (SkyPilot's FileMountType): `stixproto.task.storage.PRESETS`."""
    config: dict[str, Any] | None = None

    @property
    def mount_mode(self) -> str:
        """MOUNT (the default), COPY or MOUNT_CACHED, whatever case was written."""
        return (self.mode or "MOUNT").upper()

    @property
    def is_persistent(self) -> bool:
        return True if self.persistent is None else self.persistent

    def sources(self) -> list[str]:
        if self.source is None:
            return []
        return [self.source] if isinstance(self.source, str) else list(self.source)


# -- service ----------------------------------------------------------------------------------


class ReadinessProbe(_Shape):
    path: str
    initial_delay_seconds: Number | None = None
    timeout_seconds: Number | None = None
    post_data: str | dict[str, Any] | None = None
    headers: dict[str, str] | None = None
    endpoint_probe_interval_seconds: Number | None = None
    consecutive_failure_threshold_timeout: Number | None = None


class ReplicaPolicy(_Shape):
    min_replicas: int
    max_replicas: int | None = None
    target_qps_per_replica: Number | dict[str, Number] | None = None
    upscale_delay_seconds: Number | None = None
    downscale_delay_seconds: Number | None = None
    num_overprovision: int | None = None
    dynamic_ondemand_fallback: bool | None = None
    base_ondemand_fallback_replicas: int | None = None
    spot_placer: str | None = None


class Service(_Shape):
    readiness_probe: str | ReadinessProbe | None = None
    replicas: int | None = None
    replica_policy: ReplicaPolicy | None = None
    load_balancing_policy: str | None = None
    ports: int | None = None
    tls: dict[str, Any] | None = None
    load_balancer: dict[str, Any] | None = None
    auth: dict[str, Any] | None = None
    """`{api_keys: [KEY, ...]}`: the balancer asks every request for one of these."""

    @property
    def lb_policy(self) -> str:
        return (self.load_balancing_policy or "least_load").lower()


# -- the task ---------------------------------------------------------------------------------


class Task(_Shape):
    name: str | None = None
    workdir: str | dict[str, Any] | None = None
    num_nodes: int = 1
    resources: Resources | None = None
    envs: dict[str, Scalar | None] = msgspec.field(default_factory=dict)
    secrets: dict[str, Scalar | None] | list[str] = msgspec.field(default_factory=dict)
    file_mounts: dict[str, str | Storage] = msgspec.field(default_factory=dict)
    volumes: dict[str, str | dict[str, Any]] | None = None
    setup: str | None = None
    run: str | None = None
    config: dict[str, Any] | None = None
    service: Service | None = None
    pool: dict[str, Any] | None = None
    event_callback: str | None = None
    inputs: dict[str, Number] | None = None
    outputs: dict[str, Number] | None = None
    # Written by SkyPilot itself into the YAMLs it generates; carried through untouched.
    file_mounts_mapping: dict[str, Any] | None = None
    volume_mounts: list[dict[str, Any]] | None = None
    metadata: dict[str, Any] | None = msgspec.field(default=None, name="_metadata")

    def storage_mounts(self) -> dict[str, Storage]:
        """Destination → Storage for the bucket mounts written as maps."""
        return {d: s for d, s in self.file_mounts.items() if isinstance(s, Storage)}

    def copy_mounts(self) -> dict[str, str]:
        """Destination → source for the mounts written as one string (local path or URL)."""
        return {d: s for d, s in self.file_mounts.items() if isinstance(s, str)}

    def resources_or_default(self) -> Resources:
        return self.resources if self.resources is not None else Resources()

    @classmethod
    def from_yaml(cls, path_or_text: str | Path) -> Task:
        """A task from a YAML file path or from YAML text (a pipeline is an error here).

        SkyPilot's `Task.from_yaml`, which the SDK keeps (issue 4): the loader needs this module,
        so it is imported here, at call time, the only import of `load` in this module.
        """
        from stixproto.task.load import from_yaml, load_task_file, looks_like_path, pipeline_error

        if isinstance(path_or_text, Path) or looks_like_path(path_or_text):
            return load_task_file(path_or_text)
        parsed = from_yaml(path_or_text)
        if not isinstance(parsed, Task):
            raise pipeline_error("task", parsed)
        return parsed

    def __rshift__(self, other: Task | Dag) -> Dag:
        """`a >> b`: a pipeline that runs `a`, then `b` (or every task of the dag `b`)."""
        if isinstance(other, Dag):
            return other.__rrshift__(self)
        return Dag(tasks=[self, other])


# -- pipelines (multi-document task files) -----------------------------------------------------

HEADER_KEYS = ("name", "execution", "primary_tasks", "placement")
JOB_GROUP_KEYS = ("execution", "primary_tasks", "placement")


class Dag(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """A pipeline. `name`/`execution`/`primary_tasks`/`placement` come from the header document
    (`name:` alone, or a job-group header); without a header they stay None."""

    tasks: list[Task] = msgspec.field(default_factory=list)
    name: str | None = None
    execution: str | None = None
    primary_tasks: list[str] | None = None
    placement: Any = None

    def header(self) -> dict[str, Any] | None:
        """The header document as written, or None when the file had none."""
        values = {k: getattr(self, k) for k in HEADER_KEYS if getattr(self, k) is not None}
        return values or None

    @property
    def is_job_group(self) -> bool:
        """True when the documents run together (`execution: parallel`), not one by one."""
        return (self.execution or "").lower() == "parallel"

    def __rshift__(self, other: Task | Dag) -> Dag:
        """`dag >> task`: the same pipeline with `task` (or every task of a dag) run last."""
        more = other.tasks if isinstance(other, Dag) else [other]
        return msgspec.structs.replace(self, tasks=[*self.tasks, *more])

    def __rrshift__(self, other: Task) -> Dag:
        """`task >> dag`: `task` first, then the dag's tasks."""
        return msgspec.structs.replace(self, tasks=[other, *self.tasks])
