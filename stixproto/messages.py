"""Every request, stream event and reply on the stixctl ↔ stixd socket.

A connection carries: the client's `Hello` → the daemon's `HelloOk` (or an `ErrorReply`) →
one request → any number of stream events (`Progress`, `LogChunk`, `JobSubmitted`) → exactly
one final reply. Closing the connection cancels the request.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import msgspec

from stixproto import bounds as b
from stixproto import names
from stixproto.errors import InvalidRequest
from stixproto.task import Dag, Task
from stixproto.volumes import VolumeConfig


class Msg(msgspec.Struct, frozen=True, tag_field="type", forbid_unknown_fields=True):
    def __post_init__(self) -> None:
        """Runs on construction (CLI, SDK) and on decoding (socket) alike. A subclass that
        defines its own ``__post_init__`` calls this one first."""
        check_names(self)


# -- handshake -------------------------------------------------------------------------------


class Hello(Msg, tag="hello", frozen=True):
    protocol: b.Protocol
    client: str = "stixctl"
    catalog_dir: b.LocalPath | None = None
    """The client's ``STIX_CATALOG_DIR`` made absolute (`stixproto.paths.client_catalog_dir`);
    a request answered from the catalog is refused when it names another than the daemon's."""
    replica: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    """Another stixd replica forwarding a request (stixd/control/forward.py): the deployment's
    replica secret, which the daemon checks; a client sends none."""
    on_behalf: Annotated[str, msgspec.Meta(max_length=300)] | None = None
    """With `replica`: ``NAME ROLE`` of whom that replica took the request from."""


class HelloOk(Msg, tag="hello_ok", frozen=True):
    protocol: int
    daemon_pid: int
    version: str


# -- requests --------------------------------------------------------------------------------


class ConfigLayer(msgspec.Struct, frozen=True):
    """A config file the client read (project `.stix.yaml`, `--config`), validated by the daemon."""

    source: str
    values: dict[str, Any]


class Launch(Msg, tag="launch", frozen=True):
    task: Task
    cluster: str | None = None
    detach: bool = False
    down: bool = False
    idle_minutes: b.IdleMinutes | None = None
    no_setup: bool = False
    config: list[ConfigLayer] = []
    task_id: str | None = None
    """SKYPILOT_TASK_ID for the job; a managed job keeps one across its recoveries."""
    avoid_regions: list[str] = []
    """A managed job's recovery by EAGER_NEXT_REGION: the regions its cluster was lost in,
    left out of the plan unless no other region is left."""
    prefer_region: str | None = None
    """A managed job's recovery by FAILOVER: the region to try first."""
    retry_until_up: bool = False
    """When every choice failed for capacity, try the whole list again after a backoff until
    one comes up; `down` of the cluster (or the client going away) ends the wait."""
    fast: bool = False
    """On a cluster UP with the same launch spec: skip setup (and file sync, when the local
    files are unchanged too)."""
    detach_setup: bool = False
    """With `detach`: answer once the job is submitted, its setup still running; without it
    a detached launch answers when setup has finished (SkyPilot's `-s/--detach-setup`)."""
    plan_choice: b.PlanChoice | None = None
    """The choice the user confirmed (`PlanReply.choice`): a launch that would now provision
    something else is refused, so what was shown is what gets launched."""
    owner: str | None = None
    """Who the cluster is made for, and in which workspace: set by the server that took the
    request (a client's value is replaced), or by the managed job or service launching it."""
    workspace: str | None = None


class Exec(Msg, tag="exec", frozen=True):
    cluster: str
    task: Task
    detach: bool = False
    task_id: str | None = None
    """As for `Launch` (a managed job running on a pool worker)."""


class Status(Msg, tag="status", frozen=True):
    clusters: list[str] = []
    refresh: bool = False
    all: bool = False
    limit: b.ListLimit | None = None
    """List at most this many of your clusters and as many of those managed jobs keep up
    (the newest of each); None: every one."""
    stream: bool = False
    """Send the records as `ClusterRows` chunks, then a `ClusterList` with none of its own."""
    all_users: bool = False
    """`-u`: every user's, with their names (else only the caller's own)."""


class Queue(Msg, tag="queue", frozen=True):
    clusters: list[str] = []
    all: bool = False
    skip_finished: bool = False
    all_users: bool = False
    """`-u`: every user's, with their names (else only the caller's own)."""


class Logs(Msg, tag="logs", frozen=True):
    cluster: str
    job_id: b.JobId | None = None
    follow: bool = True
    tail: b.Lines | None = None
    status_only: bool = False
    node: b.NodeRank | None = None


class Cancel(Msg, tag="cancel", frozen=True):
    cluster: str
    job_ids: list[b.JobId] = []
    all: bool = False


