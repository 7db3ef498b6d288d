"""Putting the agent on real SSH hosts (tests/sshbed.py) and using it through the SSH channel."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from stixd.agent_bundle import AGENT_SOURCE, build_agent_zipapp, build_id
from stixd.agent_client import AgentClient
from stixd.providers.shared.bootstrap import AgentEndpoint, BootstrapError, ensure_agent
from stixd.providers.shared.ssh_transport import SshConnection, SshSettings, SshTarget
from tests.sshbed import Host, SshBed, bed_fixture

pytestmark = pytest.mark.anyio

NO_PYTHON = 4
hosts = bed_fixture(4, nopy=[NO_PYTHON], scope="module")
SETTINGS = SshSettings(connect_timeout=5.0, keepalive_interval=2.0, keepalive_count_max=3)
FINISHED = ("SUCCEEDED", "FAILED", "CANCELLED")


@pytest.fixture(scope="module")
def pyz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_agent_zipapp(tmp_path_factory.mktemp("bundle"))


@pytest.fixture(scope="module")
def newer_pyz(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A zipapp of a later agent build (same code plus a comment)."""
    source = tmp_path_factory.mktemp("later") / "agent"
    shutil.copytree(AGENT_SOURCE, source, ignore=shutil.ignore_patterns("__pycache__"))
    with (source / "__init__.py").open("a") as f:
        f.write("\n# a later build\n")
    return build_agent_zipapp(source.parent / "bundle", source=source), build_id(source)


@pytest.fixture
async def connect(hosts: SshBed) -> AsyncIterator[Callable[[Host], SshConnection]]:
    made: list[SshConnection] = []

    def make(host: Host) -> SshConnection:
        made.append(SshConnection(SshTarget(host.ip, 22, "root", str(hosts.key)), SETTINGS))
        return made[-1]

    yield make
    for conn in made:
        await conn.close()


def agents_on(host: Host, cluster: str) -> list[int]:
    """Agent processes of ``cluster`` on the host (a job's runner is its agent's child)."""
    found = {}
    for pid in host.pids():
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if b"serve" in cmd and cluster.encode() in cmd:
            found[pid] = ppid
    return [pid for pid, ppid in found.items() if ppid not in found]


async def finished(agent: AgentClient, job_id: int) -> dict[str, Any]:
    for state in ("PENDING", "RUNNING"):
        await agent.call("wait", deadline=40, job_id=job_id, state=state, timeout=30)
    job: dict[str, Any] = (await agent.call("jobs", job_ids=[job_id]))["jobs"][0]
    assert job["state"] in FINISHED
    return job


async def full_log(agent: AgentClient, job_id: int) -> str:
    text, offset = "", 0
    while True:
        chunk = await agent.call("tail", deadline=40, job_id=job_id, offset=offset, wait=30)
        text, offset = text + str(chunk["data"]), int(chunk["offset"])
        if chunk["eof"]:
            return text


async def test_bootstrap_three_hosts_in_parallel_then_run_a_job_on_each(
    hosts: SshBed, pyz: Path, connect: Callable[[Host], SshConnection]
) -> None:
    workers = hosts.hosts[:3]
    conns = [connect(h) for h in workers]
    endpoints: dict[int, AgentEndpoint] = {}

    async def bootstrap(rank: int) -> None:
        endpoints[rank] = await ensure_agent(
            conns[rank],
            cluster="par",
            rank=rank,
            node_ip=workers[rank].ip,
            pyz=pyz,
            build=build_id(),
        )

    async with anyio.create_task_group() as tg:
        for rank in range(3):
            tg.start_soon(bootstrap, rank)

    for rank, host in enumerate(workers):
        ep = endpoints[rank]
        assert (ep.started, ep.upgraded, ep.build) == (True, False, build_id())
        assert ep.home == "/root" and ep.socket_path == f"/root/.stix/nodes/par-{rank}/agent.sock"
        assert (host.home / ".stix" / "agent" / pyz.name).read_bytes() == pyz.read_bytes()
        agent = conns[rank].agent_client(ep.socket_path)
        await agent.call("submit", job_id=1, run='echo "rank $SKYPILOT_NODE_RANK on $(hostname)"')
        assert (await finished(agent, 1))["state"] == "SUCCEEDED"
        assert await full_log(agent, 1) == f"rank {rank} on {host.name}\n"
        assert agents_on(host, "par") == [ep.pid]
        assert conns[rank].connects == 1


async def test_a_second_bootstrap_finds_the_running_agent(
    hosts: SshBed, pyz: Path, connect: Callable[[Host], SshConnection]
) -> None:
    host = hosts.host(1)
    conn = connect(host)
    first = await ensure_agent(
        conn, cluster="again", rank=0, node_ip=host.ip, pyz=pyz, build=build_id()
    )
    uploaded = (host.home / ".stix" / "agent" / pyz.name).stat()
    again = [
        await ensure_agent(
            conn, cluster="again", rank=0, node_ip=host.ip, pyz=pyz, build=build_id()
        ),
        await ensure_agent(
            connect(host), cluster="again", rank=0, node_ip=host.ip, pyz=pyz, build=build_id()
        ),
    ]
    assert first.started
    assert [(e.pid, e.started, e.upgraded) for e in again] == [(first.pid, False, False)] * 2
    assert agents_on(host, "again") == [first.pid]
    same_file = (host.home / ".stix" / "agent" / pyz.name).stat()
    assert (same_file.st_ino, same_file.st_mtime_ns) == (uploaded.st_ino, uploaded.st_mtime_ns)


