"""Typed state below the row (issue 14, must-hold 5).

Each actor kind's spec and data are Structs (`stixd.actors.specs`), decoded once when its actor
is built: a row written by an earlier version (keys missing) still loads with the defaults the
old code read, a field of the wrong type quarantines the row through that same decode, and
what an actor writes is what it reads back. States are compared as their enums, never as text.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from stixd.actors import KINDS, factory_for
from stixd.actors.cluster import ClusterActor
from stixd.actors.job import JobActor
from stixd.actors.job_pool import JobPoolActor
from stixd.actors.managed_job import ManagedJobActor
from stixd.actors.replica import ReplicaActor
from stixd.actors.service import ServiceActor
from stixd.actors.service_rows import (
    ReplicaData,
    ReplicaSpec,
    ServiceData,
    ServiceSpec,
    ServiceVersion,
)
from stixd.actors.specs import (
    Autostop,
    BucketMount,
    ClusterData,
    ClusterSpec,
    JobData,
    JobPoolData,
    JobPoolSpec,
    JobSpec,
    ManagedJobData,
    ManagedJobSpec,
    MountKeys,
    PendingLaunch,
    encode,
    state_of,
)
from stixd.actors.storage import StorageActor, StorageData
from stixd.actors.volume import VolumeActor, VolumeData, VolumeSpec
from stixd.control import handlers, jobs_cmds
from stixd.runtime.actor import Actor
from stixd.serve.seams import ScalerMemory
from stixd.storage.plan import StorageSpec
from stixd.store.db import Row
from stixproto.errors import InternalError
from stixproto.states import ClusterStatus, JobStatus, ManagedJobStatus, PoolStatus
from tests.app_support import app_on_store

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[1]

NODE = {
    "rank": 0,
    "ip": "127.0.0.1",
    "status": "RUNNING",
    "agent_address": "/tmp/agent.sock",
    "workdir": "/tmp/w",
    "home": "/tmp/h",
}
ACTORS: dict[str, Any] = {  # each kind's actor class, built as `(row, app)`
    "cluster": ClusterActor,
    "job": JobActor,
    "managed_job": ManagedJobActor,
    "job_pool": JobPoolActor,
    "service": ServiceActor,
    "replica": ReplicaActor,
    "volume": VolumeActor,
    "storage": StorageActor,
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _row(kind: str, spec: dict[str, Any], data: dict[str, Any]) -> Row:
    """A live row of `kind` as it is stored, with these spec and data columns."""
    if kind == "job":
        return Row(kind="job", id="c1/ab12/1", parent="ab12", state="RUNNING", version=0,
                   spec=spec, data=data)  # fmt: skip
    if kind == "replica":
        return Row(kind="replica", id="c1/1", parent="c1", state="READY", version=0,
                   spec=spec, data=data)  # fmt: skip
    state = {
        "cluster": "UP",
        "managed_job": "RUNNING",
        "job_pool": "READY",
        "service": "READY",
        "volume": "READY",
        "storage": "READY",
    }[kind]
    return Row(kind=kind, id="7" if kind == "managed_job" else "c1", state=state, version=0,
               spec=spec, data=data)  # fmt: skip


# rows as earlier versions of stix wrote them: only the keys those versions knew
EARLIER: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "cluster": (
        {"provider": "local", "num_nodes": 1, "resources": "1x local"},
        {"uid": "ab12", "next_job_id": 3, "nodes": [NODE], "autostop": None},
    ),
    "job": (
        {
            "cluster": "c1",
            "uid": "ab12",
            "job_id": 1,
            "provider": "local",
            "nodes": [NODE],
            "submit": {"job_id": 1, "run": "true"},
        },
        {"submitted_at": None},
    ),
    "managed_job": (
        {"name": "train", "tasks": [{"run": "true"}], "submitted_at": 1.5e9},
        {"task": 0, "run": 1},
    ),
    "job_pool": ({"workers": 2, "task": {"run": "true"}}, {"claims": {"c1-0": 7}}),
    "service": ({"versions": [{"version": 1, "task": {"run": "x"}}]}, {"version": 1}),
    "replica": ({"service": "c1", "replica_id": 1, "version": 1, "port": 8080}, {}),
    "volume": ({"volume": {"name": "c1", "type": "k8s-hostpath", "infra": "local"}}, {}),
    "storage": ({"name": "c1", "store": "s3", "bucket": "c1"}, {}),
}


async def test_a_row_written_by_an_earlier_version_loads_with_the_defaults_it_meant(
    tmp_path: Path,
) -> None:
    async with app_on_store(tmp_path) as app:
        for kind, (spec, data) in EARLIER.items():
            stored = await app.store.insert(_row(kind, spec, data), "created")
            row = await app.store.get(kind, stored.id)
            assert row is not None
            actor: Actor = ACTORS[kind](row, app)
            assert isinstance(actor.spec, ACTORS[kind].spec_type)
            assert isinstance(actor.data, ACTORS[kind].data_type)
        crow = await app.store.get("cluster", "c1")
        assert crow is not None
        cluster = ClusterActor(crow, app)
        assert cluster.spec.pool is None and cluster.spec.placement is None
        assert cluster.data.pending_launch is None and cluster.data.config_layers == []
        assert cluster.data.next_job_id == 3 and cluster.data.active_seconds == 0.0
        managed = await app.store.get("managed_job", "7")
        assert managed is not None
        job = ManagedJobActor(managed, app)
        assert (job.spec.num_jobs, job.spec.job_rank, job.spec.pool) == (1, 0, None)
        assert job.data.recoveries == 0 and job.data.run_infras == []
        pool = await app.store.get("job_pool", "c1")
        assert pool is not None
        assert JobPoolActor(pool, app).data.failed == {}
        # the listings read the same rows through the same Structs
        record = handlers.cluster_record(cluster.row)
        assert (record.infra, record.num_nodes, record.autostop_idle_minutes) == ("local", 1, None)
        assert jobs_cmds.record(managed).cluster == "train-7"
        assert jobs_cmds.record(managed).tasks == 1
        jrow = await app.store.get("job", "c1/ab12/1")
        assert jrow is not None and handlers.job_record(jrow).resources == ""


async def test_a_row_with_no_spec_or_data_at_all_is_a_cluster_never_launched(
    tmp_path: Path,
) -> None:
    """`launch` makes the row before its first write (`asks.ask_cluster`)."""
    async with app_on_store(tmp_path) as app:
        row = Row(kind="cluster", id="new", state="TERMINATED", terminal=True, version=0)
        actor = ClusterActor(await app.store.insert(row, "created"), app)
        assert actor.spec == ClusterSpec() and actor.spec.provider == "local"
        assert actor.data == ClusterData()


WRONG: list[tuple[str, str, dict[str, Any], str]] = [
    # kind, column, value, where the decode says the fault is
    ("cluster", "spec", {"provider": 5}, "$.provider"),
    ("cluster", "data", {"autostop": {"idle_minutes": "soon"}}, "$.autostop.idle_minutes"),
    ("cluster", "data", {"pending_launch": {"job_id": 1}}, "$.pending_launch"),
    ("job", "spec", {**EARLIER["job"][0], "job_id": "one"}, "$.job_id"),
    ("job", "data", {"failed_rank": -1}, "$.failed_rank"),
    ("managed_job", "spec", {"name": "x", "num_jobs": 0}, "$.num_jobs"),
    ("managed_job", "data", {"recoveries": 10**30}, "$.recoveries"),
    ("job_pool", "spec", {"workers": 1e30}, "$.workers"),
    ("job_pool", "data", {"claims": {"c1-0": "seven"}}, "$.claims["),
]


@pytest.mark.parametrize("case", WRONG, ids=[f"{k}-{c}-{w}" for k, c, _, w in WRONG])
async def test_a_field_of_the_wrong_type_is_quarantined_by_the_decode_the_actor_uses(
    tmp_path: Path, case: tuple[str, str, dict[str, Any], str]
) -> None:
    kind, column, value, where = case
    spec, data = EARLIER[kind]
    row = _row(kind, value if column == "spec" else spec, value if column == "data" else data)
    async with app_on_store(tmp_path) as app:
        stored = await app.store.insert(row, "created")
        child = app.supervisor.spawn(stored, factory_for(app, kind))
        with anyio.fail_after(5):
            await child.finished.wait()
        problem = ACTORS[kind].row_problem(stored)
        assert problem is not None and problem.startswith(f"its {column} is not a {kind} {column}")
        assert f"at `{where}" in problem
        assert child.failed == f"the stored row is not valid: {problem}"
        held = await app.store.get(kind, stored.id)
        assert held is not None and held.quarantined == child.failed


def _full_records() -> dict[str, tuple[msgspec.Struct, msgspec.Struct]]:
    """Each kind's spec and data with every field away from its default."""
    launch = {"task": {"run": "true"}, "cluster": "c1", "retry_until_up": True}
    return {
        "cluster": (
            ClusterSpec(
                provider="fake",
                pool="p",
                num_nodes=2,
                resources="2x fake/r1 m",
                hourly_price=0.5,
                placement={"region": "r1", "ports": [8080]},
                avoid_regions=["r2"],
                ports=[8080],
                owner="alice",
                workspace="team",
            ),
            ClusterData(
                uid="ab12",
                next_job_id=4,
                launched_at=1.0,
                up_since=2.0,
                active_seconds=3.0,
                cost_accrued=0.25,
                priced_seconds=1.0,
                nodes=[NODE],
                machines={"0": {"type": "m", "disk_gb": 10}},
                autostop=Autostop(idle_minutes=5.0, down=True),
                idle_since=4.0,
                last_error="no capacity",
                losses=["preempted"],
                pending_launch=PendingLaunch(request=launch, job_id=4),
                retry_round=2,
                config_layers=[["--config", {"a": 1}]],
                launch_spec="s",
                launch_files="f",
                quarantine="why",
                mount_keys=[
                    MountKeys(
                        store="s3", bucket="b", dest="~/m", expires_at=9.0, renew_at=6.0, failures=1
                    )
                ],
                bucket_mounts=[
                    BucketMount(
                        dest="~/m",
                        name="b",
                        store="s3",
                        bucket="b",
                        prefix="p",
                        mode="MOUNT_CACHED",
                        flags={"--vfs-write-back": "3s"},
                    )
                ],
            ),
        ),
        "job": (
            JobSpec(
                cluster="c1",
                uid="ab12",
                job_id=1,
                name="n",
                provider="fake",
                resources="1x fake",
                nodes=[NODE],
                submit={"job_id": 1, "gang": True},
                owner="alice",
            ),
            JobData(
                submitted_at=1.0,
                started_at=2.0,
                ended_at=3.0,
                exit_code=3,
                failed_rank=0,
                reason="oom",
                quarantine="why",
            ),
        ),
        "managed_job": (
            ManagedJobSpec(
                name="train",
                tasks=[{"run": "a"}, {"run": "b"}],
                config=[{"source": "x", "values": {}}],
                submitted_at=1.0,
                resources="pool p",
                pool="p",
                num_jobs=3,
                job_rank=2,
                cluster="train-7",
                owner="alice",
                workspace="team",
            ),
            ManagedJobData(
                task=1,
                worker="p-0",
                attempt_at=1.0,
                cluster_uid="ab12",
                cluster_job_id=2,
                run=3,
                region="r1",
                lost_region="r2",
                run_infras=["fake/r1"],
                started_at=1.0,
                run_started_at=2.0,
                ended_at=3.0,
                job_duration=4.5,
                restarts=1,
                recoveries=2,
                recovery_reasons=["lost"],
                failure_reason="f",
                quarantine="q",
            ),
        ),
        "job_pool": (
            JobPoolSpec(
                workers=2,
                task={"run": "true"},
                config=[{"source": "x"}],
                owner="alice",
                workspace="team",
            ),
            JobPoolData(claims={"c1-0": 7}, waiting=[8, 9], failed={"c1-1": "why"}, quarantine="q"),
        ),
        "service": (
            ServiceSpec(
                versions=[ServiceVersion(version=1, task={"run": "x"}, mode="blue_green", at=1.0)],
                config=[{"source": "x"}],
                created_at=1.0,
                owner="alice",
                workspace="team",
            ),
            ServiceData(
                version=2,
                memory=ScalerMemory(last_round=1.0, target=2),
                next_replica=3,
                endpoint="http://127.0.0.1:1",
                uptime_since=2.0,
                broken_version=2,
                failure_reason="f",
                purge=True,
                quarantine="q",
            ),
        ),
        "replica": (
            ReplicaSpec(
                service="c1",
                replica_id=1,
                version=1,
                port=8080,
                spot=True,
                launched_at=1.0,
                accelerator="A100",
                owner="alice",
                workspace="team",
            ),
            ReplicaData(
                cluster_uid="ab12",
                job_id=1,
                url="http://127.0.0.1:8080",
                infra="local",
                resources="1x local",
                started_at=1.0,
                ready_since=2.0,
                ever_ready=True,
                probe_failures=1,
                not_ready_since=3.0,
                failure_reason="f",
                end="failed",
                purge=True,
                quarantine="q",
                replaceable=True,
            ),
        ),
        "volume": (
            VolumeSpec(
                volume={"name": "c1", "type": "k8s-pvc", "size": "2Gi"},
                owner="alice",
                workspace="team",
                cluster="c1",
            ),
            VolumeData(where="kube-a/default/c1-x", error="e", users=["c1"]),
        ),
        "storage": (
            StorageSpec(
                name="c1",
                store="s3",
                bucket="c1",
                prefix="sub",
                sources=["/tmp/src"],
                nested=True,
                external=True,
                persistent=False,
                mode="COPY",
                mount_cached={"--vfs-cache-max-size": "1G"},
                region="eu-west-1",
                owner="alice",
                workspace="team",
            ),
            StorageData(
                created=True,
                made_by_sync=True,
                missing=True,
                last_error="e",
                files=3,
                clusters=["c1"],
            ),
        ),
    }