class Stop(Msg, tag="stop", frozen=True):
    clusters: list[str] = []
    all: bool = False


class Start(Msg, tag="start", frozen=True):
    clusters: list[str]
    idle_minutes: b.IdleMinutes | None = None
    down: bool = False


class Down(Msg, tag="down", frozen=True):
    clusters: list[str] = []
    all: bool = False
    purge: bool = False


class Autostop(Msg, tag="autostop", frozen=True):
    clusters: list[str] = []
    all: bool = False
    idle_minutes: b.IdleMinutes | None = None
    down: bool = False
    cancel: bool = False


class CostReportReq(Msg, tag="cost_report", frozen=True):
    all: bool = False
    days: b.Days = 30


class Check(Msg, tag="check", frozen=True):
    infras: list[str] = []


class Leaks(Msg, tag="leaks", frozen=True):
    """Look for leaked cloud instances now (and terminate them with ``terminate``)."""

    terminate: bool = False
    ids: list[str] = []
    """With ``terminate``: only these of the leaks found (the ones a user confirmed)."""


EventKind = Literal["cluster", "job", "managed_job", "job_pool", "service", "replica", "storage"]
"""The actor kinds whose history `events` shows."""


class Events(Msg, tag="events", frozen=True):
    """The history of a cluster, or of a job: `name` is then its cluster and `job_id` the id
    `queue` shows (none: the cluster's latest job), or `name` is the job's full record id."""

    name: str
    kind: EventKind = "cluster"
    limit: b.EventLimit = 200
    job_id: b.JobId | None = None


class PlanRequest(Msg, tag="plan", frozen=True):
    """`launch --dryrun`: plan these tasks (a pipeline when several), launch nothing."""

    tasks: list[Task]
    all_clouds: bool = False
    minimize: str = "cost"
    launch: bool = False
    """Plan as `launch` of `cluster` would (its infra, the blocks remembered): the plan shown
    before `Proceed?`; the reply says the cluster's state and the choice to confirm."""
    cluster: str | None = None


class SshPools(Msg, tag="ssh_pools", frozen=True):
    """`ssh up|down|status [POOL]`: probe an SSH node pool's hosts (down: free them first)."""

    action: str
    pool: str | None = None


class NodeShell(Msg, tag="node_shell", frozen=True):
    """`stixctl ssh CLUSTER`: how to open a shell (or run `command`) on one of its nodes."""

    cluster: str
    node: b.NodeRank = 0
    command: str | None = None


class ShowGpus(Msg, tag="show_gpus", frozen=True):
    name: str | None = None
    count: b.AcceleratorCount | None = None
    infra: str | None = None
    all: bool = False


class CatalogUpdate(Msg, tag="catalog_update", frozen=True):
    clouds: list[str] = []


class CatalogStatus(Msg, tag="catalog_status", frozen=True):
    pass


class DaemonStatus(Msg, tag="daemon_status", frozen=True):
    pass


class Shutdown(Msg, tag="shutdown", frozen=True):
    pass


class ApiServe(Msg, tag="api_serve", frozen=True):
    """`stixctl api start`: serve the HTTP API on this address (None: the last one, else the
    config's `api:` section), now and after every restart. Port 0 picks a free port."""

    host: Annotated[str, msgspec.Meta(min_length=1, max_length=253)] | None = None
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] | None = None


class ApiStop(Msg, tag="api_stop", frozen=True):
    """`stixctl api stop`: stop serving HTTP, now and after restarts (the socket stays)."""


class UploadEntry(msgspec.Struct, frozen=True, array_like=True, forbid_unknown_fields=True):
    path: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]
    """Relative to the uploaded directory, parts joined by ``/``."""
    is_dir: bool
    size: Annotated[int, msgspec.Meta(ge=0)]
    mtime_ns: int
    mode: Annotated[int, msgspec.Meta(ge=0, le=0o7777)]


class UploadPlan(Msg, tag="upload_plan", frozen=True):
    """A remote client's local directory (or file) a task names: every entry under it and the
    ignore files among them, so the server keeps what a sync would send and asks for the files
    it lacks (`UploadNeeds`), which `UploadFiles` brings."""

    source: b.LocalPath
    """Its absolute path on the client: names the upload (one copy per user and source)."""
    is_file: bool
    entries: list[UploadEntry]
    ignore_files: dict[str, bytes] = {}


class UploadFiles(Msg, tag="upload_files", frozen=True):
    source: b.LocalPath
    files: dict[str, bytes]
    """Relative path → content: files the last `UploadNeeds` for `source` asked for."""


class ApiInfo(Msg, tag="api_info", frozen=True):
    """`stixctl api info|status|login`: who the server says the caller is, and where it serves."""


