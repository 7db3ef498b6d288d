"""The phases a replica runs in its helper task: launch its cluster and submit the service's
command (adopting what a launch before a daemon restart made), watch the command and the
cluster while probing readiness, tear the cluster down.

Each phase ends by telling the actor what happened (`Up`, `LaunchFailed`, `Probed`, `Exited`,
`Lost`, `TornDown`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import msgspec

from stixd.actors.asks import ask_cluster
from stixd.actors.cluster_retry import RetryLaunch
from stixd.actors.jobs_submit import infra_label, job_row_id
from stixd.actors.replica_address import await_address, reachable, url_of
from stixd.actors.service_rows import REPLICA, SERVICE, ReplicaSpec, ServiceSpec, replica_cluster
from stixd.actors.specs import (
    ClusterData,
    ClusterSpec,
    JobData,
    JobSpec,
    data_or_none,
    spec_or_none,
    state_of,
)
from stixd.config import DaemonConfig
from stixd.providers.abilities import AddressPending
from stixproto import messages as m
from stixproto.errors import ClusterNotFound, ProvisionError, StixError
from stixproto.states import ClusterStatus, JobStatus, ReplicaStatus
from stixproto.task import Task
from stixproto.task.model import Resources
from stixproto.task.resources import port_ranges
from stixproto.task.service import Probe, effective_probe

if TYPE_CHECKING:
    import aiohttp  # loaded by the first probe: a daemon serving nothing does not pay for it

    from stixd.actors.replica import ReplicaActor

PORT_ENV = "STIX_SERVE_PORT"
"""The port a replica's command serves on (the service's port, or one of its own where
replicas share this machine's network)."""
REPLICA_ID_ENV = "SKYPILOT_SERVE_REPLICA_ID"


@dataclass(frozen=True)
class Up:
    uid: str
    job_id: int
    url: str | None
    """None while its address is pending (``pending`` says why): `replica_address`."""
    infra: str
    resources: str
    pending: str | None = None


@dataclass(frozen=True)
class LaunchFailed:
    why: str


@dataclass(frozen=True)
class Waiting:
    """Its cluster's launch found no capacity (an SSH pool without a free host, a cloud
    without the instance) and retries: why, as the cluster's last error says."""

    why: str


@dataclass(frozen=True)
class Probed:
    ok: bool
    detail: str


@dataclass(frozen=True)
class Exited:
    why: str


@dataclass(frozen=True)
class Lost:
    why: str


@dataclass(frozen=True)
class TornDown:
    problem: str | None = None


async def _quiet(event: Any) -> None:
    """Launch progress goes to the replica's events, not to a client."""


async def stored_version(replica: ReplicaActor) -> tuple[Task, list[m.ConfigLayer]] | None:
    """The task of the replica's version as the service stored it, and the service's config
    layers; None if the service's row no longer has it."""
    row = await replica.app.store.get(SERVICE, replica.spec.service)
    spec = spec_or_none(row, ServiceSpec) if row is not None else None
    if spec is None:
        return None
    for v in spec.versions:
        if v.version == replica.spec.version:
            config = [msgspec.convert(c, m.ConfigLayer) for c in spec.config]
            return msgspec.convert(v.task, Task), config
    return None


def replica_task(replica: ReplicaActor, task: Task) -> Task:
    """The version's task as the replica's cluster runs it: with its id and port, that port
    opened where the infra opens ports, on spot or on demand as ordered."""
    envs = dict(task.envs or {})
    envs[REPLICA_ID_ENV] = str(replica.spec.replica_id)
    envs[PORT_ENV] = str(replica.spec.port)
    port = replica.spec.port
    res = with_spot(task.resources_or_default(), replica.spec.spot)
    if not any(low <= port <= high for low, high in port_ranges(res)):
        given = (
            res.ports if isinstance(res.ports, list) else [] if res.ports is None else [res.ports]
        )
        res = msgspec.structs.replace(res, ports=[*given, port])
    return msgspec.structs.replace(task, envs=envs, service=None, resources=res)


def with_spot(res: Resources, spot: bool) -> Resources:
    """``res`` on spot or on demand as the autoscaler ordered (its on-demand fallback mixes
    both), whatever the task or any of its alternatives says."""

    def one(r: Resources) -> Resources:
        if r.use_spot is None or r.use_spot == spot:
            return r
        return msgspec.structs.replace(r, use_spot=spot)

    return msgspec.structs.replace(
        res,
        use_spot=spot,
        any_of=None if res.any_of is None else [one(r) for r in res.any_of],
        ordered=None if res.ordered is None else [one(r) for r in res.ordered],
    )