def test_the_full_records_leave_no_field_at_its_default() -> None:
    """So the round trip below covers every field of every kind."""
    for spec, data in _full_records().values():
        for record in (spec, data):
            for field in msgspec.structs.fields(record):
                if field.required:
                    continue
                default = field.default
                if default is msgspec.NODEFAULT:
                    default = field.default_factory()
                assert getattr(record, field.name) != default, f"{record}: {field.name}"


@pytest.mark.parametrize("kind", KINDS)
async def test_each_kinds_spec_and_data_read_back_as_written(tmp_path: Path, kind: str) -> None:
    spec, data = _full_records()[kind]
    async with app_on_store(tmp_path) as app:
        stored = await app.store.insert(_row(kind, encode(spec), encode(data)), "created")
        row = await app.store.get(kind, stored.id)
        assert row is not None
        assert ACTORS[kind].decode_row(row) == (spec, data)


async def test_an_actor_writes_through_its_structs_and_refuses_what_they_would_not_read(
    tmp_path: Path,
) -> None:
    async with app_on_store(tmp_path) as app:
        spec, data = EARLIER["cluster"]
        cluster = ClusterActor(await app.store.insert(_row("cluster", spec, data), "created"), app)
        await cluster.save(autostop=Autostop(idle_minutes=2.0), idle_since=5.0)
        assert (
            cluster.data.autostop == Autostop(idle_minutes=2.0) and cluster.data.idle_since == 5.0
        )
        stored = await app.store.get("cluster", "c1")
        assert stored is not None and stored.data == encode(cluster.data)
        assert stored.data["autostop"] == {"idle_minutes": 2.0, "down": False}
        assert ClusterActor.decode_row(stored) == (cluster.spec, cluster.data)
        with pytest.raises(InternalError, match=r"retry_round"):
            await cluster.save(retry_round=-1)
        with pytest.raises(TypeError):
            await cluster.save(no_such_field=1)
        after = await app.store.get("cluster", "c1")
        assert after is not None and after.version == stored.version  # nothing was written