class JobsLaunch(Msg, tag="jobs_launch", frozen=True):
    """A managed job: one task, or a pipeline run task by task, each on its own cluster; with
    `pool`, `num_jobs` jobs run on the pool's idle workers instead (no provisioning)."""

    tasks: list[Task]
    name: str | None = None
    detach: bool = False
    config: list[ConfigLayer] = []
    pool: str | None = None
    num_jobs: b.JobCount = 1


class PoolApply(Msg, tag="pool_apply", frozen=True):
    """Create a pool of `task.pool.workers` workers, or resize it to that many."""

    name: str
    task: Task
    config: list[ConfigLayer] = []


class PoolStatusReq(Msg, tag="pool_status", frozen=True):
    names: list[str] = []


class PoolDown(Msg, tag="pool_down", frozen=True):
    names: list[str] = []
    all: bool = False


class JobsQueue(Msg, tag="jobs_queue", frozen=True):
    all: bool = False
    """Every job, ended ones too (else, without `limit`: those in progress and the 50 that
    ended last)."""
    limit: b.ListLimit | None = None
    """Without `all`: the newest this many (`stixctl jobs queue` asks for 50, as `sky`)."""
    skip_finished: bool = False
    """Only the jobs still in progress."""
    stream: bool = False
    """Send the records as `ManagedJobRows` chunks, then a `ManagedJobList` with none of its
    own: a listing of any length, in frames of bounded size."""
    all_users: bool = False
    """`-u`: every user's, with their names (else only the caller's own)."""


class JobsCancel(Msg, tag="jobs_cancel", frozen=True):
    job_ids: list[b.JobId] = []
    name: str | None = None
    all: bool = False
    pool: str | None = None
    """Every live job of this pool (SkyPilot's `jobs cancel --pool`)."""


class JobsLogs(Msg, tag="jobs_logs", frozen=True):
    job_id: b.JobId | None = None
    """None: the most recent managed job."""
    name: str | None = None
    follow: bool = True
    controller: bool = False
    status_only: bool = False