async def launch(replica: ReplicaActor) -> None:
    """Bring the replica's cluster up with its command submitted (or adopt both).

    An on-demand replica's launch retries until capacity appears, as SkyServe launches its
    replicas: on an SSH pool whose hosts other clusters hold it waits (PROVISIONING) for one
    to be released. A spot replica fails instead, for the on-demand fallback to stand in."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(_tell_waits, replica)
        found: Up | LaunchFailed | None = await adopt(replica)
        if found is None:
            found = await _launch(replica)
        tg.cancel_scope.cancel()
    replica.tell(found)


async def _launch(replica: ReplicaActor) -> Up | LaunchFailed:
    loaded = await stored_version(replica)
    if loaded is None:
        return LaunchFailed(f"version {replica.spec.version} is no longer stored")
    task, config = replica_task(replica, loaded[0]), loaded[1]
    req = m.Launch(
        task=task,
        cluster=replica.cluster,
        detach=True,
        config=config,
        retry_until_up=not replica.spec.spot,
        owner=replica.spec.owner,
        workspace=replica.spec.workspace,
    )
    try:
        result = await ask_cluster(replica.app, replica.cluster, req, _quiet, create=True)
    except StixError as exc:
        return LaunchFailed(exc.message)
    if result.job_id is None:
        return LaunchFailed("the task has nothing to run")
    up = await _up(replica, result.job_id)
    return up if up is not None else LaunchFailed("its cluster went away as it came up")


async def _tell_waits(replica: ReplicaActor) -> None:
    """Until cancelled: each new round of the cluster's retried launch told to the actor."""
    told: int | None = None

    def new_round(row: Any) -> bool:
        data = data_or_none(row, ClusterData) if row is not None else None
        return data is not None and data.retry_round is not None and data.retry_round != told

    while True:
        row = await replica.app.watch.wait_for("cluster", replica.cluster, new_round)
        data = data_or_none(row, ClusterData) if row is not None else None
        assert data is not None  # new_round held
        told = data.retry_round
        replica.tell(Waiting(data.last_error or "no capacity yet"))


async def _up(replica: ReplicaActor, job_id: int) -> Up | LaunchFailed | None:
    row = await replica.app.store.get("cluster", replica.cluster)
    if row is None or row.terminal:
        return None
    data = data_or_none(row, ClusterData) or ClusterData()
    spec = spec_or_none(row, ClusterSpec) or ClusterSpec()
    if not data.uid or not data.nodes:
        return None
    url: str | None = None
    pending: str | None = None
    try:
        url = url_of(replica, reachable(replica, spec.provider, data.nodes[0]))
    except AddressPending as exc:  # waited for while STARTING
        pending = exc.message
    except ProvisionError as exc:
        return LaunchFailed(exc.message)
    return Up(
        uid=str(data.uid),
        job_id=job_id,
        url=url,
        infra=infra_label(spec.provider, spec.pool),
        resources=spec.resources,
        pending=pending,
    )


async def adopt(replica: ReplicaActor) -> Up | LaunchFailed | None:
    """The command a launch before a restart already submitted on the replica's cluster."""
    app = replica.app
    row = await app.store.get("cluster", replica.cluster)
    if row is None or row.terminal:
        return None
    if (data_or_none(row, ClusterData) or ClusterData()).pending_launch:
        row = await app.watch.wait_for(
            "cluster",
            replica.cluster,
            lambda r: (
                r is None or not (data_or_none(r, ClusterData) or ClusterData()).pending_launch
            ),
        )
        if row is None or row.terminal:
            return None
    uid = (data_or_none(row, ClusterData) or ClusterData()).uid
    jobs = [
        spec.job_id
        for j in await app.store.rows("job", parent=uid)
        if (spec := spec_or_none(j, JobSpec)) is not None
    ]
    return await _up(replica, max(jobs)) if jobs else None


async def watch(replica: ReplicaActor) -> None:
    """Until cancelled: tell the actor when its command ends or its cluster is lost, and
    probe readiness every probe interval (at once when told to, `ReplicaActor.probe_now`)."""
    data = replica.data
    assert data.cluster_uid is not None and data.job_id is not None
    job_id = job_row_id(replica.cluster, data.cluster_uid, data.job_id)
    probe = await _probe_spec(replica)
    async with anyio.create_task_group() as tg:
        tg.start_soon(_watch_job, replica, job_id)
        tg.start_soon(_watch_cluster, replica, data.cluster_uid)
        tg.start_soon(_probe_loop, replica, data.url, probe)


async def _probe_spec(replica: ReplicaActor) -> Probe:
    loaded = await stored_version(replica)
    service = loaded[0].service if loaded is not None else None
    return effective_probe(service) if service is not None else Probe()


