"""The fake provider (for tests and benchmarks) behaves as a cloud provider does: idempotent
launches in the region asked for, capacity errors that name the region to block, preemptions
that make nodes vanish, and agents that answer until then."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import anyio
import msgspec
import pytest
import structlog
import yaml

from stixd.agent_bundle import build_agent_zipapp, build_id
from stixd.agent_client import AgentClient, AgentUnreachable
from stixd.planner.catalog import open_catalog
from stixd.planner.offers import OfferIndex
from stixd.planner.request import Blocked
from stixd.planner.target import choose_target, cloud_spec
from stixd.providers.abilities import (
    HasShell,
    ReachesEveryPort,
    ReportsLostNodes,
    SharesHostNetwork,
    SimulatesPreemption,
)
from stixd.providers.all import infras
from stixd.providers.base import Block, CapacityError, NodeStatus, ProvisionRequest
from stixd.providers.fake import entry as fake_entry
from stixd.providers.fake.config import FakeConfig
from stixd.providers.fake.process import ProcessFakeProvider
from stixd.providers.fake.provider import FakeProvider, write_catalog
from stixd.providers.local.node import marked_processes
from stixd.providers.registry import BuildContext
from stixproto.errors import InvalidTask
from stixproto.task import Task
from stixproto.task.load import task_from_dict
from tests.conftest import kill_everything_under, pid_alive

pytestmark = pytest.mark.anyio
REGIONS = ("fake-1", "fake-2", "fake-3")


def load_text(text: str) -> Task:
    return task_from_dict(yaml.safe_load(text))


def provider(**kw: object) -> FakeProvider:
    return FakeProvider(REGIONS, build="b1", **kw)  # type: ignore[arg-type]


def request(cluster: str, region: str, nodes: int = 1) -> ProvisionRequest:
    return ProvisionRequest(cluster, nodes, Path("/nonexistent.pyz"), {"region": region})


async def test_launch_makes_nodes_in_the_region_asked_for_and_is_idempotent() -> None:
    p = provider()
    first = await p.launch(request("c1", "fake-2", nodes=2))
    assert [n.rank for n in first] == [0, 1]
    assert all(n.status is NodeStatus.RUNNING for n in first)
    assert p.region_of("c1") == "fake-2"
    again = await p.launch(request("c1", "fake-2", nodes=2))
    assert [n.agent_address for n in again] == [n.agent_address for n in first]
    assert p.launches == {"fake-2": 1}
    hello = await p.connector(first[1]).call("hello")
    assert hello["cluster"] == "c1" and hello["rank"] == 1 and hello["build"] == "b1"


async def test_a_region_without_capacity_fails_naming_the_region_to_block() -> None:
    p = provider(no_capacity_regions=["fake-1"])
    with pytest.raises(CapacityError) as err:
        await p.launch(request("c1", "fake-1"))
    assert err.value.block == Block(infra="fake", region="fake-1")
    assert await p.query("c1") == []
    assert (await p.launch(request("c1", "fake-2")))[0].status is NodeStatus.RUNNING


async def test_a_preempted_cluster_is_gone_and_its_agents_stop_answering() -> None:
    p = provider()
    nodes = await p.launch(request("c1", "fake-1"))
    await p.launch(request("c2", "fake-1"))
    client = p.connector(nodes[0])
    await client.call("submit", job_id=1, run="x", envs={})
    assert p.preempt(["c1"]) == ["c1"]
    assert await p.query("c1") == []
    assert [(x.rank, x.preempted) for x in p.lost_nodes("c1")] == [(0, True)]
    assert "preempted in fake-1" in p.lost_nodes("c1")[0].why
    assert isinstance(p, ReportsLostNodes)
    with pytest.raises(AgentUnreachable):
        await client.call("jobs")
    assert len(await p.query("c2")) == 1
    assert p.preempt(count=5) == ["c2"]  # only what runs
    assert p.clusters() == []
    await p.launch(request("c1", "fake-2"))  # a new launch has lost nothing
    await p.terminate("c2")
    assert p.lost_nodes("c1") == [] and p.lost_nodes("c2") == []


async def test_a_long_poll_on_a_preempted_node_ends_at_once() -> None:
    p = provider()
    nodes = await p.launch(request("c1", "fake-1"))
    client = p.connector(nodes[0])
    await client.call("submit", job_id=1, run="x", envs={})
    async with anyio.create_task_group() as tg:
        outcome: list[str] = []

        async def wait() -> None:
            try:
                await client.call("wait", deadline=30, job_id=1, state="RUNNING", timeout=20)
                outcome.append("answered")
            except AgentUnreachable:
                outcome.append("unreachable")

        tg.start_soon(wait)
        await anyio.wait_all_tasks_blocked()
        p.preempt(["c1"])
    assert outcome == ["unreachable"]


async def test_stop_then_launch_restarts_the_nodes_and_launch_elsewhere_replaces_them() -> None:
    p = provider()
    first = await p.launch(request("c1", "fake-1"))
    await p.stop("c1")
    assert [n.status for n in await p.query("c1")] == [NodeStatus.STOPPED]
    again = await p.launch(request("c1", "fake-1"))  # a start is a launch
    assert [n.agent_address for n in again] == [n.agent_address for n in first]
    assert [n.status for n in await p.query("c1")] == [NodeStatus.RUNNING]
    await p.launch(request("c1", "fake-3"))
    assert p.region_of("c1") == "fake-3"
    await p.terminate("c1")
    assert await p.query("c1") == []


def test_the_planner_orders_the_fake_regions_as_configured_and_skips_blocked_ones(
    tmp_path: Path,
) -> None:
    write_catalog(tmp_path / "fakecat", REGIONS)
    catalog = OfferIndex(open_catalog(tmp_path, {}, [tmp_path / "fakecat"]), infras())
    task = load_text("resources:\n  infra: fake\nrun: x\n")
    assert cloud_spec(task, "fake", catalog)["placement"]["region"] == "fake-1"
    block = Blocked(cloud="fake", region="fake-1", reason="preempted")
    assert cloud_spec(task, "fake", catalog, [block])["placement"]["region"] == "fake-2"


def test_the_fake_cloud_is_never_chosen_for_a_task_that_does_not_name_it() -> None:
    big = load_text("resources:\n  cpus: 512\nrun: x\n")
    with pytest.raises(Exception, match="cpus"):
        choose_target(big, infras(), {}, ("fake",))
    named = load_text("resources:\n  infra: fake/fake-2\nrun: x\n")
    assert choose_target(named, infras(), {}, ("fake",)) == ("fake", "fake-2")
    with pytest.raises(Exception, match="not available"):
        choose_target(named, infras(), {}, ())


@pytest.mark.parametrize(
    ("resources", "named"),
    [
        ("region: us-east1", "region"),
        ("zone: us-central1-a", "zone"),
        ("instance_type: m5.large", "instance_type"),
    ],
)
def test_a_task_naming_a_clouds_place_or_instance_never_lands_on_this_machine(
    resources: str, named: str
) -> None:
    task = load_text(f"resources:\n  {resources}\nrun: x\n")
    with pytest.raises(InvalidTask, match=f"resources.{named}: .* is a cloud's"):
        choose_target(task, infras(), {}, ())


def test_a_soft_block_is_used_only_when_nothing_else_is_left_and_a_preference_wins(
    tmp_path: Path,
) -> None:
    write_catalog(tmp_path / "fakecat", REGIONS)
    catalog = OfferIndex(open_catalog(tmp_path, {}, [tmp_path / "fakecat"]), infras())
    task = load_text("resources:\n  infra: fake\nrun: x\n")
    lost = ["fake-1"]
    assert cloud_spec(task, "fake", catalog, avoid_regions=lost)["placement"]["region"] == "fake-2"
    full = [Blocked(cloud="fake", region=r, reason="no capacity") for r in REGIONS[1:]]
    spec = cloud_spec(task, "fake", catalog, full, avoid_regions=lost)
    assert spec["placement"]["region"] == "fake-1"  # the lost region, as the last resort
    spec = cloud_spec(task, "fake", catalog, prefer_region="fake-3")
    assert spec["placement"]["region"] == "fake-3" and spec["hourly_price"] == 0.03


async def test_with_a_machines_file_the_nodes_outlive_the_provider_as_a_clouds_do(
    tmp_path: Path,
) -> None:
    file = tmp_path / "machines.json"
    first = provider(machines_file=file)
    await first.launch(request("c1", "fake-2", nodes=2))
    await first.launch(request("c2", "fake-1"))
    await first.stop("c2")
    again = provider(machines_file=file)  # a daemon restarted
    assert [n.status for n in await again.query("c1")] == [NodeStatus.RUNNING] * 2
    assert [n.status for n in await again.query("c2")] == [NodeStatus.STOPPED]
    assert again.region_of("c1") == "fake-2"
    hello = await again.connector((await again.query("c1"))[1]).call("hello")
    assert hello["rank"] == 1
    await again.terminate("c1")
    assert provider(machines_file=file).clusters() == ["c2"]
    assert provider().clusters() == []  # without the file, a restart loses them


@pytest.mark.parametrize(
    "damage",
    [
        b"",
        b"{not json",
        b"[]",
        b'{"serial": "x", "clusters": {}}',
        b'{"serial": 1, "clusters": {"c": [{"rank": -1, "region": "r", "running": true}]}}',
        b'{"serial": 1e400, "clusters": {}}',
        b"[" * 5000,
    ],
)
async def test_a_damaged_machines_file_is_a_cloud_that_lost_them_not_a_failed_start(
    tmp_path: Path, damage: bytes
) -> None:
    file = tmp_path / "machines.json"
    file.write_bytes(damage)
    fresh = provider(machines_file=file)
    assert fresh.clusters() == []
    await fresh.launch(request("c1", "fake-1"))
    assert provider(machines_file=file).clusters() == ["c1"]  # the next write replaced it


# -- process nodes (`fake.nodes: process`) ----------------------------------------------------


@pytest.fixture
def process_home(tmp_path: Path) -> Iterator[Path]:
    """A stix home whose process nodes (agents, jobs, namespaces) are all gone at the end."""
    try:
        yield tmp_path
    finally:
        kill_everything_under(tmp_path)


def process_provider(home: Path, **settings: object) -> ProcessFakeProvider:
    cfg = msgspec.convert({"enabled": True, "nodes": "process", **settings}, FakeConfig)
    built = fake_entry.build(BuildContext(home, cfg, structlog.get_logger(), build_id()))
    assert built is not None and isinstance(built.provider, ProcessFakeProvider)
    return built.provider


async def test_process_nodes_run_real_commands_and_a_preemption_kills_them_at_once(
    process_home: Path,
) -> None:
    p = process_provider(process_home, network="host")
    pyz = build_agent_zipapp(process_home / "agent")
    marker = process_home / "ran"
    req = ProvisionRequest("c1", 2, pyz, {"region": "fake-2", "use_spot": True})
    nodes = await p.launch(req)
    assert [n.status for n in nodes] == [NodeStatus.RUNNING] * 2 and p.region_of("c1") == "fake-2"
    assert [n.agent_address for n in await p.launch(req)] == [n.agent_address for n in nodes]
    agent = p.connector(nodes[1])
    await agent.call("submit", job_id=1, run=f"echo $$ > {marker}; exec sleep 600")
    with anyio.fail_after(20):
        while not marker.exists() or not marker.read_text().strip():
            await anyio.sleep(0.02)
    pid = int(marker.read_text())
    assert pid_alive(pid)
    assert p.preempt(["c1"]) == ["c1"]
    assert not pid_alive(pid)  # killed with its node, before preempt returned
    assert await p.query("c1") == [] and [x.rank for x in p.lost_nodes("c1")] == [0, 1]
    with pytest.raises(AgentUnreachable):
        await agent.call("jobs")
    # launched again elsewhere: a new machine, which knows nothing of the old one's jobs
    again = await p.launch(ProvisionRequest("c1", 1, pyz, {"region": "fake-3"}))
    assert (await p.connector(again[0]).call("jobs"))["jobs"] == []
    assert p.lost_nodes("c1") == [] and p.region_of("c1") == "fake-3"
    await p.terminate("c1")
    assert await p.query("c1") == [] and not (process_home / "fake" / "clusters" / "c1").exists()


async def test_a_stopped_process_node_keeps_its_disk_and_a_start_brings_its_agent_back(
    process_home: Path,
) -> None:
    p = process_provider(process_home, network="host", stop_seconds=0.1)
    req = ProvisionRequest(
        "c1", 1, build_agent_zipapp(process_home / "agent"), {"region": "fake-1"}
    )
    (node,) = await p.launch(req)
    await p.connector(node).call("submit", job_id=1, run="exec sleep 600")
    await p.stop("c1")
    assert [n.status for n in await p.query("c1")] == [NodeStatus.STOPPED]
    assert marked_processes(p.nodes.cluster_dir("c1")) == {}  # its agent and job ended
    (again,) = await p.launch(req)
    assert again.status is NodeStatus.RUNNING and again.agent_address == node.agent_address
    jobs = (await p.connector(again).call("jobs"))["jobs"]
    assert [(j["job_id"], j["state"]) for j in jobs] == [(1, "CANCELLED")]  # stopped with it
    await p.terminate("c1")


async def job_states(agent: AgentClient, until: str | None = None) -> list[str]:
    """The node's jobs' states, once the first is ``until`` (within 20 s)."""
    with anyio.fail_after(20):
        while True:
            states = [j["state"] for j in (await agent.call("jobs"))["jobs"]]
            if until is None or states[:1] == [until]:
                return states
            await anyio.sleep(0.02)


async def test_process_nodes_outlive_a_restart_with_the_machines_file_and_end_without_it(
    process_home: Path,
) -> None:
    machines = {"persist": True, "network": "host"}
    p = process_provider(process_home, **machines)
    pyz = build_agent_zipapp(process_home / "agent")
    agents = {}
    for cluster in ("kept", "lost"):
        (node,) = await p.launch(ProvisionRequest(cluster, 1, pyz, {"region": "fake-1"}))
        agents[cluster] = p.connector(node)
        await agents[cluster].call("submit", job_id=1, run="exec sleep 600")
        assert await job_states(agents[cluster], "RUNNING") == ["RUNNING"]
    kept_agent = (await agents["kept"].call("hello"))["pid"]
    file = process_home / "fake" / "machines.json"
    saved = json.loads(file.read_text())
    del saved["clusters"]["lost"]  # as if the cloud lost it while the daemon was away
    file.write_text(json.dumps(saved))
    again = process_provider(process_home, **machines)  # a daemon restarted
    (node,) = await again.query("kept")
    assert (await again.connector(node).call("hello"))["pid"] == kept_agent  # the same agent
    assert await job_states(again.connector(node)) == ["RUNNING"]  # its job runs on
    assert marked_processes(again.nodes.cluster_dir("lost")) == {}  # a machine the cloud lost
    assert not again.nodes.cluster_dir("lost").exists() and await again.query("lost") == []
    process_provider(process_home, network="host")  # no machines file: every node is lost
    assert marked_processes(again.nodes.cluster_dir("kept")) == {}


async def test_process_nodes_keep_the_fake_clouds_capacity_errors_and_abilities(
    process_home: Path,
) -> None:
    p = process_provider(process_home, network="host", no_capacity_regions=["fake-1"])
    pyz = build_agent_zipapp(process_home / "agent")
    with pytest.raises(CapacityError) as err:
        await p.launch(ProvisionRequest("c1", 1, pyz, {"region": "fake-1"}))
    assert err.value.block == Block(infra="fake", region="fake-1")
    assert await p.query("c1") == [] and not (process_home / "fake" / "clusters").exists()
    assert isinstance(p, ReachesEveryPort) and isinstance(p, SimulatesPreemption)
    assert isinstance(p, SharesHostNetwork) and p.nodes_share_host_network()
    memory = provider()  # in memory: no port, no shell, nothing of this machine's network
    assert not isinstance(memory, ReachesEveryPort | SharesHostNetwork | HasShell)
    assert "processes" in (await p.check()).reason


def test_the_default_fake_config_keeps_nodes_in_memory(tmp_path: Path) -> None:
    cfg = FakeConfig(enabled=True)
    built = fake_entry.build(BuildContext(tmp_path, cfg, structlog.get_logger(), "b1"))
    assert built is not None and type(built.provider) is FakeProvider
    with pytest.raises(msgspec.ValidationError, match="nodes"):
        msgspec.convert({"nodes": "vm"}, FakeConfig)