class ResourceFlags(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """SkyPilot's resource-override flags as the command line gave them; the daemon applies
    them (`stixproto.task.ResourceOverrides`). `num_nodes` and `ports` are the text typed, so
    an out-of-range one is refused in the words a task file's own value gets."""

    gpus: str | None = None
    cpus: str | None = None
    memory: str | None = None
    infra: str | None = None
    cloud: str | None = None
    region: str | None = None
    zone: str | None = None
    use_spot: bool | None = None
    instance_type: str | None = None
    num_nodes: str | None = None
    disk_size: str | None = None
    disk_tier: str | None = None
    network_tier: str | None = None
    image_id: str | None = None
    ports: list[str] | None = None


class ReadTask(Msg, tag="read_task", frozen=True):
    """`launch`, `exec` and `jobs launch` of the CLI: the daemon reads and checks the task the
    command line gives (`stixd/control/task_reading.py`), so the client imports neither YAML
    nor the task rules. The client read the file's bytes where the user typed its path and
    resolves the task's local paths against its own directory when the answer comes back."""

    file: str | None = None
    """The task file as typed (errors name it so); None: `command` is the task."""
    data: b.YamlBytes = b""
    """The file's first bytes (`stixproto.task.files.read_bytes`)."""
    command: str | None = None
    """A shell command to run as the task (None with no file: a task of resource flags)."""
    pipeline: bool = False
    """Several documents are a pipeline (`launch --dryrun`, `jobs launch`), not an error."""
    envs: dict[str, str] = {}
    """`--env-file` then `--env` values, as the client's shell gave them."""
    secrets: dict[str, str] = {}
    resources: ResourceFlags | None = None
    name: str | None = None
    """`--name`: every task's name."""


class FakePreempt(Msg, tag="fake_preempt", frozen=True):
    """TESTS AND BENCHMARKS ONLY: make nodes of the `fake` provider vanish, as a spot
    preemption does; refused unless the daemon enabled that provider."""

    clusters: list[str] = []
    count: b.PreemptCount = 0
    """Also preempt this many running fake clusters picked at random."""


class ServeUp(Msg, tag="serve_up", frozen=True):
    """`serve up`: start a service from a task with a `service:` section."""

    task: Task
    name: str | None = None
    """None: the task's name, else a generated one."""
    config: list[ConfigLayer] = []


class ServeUpdate(Msg, tag="serve_update", frozen=True):
    """`serve update`: roll the service to a new version of its task."""

    name: str
    task: Task
    mode: Literal["rolling", "blue_green"] = "rolling"
    config: list[ConfigLayer] = []


class ServeStatus(Msg, tag="serve_status", frozen=True):
    names: list[str] = []
    """None given: every service."""
    all_users: bool = False
    """`-u`: every user's, with their names (else only the caller's own)."""


class ServeLogs(Msg, tag="serve_logs", frozen=True):
    """A replica's job log, the service's decisions (`controller`), or its balancer's log."""

    name: str
    replica_id: b.JobId | None = None
    target: Literal["replica", "controller", "load_balancer"] = "replica"
    follow: bool = True
    tail: b.Lines | None = None


class ServeDown(Msg, tag="serve_down", frozen=True):
    names: list[str] = []
    all: bool = False
    purge: bool = False
    """Forget a service (and its replicas) whose teardown failed."""
    replica_id: b.JobId | None = None
    """Only this replica of the one named service (a new one replaces it)."""


# -- storage (stixd/control/storage_cmds.py) ----------------------------------------------------


class StorageLs(Msg, tag="storage_ls", frozen=True):
    """The storages and their buckets, each looked at in its store now. A name may be a glob
    (``"imagenet*"``: the caller's own storages it matches)."""

    names: list[str] = []
    missing_ok: bool = False
    """A name matching none is told in the reply's ``failed``, not refused."""


class StorageDelete(Msg, tag="storage_delete", frozen=True):
    """Delete the buckets stix created for these storages (``all``: every one of the caller's)
    and forget the storages; each name (or glob) failing is told in ``failed``, the rest go."""

    names: list[str] = []
    all: bool = False


class StorageRecord(msgspec.Struct, frozen=True):
    name: str
    store: str
    bucket: str
    status: str
    """SkyPilot's state (INIT, INIT_FAILED, UPLOAD_FAILED, READY) or DELETING."""
    mode: str
    persistent: bool
    created: bool
    """stix created the bucket (only then does `storage delete` delete it)."""
    missing: bool
    """The bucket was not there when looked at: deleted outside stix."""
    source: str = ""
    created_at: float = 0.0
    owner: str | None = None
    workspace: str | None = None
    last_error: str | None = None
    updated_at: float = 0.0
    clusters: list[str] = []
    """The clusters (launches) using it (SkyPilot's COMMAND column: the last use)."""


class StorageList(Msg, tag="storage_list", frozen=True):
    storages: list[StorageRecord]
    deleted: list[str] = []
    skipped: list[str] = []
    """With ``all``: storages left alone, each with why (a bucket stix did not create)."""
    failed: list[str] = []
    """``NAME: why`` of each name that matched nothing or could not be deleted."""


# -- users and tokens (stixd/control/identity_cmds.py) -----------------------------------------

RoleName = Literal["admin", "user", "viewer"]
"""SkyPilot's roles: a viewer reads, a user also acts on their own and shared objects, an admin
also manages users, tokens and workspaces."""


class UsersCreate(Msg, tag="users_create", frozen=True):
    name: str
    role: RoleName = "user"


class UsersList(Msg, tag="users_list", frozen=True):
    pass


class WorkspacesList(Msg, tag="workspaces_list", frozen=True):
    """`stixctl workspaces ls`: the server's workspaces the caller may see."""


# -- workspaces an admin defines (stixd/control/workspaces.py) --------------------------------

_WORKSPACE_NAME = r"[a-z0-9][a-z0-9_-]{0,62}"
"""As the config's `workspaces:` keys (`stixd.config.WorkspaceName`), and infra names."""


def _check_key(name: str, kind: str) -> None:
    if not re.fullmatch(_WORKSPACE_NAME, name):
        raise InvalidRequest(
            f"{kind} name {names.shown(name)} is not valid: lowercase letters, digits, '-' and "
            "'_', starting with a letter or digit, at most 63 characters"
        )


class WorkspaceSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A workspace's definition, as one entry of the config's `workspaces:`."""

    allowed_clouds: Annotated[list[str], msgspec.Meta(min_length=1, max_length=64)] | None = None
    """None: any infra the server allows."""
    private: bool = False
    allowed_users: Annotated[list[str], msgspec.Meta(max_length=10_000)] = []
    """Who may see and use it when private (admins always may)."""

    def __post_init__(self) -> None:
        for infra in self.allowed_clouds or ():
            _check_key(infra, "infra")
        for user in self.allowed_users:
            names.check_new(user, "user")


class WorkspacesCreate(Msg, tag="workspaces_create", frozen=True):
    name: str
    spec: WorkspaceSpec = WorkspaceSpec()

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_key(self.name, "workspace")


class WorkspacesUpdate(Msg, tag="workspaces_update", frozen=True):
    """Replace the workspace's definition with `spec` (SkyPilot's `workspaces update`)."""

    name: str
    spec: WorkspaceSpec = WorkspaceSpec()

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_key(self.name, "workspace")


class WorkspacesDelete(Msg, tag="workspaces_delete", frozen=True):
    name: str

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_key(self.name, "workspace")


class UsersDelete(Msg, tag="users_delete", frozen=True):
    """Remove a user and revoke every token of theirs."""

    name: str


class UsersRole(Msg, tag="users_role", frozen=True):
    name: str
    role: RoleName


class TokensCreate(Msg, tag="tokens_create", frozen=True):
    user: str
    expires_days: b.Days | None = None
    """None: the token never expires."""
    name: str | None = None
    """A label to tell the user's tokens apart in `tokens ls`."""


