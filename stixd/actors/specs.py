"""What each actor kind stores in its row's spec and data columns, as Structs.

A row is decoded into these once, when its actor is built (and by the control handlers that
read rows of other actors); the actor writes through them too, so what is stored is what is
read. Decoding is also the check that quarantines a row no stix writes: a field of the wrong
type, or a number out of its bounds, is found by the same decode the actor uses.

Every field has the default an earlier version meant by leaving it out (rows written before
the field existed still load); a field an actor always wrote and reads without a fallback is
required. Keys no field names are ignored when read (and not written back). Nested values
other code builds and reads as plain data (a node, a placement, a task, an agent's submit
payload) stay dicts here.
"""

from __future__ import annotations

import enum
from typing import Annotated, Any, TypeVar

import msgspec
from msgspec import Meta

from stixd.store.db import Row
from stixproto.bounds import MAX_COUNT, MAX_ID, MAX_IDLE_MINUTES, JobId

MAX_POOL_WORKERS = 10_000
"""More workers than this in a stored pool is damage, not a size: no loop over them ends."""

Count = Annotated[int, Meta(ge=0, le=MAX_ID)]
"""A counter (restarts, recoveries, runs, a task's index): never negative, never beyond what a
client's float can hold exactly."""
Size = Annotated[int, Meta(ge=1, le=MAX_COUNT)]
"""How many of something there are (nodes, jobs of one launch): at least one."""
Rank = Annotated[int, Meta(ge=0, le=MAX_COUNT - 1)]
Workers = Annotated[int, Meta(ge=0, le=MAX_POOL_WORKERS)]

_Stored = TypeVar("_Stored", bound=msgspec.Struct)
_State = TypeVar("_State", bound=enum.Enum)


class _Record(msgspec.Struct, frozen=True, kw_only=True):
    """A stored spec or data: immutable, so a change is made by a write (`Actor.save`)."""


# -- cluster ---------------------------------------------------------------------------------


class ClusterSpec(_Record, frozen=True, kw_only=True):
    """What a cluster was launched as (set by each launch, and by a resize seen outside stix)."""

    provider: str = "local"
    """Rows from before the field existed were launched on ``local``, then the only infra."""
    pool: str | None = None
    num_nodes: Size = 1
    resources: str = ""
    hourly_price: float = 0.0
    """Per node."""
    placement: dict[str, Any] | None = None
    """A cloud's choice (region, zones, instance type, ports...); None off the clouds."""
    avoid_regions: list[str] = []
    ports: list[int] = []
    owner: str | None = None
    """Who made it (a user's name); None: made before owners were kept, the local owner's."""
    workspace: str | None = None
    """The workspace it was made in; None: the default one."""


class Autostop(_Record, frozen=True, kw_only=True):
    idle_minutes: Annotated[float, Meta(ge=0, le=MAX_IDLE_MINUTES)]
    down: bool = False


class PendingLaunch(_Record, frozen=True, kw_only=True):
    """A launch written before it is made: resumed after a restart, retried while waiting."""

    request: dict[str, Any]
    """The `Launch` request (decoded again to resume it: a name an earlier version took may
    be refused then, and `down` must still remove the cluster)."""
    job_id: JobId | None = None


class MountKeys(_Record, frozen=True, kw_only=True):
    """A bucket mounted on a cluster's nodes with keys that end (``stixd.actors.mount_keys``)."""

    store: str
    bucket: str
    dest: str
    """The task's path of the mount (each node's own: ``stixd.storage.copy.node_path``)."""
    expires_at: float
    renew_at: float
    failures: int = 0


class BucketMount(_Record, frozen=True, kw_only=True):
    """A bucket mounted (MOUNT or MOUNT_CACHED) on a cluster's nodes: what mounts it again when
    the cluster's nodes come back (``storage_use.remount``), and what an ``exec``'d job's end
    waits for (MOUNT_CACHED)."""

    dest: str
    """The task's path of the mount (each node's own: ``stixd.storage.copy.node_path``)."""
    name: str
    """The storage's name (its record's)."""
    store: str
    bucket: str
    prefix: str = ""
    mode: str = "MOUNT"
    flags: dict[str, str] = {}
    """The mount's rclone knobs (``StorageSpec.mount_cached``)."""


