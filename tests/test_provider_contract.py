"""The provider contract: what every provider promises the daemon, held against each one.

Each case runs once per provider of ``tests.provider_beds.BEDS`` — ``local`` (this machine),
``ssh`` (real sshd hosts in network namespaces), ``aws`` (a moto server, its instances stood in
for by such hosts; ``aws-spot`` the same on spot instances, marked slow) and ``fake`` (the
in-memory cloud) — against its real world, disturbed from outside stix the way a user, a cloud
or a failure would.

A new provider joins by adding ONE parameter: a ``Bed`` line in ``tests/provider_beds.py``
naming its world (a ``World`` subclass saying how to count, break and read its nodes) and what
it declares it cannot do. A declared inability is a skip with its reason, but only while it is
true: the case still runs, and a provider that has the ability (by its type, see
``ABILITIES``, or by passing the case) fails, so a declaration cannot drift. ``stop`` is the
one inability that is not skipped: a provider that cannot stop must refuse in one line that
names ``down``, and the case checks that it does.

One world per provider per module (module-scoped), a fresh stix home per case; waits are
bounded, nothing sleeps a fixed time, and every process, namespace and file is removed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import pytest

from stixd.agent_bundle import build_agent_zipapp
from stixd.agent_client import AgentUnreachable
from stixd.providers.abilities import FindsLeaks, HasShell, OpensPorts, ReportsLostNodes
from stixd.providers.base import Mount, NodeInfo, NodeStatus, Provider
from stixproto.errors import ProvisionError
from tests.provider_beds import (
    ABILITIES,
    BEDS,
    NODES,
    Bed,
    World,
    free_port,
)
from tests.test_sync_filter import GITIGNORE, NESTED, make_tree, sent_by_rules

pytestmark = pytest.mark.anyio
CRASH_WITHIN_S = 60.0


@pytest.fixture(scope="module")
def pyz() -> Iterator[Path]:
    where = Path(tempfile.mkdtemp(prefix="stxk-agent"))
    try:
        yield build_agent_zipapp(where)
    finally:
        shutil.rmtree(where, ignore_errors=True)


@pytest.fixture(
    scope="module",
    params=[pytest.param(b, id=b.name, marks=[pytest.mark.slow] if b.slow else []) for b in BEDS],
)
def world(request: pytest.FixtureRequest, pyz: Path) -> Iterator[World]:
    bed: Bed = request.param
    reason = bed.unavailable()
    if reason:
        pytest.skip(reason)
    made = bed.world(bed, pyz)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
async def provider(world: World) -> AsyncIterator[Provider]:
    world.begin()
    try:
        yield world.open()
    finally:
        await world.end()


@contextlib.asynccontextmanager
async def contract(world: World, ability: str, provider: Provider) -> AsyncIterator[None]:
    """Runs a case of ``ability``; where the provider declares it cannot, the case is skipped
    with the declared reason if it fails, and fails if it holds (the declaration is false)."""
    bed = world.bed
    why = bed.cannot.get(ability)
    has = ABILITIES.get(ability)
    if why is None:
        if has is not None and not has(provider):
            pytest.fail(
                f"{bed.name} has no {ability}: declare it in its Bed (tests/provider_beds.py)"
            )
        yield
        return
    if has is not None and has(provider):
        pytest.fail(f"{bed.name} declares it cannot {ability} ({why}), but its type has it")
    try:
        yield
    except Exception:
        pytest.skip(f"{bed.name} cannot {ability}: {why}")
    pytest.fail(f"{bed.name} declares it cannot {ability} ({why}), but the contract holds")


def _view(nodes: list[NodeInfo]) -> list[tuple[int, str, str]]:
    return [(n.rank, n.ip, n.agent_address) for n in nodes]


async def _statuses(provider: Provider, cluster: str) -> list[NodeStatus]:
    return [n.status for n in await provider.query(cluster)]


async def _answer(provider: Provider, cluster: str, nodes: list[NodeInfo]) -> None:
    for node in nodes:
        hello = await provider.connector(node).call("hello", deadline=10)
        assert (hello["cluster"], hello["rank"]) == (cluster, node.rank)


# -- launch ----------------------------------------------------------------------------------


async def test_a_second_launch_of_a_cluster_returns_the_same_nodes_and_makes_none(
    world: World, provider: Provider
) -> None:
    req = world.request("twice")
    first = await provider.launch(req)
    assert [(n.rank, n.status) for n in first] == [(r, NodeStatus.RUNNING) for r in range(NODES)]
    assert await world.made("twice") == NODES
    again = await provider.launch(req)
    assert _view(again) == _view(first)
    assert await world.made("twice") == NODES
    assert _view(await provider.query("twice")) == _view(first)


async def test_a_retry_after_a_crash_mid_launch_finds_what_the_first_try_made(
    world: World, provider: Provider
) -> None:
    """The daemon dies (kill -9) once the first machine exists; the restarted daemon (a new
    provider on the same home and cloud) launches again and makes nothing more."""
    req = world.request("crash")
    async with anyio.create_task_group() as tg:
        tg.start_soon(provider.launch, req)
        with anyio.fail_after(CRASH_WITHIN_S):
            while not await world.made("crash"):
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    async with contract(world, "restart", provider):
        retry = world.open()
        nodes = await retry.launch(req)
        assert [(n.rank, n.status) for n in nodes] == [
            (r, NodeStatus.RUNNING) for r in range(NODES)
        ]
        assert await world.settles_at("crash", NODES) == NODES
        await _answer(retry, "crash", nodes)
        assert _view(await world.open().launch(req)) == _view(nodes)
        assert await world.settles_at("crash", NODES) == NODES


# -- query -----------------------------------------------------------------------------------


async def test_query_tells_the_truth_after_changes_made_behind_stix(
    world: World, provider: Provider
) -> None:
    req = world.request("truth")
    nodes = await provider.launch(req)
    assert await _statuses(provider, "truth") == [NodeStatus.RUNNING] * NODES
    disturbed = await world.disturb(provider, "truth", nodes)
    assert await _statuses(provider, "truth") == disturbed.statuses
    if isinstance(provider, ReportsLostNodes):
        assert sorted(x.rank for x in provider.lost_nodes("truth")) == disturbed.lost
    if "restart" not in world.bed.cannot:  # a restarted daemon learns the same
        assert await _statuses(world.open(), "truth") == disturbed.statuses
    await world.heal()  # the host comes back, as hosts do
    repaired = await provider.launch(req)  # and a relaunch puts back what is missing
    assert [(n.rank, n.status) for n in repaired] == [(r, NodeStatus.RUNNING) for r in range(NODES)]
    assert await _statuses(provider, "truth") == [NodeStatus.RUNNING] * NODES
    await _answer(provider, "truth", repaired)
    assert await world.settles_at("truth", NODES) == NODES


# -- stop and start --------------------------------------------------------------------------


async def test_stop_then_a_relaunch_brings_the_cluster_back_or_stop_says_it_cannot(
    world: World, provider: Provider
) -> None:
    """The daemon relaunches a stopped cluster with ``launch``: the same nodes come back. A
    stopped cluster then terminates without a trace."""
    req = world.request("halt")
    nodes = await provider.launch(req)
    cannot = world.bed.cannot.get("stop")
    if cannot is not None:
        with pytest.raises(ProvisionError) as refused:
            await provider.stop("halt")
        message = refused.value.message
        assert "\n" not in message and "down" in message, message
        assert await _statuses(provider, "halt") == [NodeStatus.RUNNING] * NODES
        return
    await provider.stop("halt")
    assert await _statuses(provider, "halt") == [NodeStatus.STOPPED] * NODES
    if world.stops_machines:
        for node in nodes:
            with pytest.raises(AgentUnreachable):
                await provider.connector(node).call("hello", deadline=5)
    await provider.stop("halt")  # stopping a stopped cluster is harmless
    again = await provider.launch(req)
    assert [(n.rank, n.ip, n.status) for n in again] == [
        (n.rank, n.ip, NodeStatus.RUNNING) for n in nodes
    ]
    assert await _statuses(provider, "halt") == [NodeStatus.RUNNING] * NODES
    await _answer(provider, "halt", again)
    assert await world.settles_at("halt", NODES) == NODES
    await provider.stop("halt")
    await provider.terminate("halt")
    assert await provider.query("halt") == []
    assert await world.left_after("halt") == []


# -- terminate -------------------------------------------------------------------------------


async def test_terminate_leaves_nothing_and_a_second_terminate_is_harmless(
    world: World, provider: Provider
) -> None:
    nodes = await provider.launch(world.request("gone"))
    assert await world.leftovers("gone")  # the check sees a live cluster's resources
    await provider.terminate("gone")
    assert await provider.query("gone") == []
    assert await world.left_after("gone") == []
    assert await world.made("gone") == 0
    for node in nodes:  # what a job still watching a node meets: the agent is unreachable
        with pytest.raises(AgentUnreachable):
            await provider.connector(node).call("hello", deadline=5)
    await provider.terminate("gone")
    await world.open().terminate("gone")  # and from a restarted daemon
    assert await provider.query("gone") == []
    assert await world.left_after("gone") == []


async def test_a_terminate_cut_short_by_a_crash_is_finished_by_the_next_one(
    world: World, provider: Provider
) -> None:
    """The daemon dies once the first node is going; the restarted daemon's terminate (a new
    provider on the same home and cloud) removes the rest."""
    await provider.launch(world.request("cut"))
    async with anyio.create_task_group() as tg:
        tg.start_soon(provider.terminate, "cut")
        with anyio.fail_after(CRASH_WITHIN_S):
            while await world.made("cut") == NODES:
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    await world.open().terminate("cut")
    assert await world.open().query("cut") == []
    assert await world.left_after("cut") == []


# -- reaching the nodes ----------------------------------------------------------------------


async def test_the_agent_transport_reaches_every_node_also_after_a_restart(
    world: World, provider: Provider
) -> None:
    """A restarted daemon reaches the nodes it recorded (``NodeInfo`` as stored) at once."""
    nodes = await provider.launch(world.request("hello"))
    await _answer(provider, "hello", nodes)
    stored = [NodeInfo.from_dict(n.to_dict()) for n in nodes]
    async with contract(world, "restart", provider):
        await _answer(world.open(), "hello", stored)


async def test_a_cluster_never_launched_is_empty_and_stopping_or_ending_it_is_harmless(
    world: World, provider: Provider
) -> None:
    world.request("never")
    assert await provider.query("never") == []
    if "stop" not in world.bed.cannot:
        await provider.stop("never")
    await provider.terminate("never")
    assert await provider.query("never") == []
    assert await world.left_after("never") == []


async def test_the_node_shell_runs_a_command_on_the_node(world: World, provider: Provider) -> None:
    [node] = await provider.launch(world.request("shell", 1))
    async with contract(world, "shell", provider):
        assert isinstance(provider, HasShell)
        argv, cwd, env = provider.shell_command(node, 'echo "$HOME"; echo shell-ok >&2')
        with anyio.fail_after(30):
            ran = await anyio.run_process(argv, cwd=cwd, env={**os.environ, **env}, check=False)
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout.decode().splitlines() == [node.home]
        assert ran.stderr.decode().splitlines() == ["shell-ok"]


async def test_sync_sends_what_the_ignore_files_keep(world: World, provider: Provider) -> None:
    [node] = await provider.launch(world.request("sync", 1))
    sources = world.home / "sources"  # removed with the home
    git = make_tree(sources / "git", {".gitignore": GITIGNORE, **NESTED})
    sky = make_tree(
        sources / "sky", {".gitignore": GITIGNORE, **NESTED, ".skyignore": "data/\n*.md\n"}
    )
    async with contract(world, "sync", provider):
        mounts = [Mount(str(git), "~/by-git"), Mount(str(sky), "~/by-sky")]
        sent = await provider.sync(node, mounts)
        assert await world.files_at(node, "~/by-git") == sent_by_rules(git)
        assert await world.files_at(node, "~/by-sky") == sent_by_rules(sky)
        assert sent == len(sent_by_rules(git)) + len(sent_by_rules(sky))
        assert await provider.sync(node, mounts) == 0  # nothing changed: nothing is sent
        (git / "a.py").unlink()
        (git / "src" / "new.py").write_text("new\n")
        assert await provider.sync(node, mounts) == 1
        assert await world.files_at(node, "~/by-git") == sent_by_rules(git)
        assert "keep.log" in sent_by_rules(git) and "debug.log" not in sent_by_rules(git)
        assert "docs/readme.md" in sent_by_rules(git) and "docs/readme.md" not in sent_by_rules(sky)


async def test_ports_a_launch_asks_for_and_ports_opened_later_can_be_reached(
    world: World, provider: Provider
) -> None:
    asked, later = free_port(), free_port()
    [node] = await provider.launch(world.request("port", 1, ports=[asked]))
    async with contract(world, "ports", provider):
        assert await world.port_reachable(provider, "port", node, asked, job_id=1)
        if isinstance(provider, OpensPorts):  # a firewall stix controls: it opens more later
            await provider.open_ports("port", [later])
            assert await world.port_reachable(provider, "port", node, later, job_id=2)


# -- leaks -----------------------------------------------------------------------------------


async def test_leaks_are_found_and_cleaned_and_live_clusters_are_not_leaks(
    world: World, provider: Provider
) -> None:
    await provider.launch(world.request("owned", 1))
    async with contract(world, "leaks", provider):
        assert isinstance(provider, FindsLeaks)
        await world.plant_leak(provider, "ghost")
        world.request("ghost")  # so the world cleans it up whatever happens
        regions = provider.regions()
        leaks = await provider.leaks(regions, live={"owned"}, young_s=0)
        assert [(x.kind, x.cluster) for x in leaks] == [("instance", "ghost")]
        await provider.clean_leaks(leaks)
        assert await world.made("ghost") == 0
        assert await provider.leaks(regions, live={"owned"}, young_s=0) == []
        assert await world.made("owned") == 1


def test_every_provider_folder_has_a_bed() -> None:
    """A provider joins the contract the day its folder appears."""
    providers = Path(__file__).resolve().parents[1] / "stixd" / "providers"
    folders = {p.parent.name for p in providers.glob("*/provider.py")}
    assert folders <= {b.name for b in BEDS}, "add a Bed line in tests/provider_beds.py"