class TokensList(Msg, tag="tokens_list", frozen=True):
    user: str | None = None
    """Only this user's tokens (None: everyone's)."""


class TokensRevoke(Msg, tag="tokens_revoke", frozen=True):
    token_id: str


class TokensRotate(Msg, tag="tokens_rotate", frozen=True):
    """A new secret for the token (same id, user and lifetime); the old one is dead at once."""

    token_id: str


# -- volumes (`stixctl volumes`, SkyPilot's `sky volumes`) ------------------------------------


class VolumesApply(Msg, tag="volumes_apply", frozen=True):
    volume: VolumeConfig
    """Checked as it is decoded (`stixproto.volumes`)."""
    config: list[ConfigLayer] = []


class VolumesList(Msg, tag="volumes_list", frozen=True):
    all_users: bool = False


class VolumesDelete(Msg, tag="volumes_delete", frozen=True):
    names: list[str] = []
    all: bool = False


class VolumeRecord(msgspec.Struct, frozen=True):
    name: str
    type: str
    infra: str
    status: str
    """READY, IN_USE (a live cluster mounts it) or NOT_READY."""
    size_gb: int | None = None
    used_by: list[str] = []
    """The live clusters that mount it."""
    where: str = ""
    """Its folder on the nodes, or its claim on Kubernetes."""
    created_at: float = 0.0
    user: str | None = None
    workspace: str | None = None
    error: str | None = None
    use_existing: bool = False
    is_ephemeral: bool = False
    """Made by a launch for its cluster (the one in ``used_by``) and removed at its `down`."""


class VolumeList(Msg, tag="volume_list", frozen=True):
    volumes: list[VolumeRecord]


Request = (
    VolumesApply
    | VolumesList
    | VolumesDelete
    | ServeUp
    | ServeUpdate
    | ServeStatus
    | ServeLogs
    | ServeDown
    | JobsLaunch
    | PoolApply
    | PoolStatusReq
    | PoolDown
    | JobsQueue
    | JobsCancel
    | JobsLogs
    | Launch
    | Exec
    | Status
    | Queue
    | Logs
    | Cancel
    | Stop
    | Start
    | Down
    | Autostop
    | CostReportReq
    | Check
    | Events
    | Leaks
    | PlanRequest
    | SshPools
    | NodeShell
    | ShowGpus
    | CatalogUpdate
    | CatalogStatus
    | DaemonStatus
    | Shutdown
    | FakePreempt
    | ReadTask
    | ApiServe
    | ApiStop
    | ApiInfo
    | UploadPlan
    | UploadFiles
    | UsersCreate
    | UsersList
    | UsersDelete
    | UsersRole
    | TokensCreate
    | TokensList
    | TokensRevoke
    | TokensRotate
    | WorkspacesList
    | WorkspacesCreate
    | WorkspacesUpdate
    | WorkspacesDelete
    | StorageLs
    | StorageDelete
)

# -- stream events ---------------------------------------------------------------------------


class Progress(Msg, tag="progress", frozen=True):
    message: str


class LogChunk(Msg, tag="log", frozen=True):
    data: str


class JobSubmitted(Msg, tag="job_submitted", frozen=True):
    cluster: str
    job_id: int


class ManagedJobRows(Msg, tag="managed_job_rows", frozen=True):
    """A chunk of a streamed `jobs queue` (`JobsQueue.stream`), in the listing's order."""

    jobs: list[ManagedJobRecord]


class ClusterRows(Msg, tag="cluster_rows", frozen=True):
    """A chunk of a streamed `status` (`Status.stream`), in the listing's order."""

    clusters: list[ClusterRecord]


# -- records inside replies ------------------------------------------------------------------