def test_a_rows_state_is_read_as_its_enum() -> None:
    row = _row("cluster", {}, {})
    assert state_of(row, ClusterStatus) is ClusterStatus.UP
    assert state_of(_row("job", {}, {}), JobStatus) is JobStatus.RUNNING
    assert state_of(_row("managed_job", {}, {}), ManagedJobStatus) is ManagedJobStatus.RUNNING
    assert state_of(_row("job_pool", {}, {}), PoolStatus) is PoolStatus.READY
    assert state_of(Row(kind="job", id="x", state="NO_SUCH", version=1), JobStatus) is None


UNTYPED_READ = re.compile(
    r"\.(spec|data)\.get\(|\.(spec|data)\[|\.state\s*[!=]=|\.state\.startswith\("
)
"""A row's column read as a dict, or its state compared as text (an actor's own `state` is
its enum, compared with `is`; a row's is read by `state_of`)."""


def test_actors_and_handlers_read_rows_through_the_structs_and_states_as_enums() -> None:
    """Only the quarantine, which reads what it can of a row no stix wrote, reads it raw."""
    allowed = {ROOT / "stixd/actors/quarantine.py"}
    found = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for folder in ("stixd/actors", "stixd/control")
        for path in sorted((ROOT / folder).glob("*.py"))
        if path not in allowed
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if UNTYPED_READ.search(line)
    ]
    assert not found, "\n".join(found)