async def _watch_job(replica: ReplicaActor, row_id: str) -> None:
    row = await replica.app.watch.wait_for("job", row_id, lambda r: r is None or r.terminal)
    if row is None:
        replica.tell(Exited("its command's record is gone"))
        return
    data = data_or_none(row, JobData) or JobData()
    code = f" with code {data.exit_code}" if data.exit_code is not None else ""
    state = state_of(row, JobStatus)
    replica.tell(Exited(f"its command ended {state.value if state else row.state}{code}"))


async def _watch_cluster(replica: ReplicaActor, uid: str) -> None:
    def lost(r: Any) -> bool:
        if r is None or r.terminal:
            return True
        data = data_or_none(r, ClusterData) or ClusterData()
        return data.uid != uid or state_of(r, ClusterStatus) is not ClusterStatus.UP

    row = await replica.app.watch.wait_for("cluster", replica.cluster, lost)
    why = "its cluster is gone" if row is None or row.terminal else f"its cluster is {row.state}"
    replica.tell(Lost(why))


def probe_period(state: ReplicaStatus, config: DaemonConfig) -> float:
    """Seconds to the next probe: short while the replica is STARTING (its server may come up
    any moment, and only a passed probe puts it in rotation), the probe period after. A failed
    probe within the initial delay costs nothing, so probing early is free (SkyServe probes a
    starting replica from the first round too, every 10 s)."""
    if state is ReplicaStatus.STARTING:
        return min(config.serve_starting_probe_seconds, config.serve_probe_seconds)
    return config.serve_probe_seconds


async def _probe_loop(replica: ReplicaActor, url: str | None, probe: Probe) -> None:
    config = replica.app.config.daemon
    if url is None:
        url = await await_address(replica)
    import aiohttp

    async with aiohttp.ClientSession() as session:
        while True:
            ok, detail = await probe_once(session, url, probe)
            replica.tell(Probed(ok, detail))
            period = config.serve_probe_seconds if ok else probe_period(replica.state, config)
            with anyio.move_on_after(period):
                await replica.probe_wanted.wait()
            replica.probe_wanted = anyio.Event()


async def probe_once(session: aiohttp.ClientSession, url: str, probe: Probe) -> tuple[bool, str]:
    """One readiness probe: (passed, what happened)."""
    import aiohttp  # the session's: loaded already

    timeout = aiohttp.ClientTimeout(total=probe.timeout_seconds)
    started = time.monotonic()
    try:
        async with session.request(
            probe.method,
            url + probe.path,
            json=probe.post_data,
            headers=probe.headers,
            timeout=timeout,
        ) as resp:  # the status is the answer: a body is not read (it may never end)
            ok = 200 <= resp.status < 300
            return ok, f"HTTP {resp.status} from {probe.method} {probe.path}"
    except TimeoutError:
        return False, f"no answer within {probe.timeout_seconds:g}s"
    except (aiohttp.ClientError, ValueError, OSError) as exc:  # a replica's garbage fails alone
        took = time.monotonic() - started
        return False, f"{type(exc).__name__} after {took:.1f}s"


async def tear_down(replica: ReplicaActor) -> None:
    """Tear the replica's cluster down and tell the actor how it went."""
    replica.tell(TornDown(await down_cluster(replica)))


async def down_cluster(replica: ReplicaActor) -> str | None:
    """Tear the replica's cluster down (shielded: a restart must not leave it half done);
    None, or why it could not be."""
    with anyio.CancelScope(shield=True):
        row = await replica.app.store.get("cluster", replica.cluster)
        if row is None or row.terminal:
            return None
        try:
            await ask_cluster(
                replica.app, replica.cluster, m.Down(clusters=[replica.cluster]), _quiet
            )
        except ClusterNotFound:
            return None  # torn down meanwhile (a teardown a daemon restart finished)
        except StixError as exc:
            after = await replica.app.store.get("cluster", replica.cluster)
            return None if after is None or after.terminal else exc.message
    return None


async def wake_waiting(replica: ReplicaActor) -> None:
    """The replica's cluster is down, its hosts (an SSH pool's) free again: the service's
    replicas whose launch waits for capacity look again now, not at their next retry, which
    may be minutes away (the one that replaces this replica, most often)."""
    app = replica.app
    for row in await app.store.rows(REPLICA, parent=replica.spec.service):
        spec = spec_or_none(row, ReplicaSpec)
        if spec is None or state_of(row, ReplicaStatus) is not ReplicaStatus.PROVISIONING:
            continue
        cluster = replica_cluster(spec.service, spec.replica_id)
        found = await app.store.get("cluster", cluster)
        data = data_or_none(found, ClusterData) if found is not None else None
        # only between two rounds (a round is counted); the cluster drops one while a round runs
        if data is not None and data.retry_round is not None:
            app.supervisor.tell("cluster", cluster, RetryLaunch(early=True))


def cluster_of(service: str, replica_id: int) -> str:
    return replica_cluster(service, replica_id)