async def test_bootstraps_racing_on_one_node_leave_one_agent(
    hosts: SshBed, pyz: Path, connect: Callable[[Host], SshConnection]
) -> None:
    host = hosts.host(2)
    results: list[AgentEndpoint] = []

    async def bootstrap() -> None:
        results.append(
            await ensure_agent(
                connect(host), cluster="race", rank=0, node_ip=host.ip, pyz=pyz, build=build_id()
            )
        )

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(bootstrap)
    assert len({e.pid for e in results}) == 1
    # a losing start takes no lock and exits at once: only the winner is left
    with anyio.fail_after(10):
        while agents_on(host, "race") != [results[0].pid]:
            await anyio.sleep(0.05)


async def test_upgrade_in_place_keeps_a_running_job_alive(
    hosts: SshBed,
    pyz: Path,
    newer_pyz: tuple[Path, str],
    connect: Callable[[Host], SshConnection],
) -> None:
    host = hosts.host(3)
    conn = connect(host)
    old = await ensure_agent(
        conn, cluster="upg", rank=0, node_ip=host.ip, pyz=pyz, build=build_id()
    )
    agent = conn.agent_client(old.socket_path)
    gate = "/root/upg-go"
    await agent.call(
        "submit", job_id=1, run=f"while [ ! -e {gate} ]; do sleep 0.05; done; echo survived"
    )
    running = await agent.call("wait", deadline=40, job_id=1, state="PENDING", timeout=30)
    assert running["job"]["state"] == "RUNNING"

    new_pyz, new_build = newer_pyz
    assert new_build != old.build
    new = await ensure_agent(
        conn, cluster="upg", rank=0, node_ip=host.ip, pyz=new_pyz, build=new_build
    )

    assert (new.pid, new.build, new.upgraded, new.started) == (old.pid, new_build, True, False)
    assert (await agent.call("hello"))["build"] == new_build
    assert (await agent.call("jobs", job_ids=[1]))["jobs"][0]["state"] == "RUNNING"
    (host.home / "upg-go").touch()
    assert (await finished(agent, 1))["state"] == "SUCCEEDED"
    assert await full_log(agent, 1) == "survived\n"
    assert agents_on(host, "upg") == [old.pid]


async def test_a_host_without_python3_is_a_clear_error(
    hosts: SshBed, pyz: Path, connect: Callable[[Host], SshConnection]
) -> None:
    host = hosts.host(NO_PYTHON)
    with pytest.raises(BootstrapError) as caught:
        await ensure_agent(
            connect(host), cluster="nopy", rank=0, node_ip=host.ip, pyz=pyz, build=build_id()
        )
    assert str(caught.value).startswith(f"host {host.ip}: python3 is not installed;")
    assert caught.value.retryable is False
    assert not (host.home / ".stix").exists()  # nothing was uploaded or started


async def test_a_long_base_directory_puts_the_socket_where_it_fits(
    hosts: SshBed, pyz: Path, connect: Callable[[Host], SshConnection]
) -> None:
    host = hosts.host(1)
    conn = connect(host)
    base = "/root/" + "a-rather-long-directory-name/" * 3 + "stix"
    ep = await ensure_agent(
        conn, cluster="long", rank=0, node_ip=host.ip, pyz=pyz, build=build_id(), remote_base=base
    )
    try:
        assert len(ep.socket_path) <= 100 and ep.node_dir.startswith(base)
        assert (await conn.agent_client(ep.socket_path).call("hello"))["pid"] == ep.pid
    finally:  # /tmp is shared by the test hosts and this machine: leave nothing there
        await conn.agent_client(ep.socket_path).call("shutdown", deadline=10)


async def test_an_ssh_node_keeps_stix_files_private_and_forgets_a_started_jobs_secret(
    hosts: SshBed, pyz: Path, connect: Callable[[Host], SshConnection]
) -> None:
    host = hosts.hosts[0]
    conn = connect(host)
    ep = await ensure_agent(
        conn, cluster="priv", rank=0, node_ip=host.ip, pyz=pyz, build=build_id()
    )
    agent = conn.agent_client(ep.socket_path)
    secret = "s3cret-on-the-node"
    await agent.call(
        "submit", job_id=1, run='test "$TOK" = "s3cret-$(echo on-the-node)" && umask',
        envs={"TOK": secret}, secrets=["TOK"],
    )  # fmt: skip

    assert (await finished(agent, 1))["state"] == "SUCCEEDED"
    assert await full_log(agent, 1) == "0022\n"  # the job keeps the login's umask
    node = host.home / ".stix" / "nodes" / "priv-0"
    modes = {
        p: oct(p.stat().st_mode & 0o777)
        for p in [node.parent.parent / "agent", node, node / "logs"]
        + [p for p in node.rglob("*") if p.is_file()]
        + [node.parent.parent / "agent" / pyz.name]
    }
    assert {p: m for p, m in modes.items() if m not in ("0o700", "0o600")} == {}
    held = [p.name for p in node.glob("agent.db*") if secret.encode() in p.read_bytes()]
    assert held == []