class ClusterData(_Record, frozen=True, kw_only=True):
    uid: str | None = None
    """Which launch of the name (its jobs' rows are under `name/uid/`)."""
    next_job_id: JobId = 1
    launched_at: float | None = None
    up_since: float | None = None
    active_seconds: float = 0.0
    cost_accrued: float = 0.0
    priced_seconds: float = 0.0
    nodes: list[dict[str, Any]] = []
    """`NodeInfo.to_dict()` of each node."""
    machines: dict[str, dict[str, Any]] | None = None
    """The machines as the cloud last listed them, by rank (`machines.compare`)."""
    autostop: Autostop | None = None
    idle_since: float | None = None
    last_error: str | None = None
    losses: list[str] | None = None
    pending_launch: PendingLaunch | None = None
    retry_round: Count | None = None
    config_layers: list[list[Any]] = []
    """The client's config layers, `[source, values]` each."""
    launch_spec: str | None = None
    launch_files: str | None = None
    quarantine: str | None = None
    """Why an earlier row of the name was removed while quarantined."""
    mount_keys: list[MountKeys] = []
    """The bucket mounts whose keys the daemon renews before they end."""
    bucket_mounts: list[BucketMount] = []
    """Every bucket mounted on the nodes, kept across a stop (mounted again at ``start``)."""


# -- job on a cluster ------------------------------------------------------------------------


class JobSpec(_Record, frozen=True, kw_only=True):
    cluster: str
    uid: str
    job_id: JobId
    name: str | None = None
    provider: str
    resources: str = ""
    nodes: list[dict[str, Any]]
    submit: dict[str, Any]
    """The agents' `submit` payload, sent as it is stored (a replay is the same submission)."""
    owner: str | None = None
    """Its cluster's owner when it was submitted (None: the local owner's)."""


class JobData(_Record, frozen=True, kw_only=True):
    submitted_at: float | None = None
    started_at: float | None = None
    ended_at: float | None = None
    exit_code: int | None = None
    failed_rank: Rank | None = None
    reason: str | None = None
    quarantine: str | None = None


# -- managed job -----------------------------------------------------------------------------


class ManagedJobSpec(_Record, frozen=True, kw_only=True):
    name: str
    tasks: list[dict[str, Any]] = []
    """Each task as `msgspec.to_builtins(Task)` (secret values redacted once it ended)."""
    config: list[dict[str, Any]] = []
    submitted_at: float | None = None
    resources: str = ""
    pool: str | None = None
    num_jobs: Size = 1
    job_rank: Count = 0
    cluster: str | None = None
    owner: str | None = None
    """Who made it (a user's name); None: made before owners were kept, the local owner's."""
    workspace: str | None = None
    """The workspace it was made in; None: the default one."""


class ManagedJobData(_Record, frozen=True, kw_only=True):
    task: Count = 0
    worker: str | None = None
    attempt_at: float | None = None
    cluster_uid: str | None = None
    cluster_job_id: JobId | None = None
    run: Count = 0
    region: str | None = None
    lost_region: str | None = None
    run_infras: list[str] = []
    started_at: float | None = None
    run_started_at: float | None = None
    ended_at: float | None = None
    job_duration: float = 0.0
    restarts: Count = 0
    recoveries: Count = 0
    recovery_reasons: list[str] = []
    failure_reason: str | None = None
    quarantine: str | None = None


# -- job pool --------------------------------------------------------------------------------


class JobPoolSpec(_Record, frozen=True, kw_only=True):
    workers: Workers = 0
    task: dict[str, Any] | None = None
    config: list[dict[str, Any]] = []
    owner: str | None = None
    """Who applied it first; None: made before pools kept owners, shared in its workspace."""
    workspace: str | None = None
    """The workspace it was made in; None: the default one."""


class JobPoolData(_Record, frozen=True, kw_only=True):
    claims: dict[str, int] = {}
    """Worker → the managed job holding it."""
    waiting: list[int] = []
    failed: dict[str, str] = {}
    """Worker → why it could not be made."""
    quarantine: str | None = None


# -- reading and writing ---------------------------------------------------------------------


def decode(stored: dict[str, Any], into: type[_Stored]) -> _Stored:
    """A spec or data column as its Struct; `msgspec.ValidationError` says what is wrong."""
    return msgspec.convert(stored, into)


def encode(record: msgspec.Struct) -> dict[str, Any]:
    """What is written for `record`: every field, so a reader of any version sees it."""
    stored: dict[str, Any] = msgspec.to_builtins(record)
    return stored


def spec_of(row: Row, into: type[_Stored]) -> _Stored:
    return decode(row.spec, into)


def data_of(row: Row, into: type[_Stored]) -> _Stored:
    return decode(row.data, into)


def state_of(row: Row, states: type[_State]) -> _State | None:
    """A row's state as its enum; None for a state no stix writes (a damaged row)."""
    try:
        return states(row.state)
    except ValueError:
        return None


def spec_or_none(row: Row, into: type[_Stored]) -> _Stored | None:
    """`spec_of`, or None for a row whose spec no stix writes: a damaged row of another actor,
    which quarantine shows and removes, is passed over by the one reading it."""
    try:
        return decode(row.spec, into)
    except msgspec.ValidationError:
        return None


def data_or_none(row: Row, into: type[_Stored]) -> _Stored | None:
    """`data_of`, or None for a row whose data no stix writes (see `spec_or_none`)."""
    try:
        return decode(row.data, into)
    except msgspec.ValidationError:
        return None