class ClusterRecord(msgspec.Struct, frozen=True):
    name: str
    status: str
    infra: str
    num_nodes: int
    resources: str
    launched_at: float
    updated_at: float
    autostop_idle_minutes: float | None = None
    autostop_down: bool = False
    autostop_at: float | None = None
    hourly_price: float = 0.0
    head_ip: str | None = None
    last_error: str | None = None
    owner: str | None = None
    """`job ID` or `pool NAME` when a managed job or pool keeps the cluster up (then `down`,
    `stop` and `autostop` leave it to them)."""
    ports: list[int] = []
    """The ports the cluster's launches asked to expose, reachable at ``head_ip``."""
    any_port: bool = False
    """Every port of the head node is reachable at ``head_ip`` (local: this machine)."""
    ports_host: str | None = None
    """Where the ports are reached when not at ``head_ip`` (a Kubernetes load balancer), for
    a status of one cluster; ``ports_note`` says why there is none yet (an address pending)."""
    ports_note: str | None = None
    activity: str | None = None
    """What is under way: `launching`, `stopping` or `terminating` (then `status` is INIT, as
    SkyPilot shows a cluster that may be live or down)."""
    user: str | None = None
    """Who made it (listings with `all_users`), and in which workspace."""
    workspace: str | None = None


class JobRecord(msgspec.Struct, frozen=True):
    cluster: str
    job_id: int
    name: str | None
    status: str
    submitted_at: float
    started_at: float | None = None
    ended_at: float | None = None
    exit_code: int | None = None
    resources: str = ""
    failure_reason: str | None = None
    """Set when the daemon cannot run the job's row (quarantined): why, and how to remove it."""
    failed_rank: int | None = None
    """A failed job: the rank whose failure ended the gang."""
    user: str | None = None
    """Who owns the job's cluster (listings with `all_users`)."""


class EventRecord(msgspec.Struct, frozen=True):
    at: float
    kind: str
    id: str
    event: str
    from_state: str | None
    to_state: str | None
    why: str


class CostRow(msgspec.Struct, frozen=True):
    name: str
    status: str
    infra: str
    num_nodes: int
    resources: str
    launched_at: float
    duration_seconds: float
    hourly_price: float
    cost: float


class LeakRecord(msgspec.Struct, frozen=True):
    """A cloud resource carrying stix's tags for this user that no live cluster owns."""

    infra: str
    kind: str
    """``instance`` or ``security-group``."""
    id: str
    region: str
    cluster: str
    """Its ``stix-cluster`` tag."""
    age_seconds: float | None = None
    instance_type: str | None = None
    state: str | None = None
    spot: bool = False
    hourly_price: float | None = None
    """From the catalog; None when the catalog does not price it."""


NOT_SUPPORTED = "not supported in this build yet"
"""The `reason` of an infra SkyPilot knows and this build has no provider for."""


class InfraCheck(msgspec.Struct, frozen=True):
    infra: str
    enabled: bool
    reason: str
    details: list[str] = []
    """A line per part checked on its own (a Kubernetes context each)."""


# -- final replies ---------------------------------------------------------------------------


class ReplicaRecord(msgspec.Struct, frozen=True):
    service: str
    replica_id: int
    version: int
    status: str
    endpoint: str | None = None
    """`http://host:port` of its service port, once its cluster is up."""
    launched_at: float = 0.0
    infra: str | None = None
    resources: str = ""
    cluster: str | None = None
    spot: bool = False
    failure_reason: str | None = None


class ServiceRecord(msgspec.Struct, frozen=True):
    name: str
    status: str
    version: int
    created_at: float
    uptime_since: float | None = None
    """When a replica first became READY (None: never yet)."""
    endpoint: str | None = None
    policy: str = ""
    """The replica policy in words (`Fixed 2 replicas`, `Autoscaling from 1 to 3 replicas`)."""
    load_balancing_policy: str = "least_load"
    replicas: list[ReplicaRecord] = []
    active_versions: list[int] = []
    failure_reason: str | None = None
    user: str | None = None
    """Who made it (listings with `all_users`), and in which workspace."""
    workspace: str | None = None


class ServiceList(Msg, tag="services", frozen=True):
    services: list[ServiceRecord]


class ServiceUp(Msg, tag="service_up", frozen=True):
    name: str
    version: int
    endpoint: str | None = None
    status: str = ""


class OkReply(Msg, tag="ok", frozen=True):
    message: str = ""


class ErrorReply(Msg, tag="error", frozen=True):
    code: str
    message: str


class ClusterList(Msg, tag="clusters", frozen=True):
    clusters: list[ClusterRecord]
    leaks: list[LeakRecord] = []
    """What the daemon's last leak scan found (shown under the table, not in --json)."""
    leaks_scanned_at: float | None = None
    hidden: int = 0
    """Live clusters left out by `Status.limit`."""


class LeakList(Msg, tag="leak_list", frozen=True):
    leaks: list[LeakRecord]
    """What the scan found (before any was terminated)."""
    terminated: list[str] = []
    """Ids terminated or deleted by this request."""
    skipped: list[str] = []
    """Infras not looked at, each with why (``aws: no AWS credentials ...``)."""
    scanned_at: float = 0.0


class ManagedJobRecord(msgspec.Struct, frozen=True):
    job_id: int
    name: str
    status: str
    submitted_at: float
    resources: str = ""
    started_at: float | None = None
    ended_at: float | None = None
    job_duration: float = 0.0
    """Seconds the task ran (RUNNING), summed over recoveries and restarts."""
    recoveries: int = 0
    restarts: int = 0
    """Reruns after the task's own code failed (max_restarts_on_errors)."""
    failure_reason: str | None = None
    cluster: str | None = None
    task: int = 0
    tasks: int = 1
    recovery_reasons: list[str] = []
    pool: str | None = None
    task_statuses: list[str] = []
    """Per task of a pipeline: what became of it (later tasks of a failed one: CANCELLED)."""
    infra: str | None = None
    """Where the latest run went (`fake/fake-2`, `aws/us-east-1`, `local`)."""
    run_infras: list[str] = []
    """Where each run went, oldest first (the last 20): recoveries move it by the strategy."""
    user: str | None = None
    """Who made it (listings with `all_users`), and in which workspace."""
    workspace: str | None = None


class ManagedJobList(Msg, tag="managed_jobs", frozen=True):
    jobs: list[ManagedJobRecord]
    hidden: int = 0
    """Jobs left out by `JobsQueue.limit`."""


class ManagedLaunched(Msg, tag="managed_launched", frozen=True):
    job_id: int
    name: str
    status: str
    job_ids: list[int] = []
    """Every job submitted (`--num-jobs N` on a pool); `job_id` is the first."""
    failure: str | None = None
    """A followed job that failed: why (its `failure_reason`)."""


class JobList(Msg, tag="jobs", frozen=True):
    jobs: list[JobRecord]


class LaunchResult(Msg, tag="launched", frozen=True):
    cluster: str
    job_id: int | None = None
    job_status: str | None = None
    exit_code: int | None = None
    failed_rank: int | None = None
    failure: str | None = None
    """A failed job: what failed it, in a few words (`rank 1 exited with code 7`)."""


class LogsEnd(Msg, tag="logs_end", frozen=True):
    cluster: str
    job_id: int
    status: str
    exit_code: int | None = None
    failed_rank: int | None = None
    failure: str | None = None


class Cancelled(Msg, tag="cancelled", frozen=True):
    job_ids: list[int]


class CostReport(Msg, tag="cost_report_reply", frozen=True):
    rows: list[CostRow]
    total: float


class CheckReply(Msg, tag="check_reply", frozen=True):
    infras: list[InfraCheck]


class EventList(Msg, tag="event_list", frozen=True):
    events: list[EventRecord]


class Table(Msg, tag="table", frozen=True):
    """A report the daemon rendered (`text`) with its rows as plain data for --json."""

    text: str
    rows: list[dict[str, Any]]
    ok: bool = True


class ShellCommand(Msg, tag="shell_command", frozen=True):
    """A command the client runs itself (exec), with the working directory and env to add."""

    argv: list[str]
    cwd: str | None = None
    env: dict[str, str] = {}


class PlanReply(Msg, tag="plan_reply", frozen=True):
    text: str
    json: str
    no_fit_reason: str | None = None
    choice: str | None = None
    """`launch` plans: what the launch would provision (`Launch.plan_choice`)."""
    cluster_status: str | None = None
    """`launch` plans: the cluster's state, None when it does not exist (or is terminated)."""


class TaskRead(Msg, tag="task_read", frozen=True):
    """The answer to `ReadTask`: its tasks (one, unless it asked for a pipeline), checked, their
    local paths still as written."""

    dag: Dag


class DaemonInfo(Msg, tag="daemon_info", frozen=True):
    pid: int
    version: str
    protocol: int
    home: str
    started_at: float
    actors: dict[str, int]


class UploadNeeds(Msg, tag="upload_needs", frozen=True):
    target: str
    """The path on the server to put in the task instead of the client's."""
    needed: list[str]
    """Kept files the server lacks or holds another version of (size or mtime differ)."""


class ApiServerInfo(Msg, tag="api_server_info", frozen=True):
    version: str
    protocol: int
    user: str
    """The caller as the server sees it (the local owner on the socket)."""
    role: str
    serving: str | None = None
    """The URL the daemon serves the HTTP API on, or None when it does not."""


class UserRecord(msgspec.Struct, frozen=True):
    name: str
    role: str
    created_at: float
    tokens: int = 0
    """Tokens of theirs that still work (not revoked, not expired)."""


class TokenRecord(msgspec.Struct, frozen=True):
    id: str
    """Not secret: the token reads `stix_<id>_<secret>`, so logs and `tokens ls` can name it."""
    user: str
    created_at: float
    name: str | None = None
    expires_at: float | None = None
    last_used_at: float | None = None
    """Updated at most once a minute."""
    revoked_at: float | None = None
    rotated_at: float | None = None


class UserList(Msg, tag="user_list", frozen=True):
    users: list[UserRecord]


class TokenList(Msg, tag="token_list", frozen=True):
    tokens: list[TokenRecord]


class WorkspaceRecord(msgspec.Struct, frozen=True):
    name: str
    private: bool = False
    allowed_clouds: list[str] | None = None
    """None: any infra the server allows."""
    allowed_users: list[str] = []
    """Of a private workspace (admins may use any)."""
    clusters: int = 0
    """Its live clusters."""


class WorkspaceList(Msg, tag="workspace_list", frozen=True):
    workspaces: list[WorkspaceRecord]


class TokenIssued(Msg, tag="token_issued", frozen=True):
    """A new (or rotated) token: `secret` is shown this once and stored nowhere."""

    token: TokenRecord
    secret: str


Reply = (
    OkReply
    | VolumeList
    | ServiceList
    | ServiceUp
    | ManagedJobList
    | ManagedLaunched
    | ErrorReply
    | ClusterList
    | JobList
    | LaunchResult
    | LogsEnd
    | Cancelled
    | CostReport
    | CheckReply
    | LeakList
    | EventList
    | Table
    | PlanReply
    | ShellCommand
    | DaemonInfo
    | TaskRead
    | ApiServerInfo
    | UploadNeeds
    | UserList
    | TokenList
    | TokenIssued
    | WorkspaceList
    | StorageList
)
StreamEvent = Progress | LogChunk | JobSubmitted | ManagedJobRows | ClusterRows
ServerMessage = HelloOk | Reply | StreamEvent
ClientMessage = Hello | Request

FINAL_REPLIES: tuple[type, ...] = Reply.__args__


# -- names -----------------------------------------------------------------------------------

NEW_NAMES: dict[type[Msg], tuple[str, str]] = {
    Launch: ("cluster", "cluster"),
    PlanRequest: ("cluster", "cluster"),
    JobsLaunch: ("name", "managed job"),
    PoolApply: ("name", "pool"),
    ServeUp: ("name", "service"),
    UsersCreate: ("name", "user"),
    TokensCreate: ("name", "token"),
}
"""Fields that name something the request may create: SkyPilot's rule (`stixproto.names`)."""

REFERENCE_NAMES: dict[type[Msg], tuple[tuple[str, str], ...]] = {
    Exec: (("cluster", "cluster"),),
    Status: (("clusters", "cluster"),),
    Queue: (("clusters", "cluster"),),
    Logs: (("cluster", "cluster"),),
    Cancel: (("cluster", "cluster"),),
    Stop: (("clusters", "cluster"),),
    Start: (("clusters", "cluster"),),
    Down: (("clusters", "cluster"),),
    Autostop: (("clusters", "cluster"),),
    Events: (("name", "cluster or job"),),
    NodeShell: (("cluster", "cluster"),),
    SshPools: (("pool", "ssh pool"),),
    JobsLaunch: (("pool", "pool"),),
    PoolStatusReq: (("names", "pool"),),
    PoolDown: (("names", "pool"),),
    JobsCancel: (("name", "managed job"), ("pool", "pool")),
    JobsLogs: (("name", "managed job"),),
    FakePreempt: (("clusters", "cluster"),),
    ServeUpdate: (("name", "service"),),
    ServeStatus: (("names", "service"),),
    ServeLogs: (("name", "service"),),
    ServeDown: (("names", "service"),),
    UsersDelete: (("name", "user"),),
    UsersRole: (("name", "user"),),
    TokensCreate: (("user", "user"),),
    TokensList: (("user", "user"),),
    TokensRevoke: (("token_id", "token"),),
    TokensRotate: (("token_id", "token"),),
    VolumesDelete: (("names", "volume"),),
    StorageLs: (("names", "storage"),),
    StorageDelete: (("names", "storage"),),
}
"""Fields that name something that exists, perhaps made by an earlier version under a name
the rule refuses: only a loose check, so it can still be listed and removed."""


def check_names(msg: Msg) -> None:
    new = NEW_NAMES.get(type(msg))
    if new is not None:
        value = getattr(msg, new[0])
        if value is not None:
            names.check_new(value, new[1])
    for field, kind in REFERENCE_NAMES.get(type(msg), ()):
        value = getattr(msg, field)
        for name in [value] if isinstance(value, str) else value or ():
            names.check_reference(name, kind)
