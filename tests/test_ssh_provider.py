"""The ssh provider on real SSH hosts (tests/sshbed.py): pools, allocation, agents, sync."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from stixd.agent_bundle import build_agent_zipapp
from stixd.providers.base import Block, CapacityError, Mount, NodeStatus, ProvisionRequest
from stixd.providers.shared.ssh_sync import Method, _ignore_files_sent
from stixd.providers.shared.ssh_transport import SshSettings
from stixd.providers.shared.syncfilter import rsync_plan
from stixd.providers.ssh.pools import PoolError, load_pools, parse_pools
from stixd.providers.ssh.provider import SshProvider
from tests.sshbed import SshBed, bed_fixture, start_sshd
from tests.test_ssh_bootstrap import agents_on, finished, full_log

pytestmark = pytest.mark.anyio

hosts = bed_fixture(3, scope="module")
SETTINGS = SshSettings(connect_timeout=3.0, keepalive_interval=2.0, keepalive_count_max=3)
POOL = "bed"


# -- pool file -------------------------------------------------------------------------------


def test_pool_file_in_skypilot_form_becomes_typed_hosts(tmp_path: Path) -> None:
    (tmp_path / "ssh_node_pools.yaml").write_text(
        "gpus:\n"
        "  user: ubuntu\n"
        "  identity_file: ~/.ssh/id_ed25519\n"
        "  hosts:\n"
        "    - 10.0.0.1\n"
        "    - ip: 10.0.0.2\n"
        "      port: 2222\n"
        "      user: admin\n"
        "      password: hunter2\n"
        "    - ip: 10.0.0.3\n"
        "      jump_host: null\n"
        "  jump_host: ops@bastion.example.com:2200\n"
        "cpus:\n"
        "  user: root\n"
        "  port: 2200\n"
        "  hosts: [a.example.com]\n"
    )
    pools = load_pools(tmp_path)
    gpus = pools["gpus"]
    key = os.path.expanduser("~/.ssh/id_ed25519")
    assert [(h.ip, h.port, h.user, h.identity_file, h.password) for h in gpus.hosts] == [
        ("10.0.0.1", 22, "ubuntu", key, None),
        ("10.0.0.2", 2222, "admin", key, "hunter2"),
        ("10.0.0.3", 22, "ubuntu", key, None),
    ]
    assert [str(h.jump) for h in gpus.hosts] == ["ops@bastion.example.com:2200"] * 2 + ["None"]
    assert gpus.hosts[0].key == "10.0.0.1:22 via ops@bastion.example.com:2200"
    assert gpus.hosts[2].key == "10.0.0.3:22"
    target = gpus.hosts[0].target()
    assert target.jump is not None and (target.jump.host, target.jump.port) == (
        "bastion.example.com",
        2200,
    )
    assert target.jump.identity_file == key and target.jump.user == "ops"
    assert [h.key for h in pools["cpus"].hosts] == ["a.example.com:2200"]
    assert "hunter2" not in repr(gpus)
    assert load_pools(tmp_path / "nowhere") == {}


@pytest.mark.parametrize(
    ("pools", "message"),
    [
        ([1], "ssh_node_pools.yaml: expected a mapping of pool name to pool"),
        ({"gpus": "x"}, "ssh_node_pools.yaml: pool gpus: expected a mapping with hosts"),
        ({"gpus": {"user": "u"}}, "ssh_node_pools.yaml: pool gpus: hosts: missing"),
        (
            {"gpus": {"hosts": []}},
            "ssh_node_pools.yaml: pool gpus: hosts: "
            "expected a non-empty list of addresses or host mappings",
        ),
        (
            {"gpus": {"hosts": ["a", {"user": "u"}]}},
            "ssh_node_pools.yaml: pool gpus: hosts.1.ip: missing",
        ),
        (
            {"gpus": {"hosts": [{"ip": "a", "port": "x"}]}},
            "ssh_node_pools.yaml: pool gpus: hosts.0.port: "
            "expected a port number from 1 to 65535, not 'x'",
        ),
        (
            {"gpus": {"port": 0, "hosts": ["a"]}},
            "ssh_node_pools.yaml: pool gpus: port: expected a port number from 1 to 65535, not 0",
        ),
        (
            {"gpus": {"hosts": ["a"], "users": "u"}},
            "ssh_node_pools.yaml: pool gpus: users: unknown key (expected one of user, "
            "identity_file, password, port, hosts, jump_host, proxy_command, install_packages)",
        ),
        (
            {"gpus": {"hosts": [{"ip": "a", "key": "k"}]}},
            "ssh_node_pools.yaml: pool gpus: hosts.0.key: unknown key "
            "(expected one of ip, user, identity_file, port, password, jump_host, "
            "proxy_command)",
        ),
        (
            {"gpus": {"hosts": ["a"], "jump_host": "b", "proxy_command": "nc %h %p"}},
            "ssh_node_pools.yaml: pool gpus: jump_host: "
            "give either jump_host or proxy_command, not both",
        ),
        (
            {"gpus": {"hosts": [{"ip": "a", "jump_host": "u@b:x"}]}},
            "ssh_node_pools.yaml: pool gpus: hosts.0.jump_host: "
            "the port of 'u@b:x' is not a number",
        ),
        (
            {"gpus": {"hosts": ["a"], "jump_host": "@b"}},
            "ssh_node_pools.yaml: pool gpus: jump_host: expected [user@]host[:port], not '@b'",
        ),
        (
            {"gpus": {"identity_file": 3, "hosts": ["a"]}},
            "ssh_node_pools.yaml: pool gpus: identity_file: expected a non-empty string",
        ),
        (
            {"gpus": {"hosts": ["a", {"ip": "a", "port": 22}]}},
            "ssh_node_pools.yaml: pool gpus: hosts.1: a:22 is listed twice (also hosts.0)",
        ),
    ],
)
def test_a_malformed_pool_is_one_sentence_naming_pool_and_key(pools: Any, message: str) -> None:
    with pytest.raises(PoolError) as caught:
        parse_pools(pools)
    assert str(caught.value) == message


def test_a_pool_file_that_is_not_yaml_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "ssh_node_pools.yaml").write_text("gpus:\n  hosts: [a\n")
    with pytest.raises(PoolError, match=r"^ssh_node_pools.yaml: not valid YAML at line \d+$"):
        load_pools(tmp_path)


# -- on the bed -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pyz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_agent_zipapp(tmp_path_factory.mktemp("bundle"))


@pytest.fixture
def stix_home(tmp_path: Path, hosts: SshBed) -> Path:
    addresses = "".join(f"    - {h.ip}\n" for h in hosts.hosts)
    (tmp_path / "ssh_node_pools.yaml").write_text(
        f"{POOL}:\n  user: root\n  identity_file: {hosts.key}\n  hosts:\n{addresses}"
    )
    return tmp_path


@pytest.fixture
async def provider(stix_home: Path) -> AsyncIterator[SshProvider]:
    p = SshProvider(stix_home, load_pools(stix_home), SETTINGS)
    yield p
    for cluster in p.allocations.read():  # leave the hosts as the next test expects them
        await p.terminate(cluster)
    await p.aclose()


def request(cluster: str, n: int, pyz: Path) -> ProvisionRequest:
    return ProvisionRequest(cluster, n, pyz, {"pool": POOL})


async def test_launch_takes_free_hosts_in_rank_order_and_runs_a_job_on_each(
    provider: SshProvider, hosts: SshBed, pyz: Path, stix_home: Path
) -> None:
    nodes = await provider.launch(request("trio", 3, pyz))

    assert [(n.rank, n.ip, n.status) for n in nodes] == [
        (rank, h.ip, NodeStatus.RUNNING) for rank, h in enumerate(hosts.hosts)
    ]
    assert all(n.home == "/root" and n.workdir == "/root/sky_workdir" for n in nodes)
    for node, host in zip(nodes, hosts.hosts, strict=True):
        assert agents_on(host, "trio") == [node.pid]
    saved = json.loads((stix_home / "ssh_allocations.json").read_text())
    assert saved == {
        "trio": {
            "pool": POOL,
            "hosts": [
                {"host": f"{h.ip}:22", "home": "/root", "socket": n.agent_address}
                for h, n in zip(hosts.hosts, nodes, strict=True)
            ],
        }
    }

    with pytest.raises(CapacityError) as full:
        await provider.launch(request("other", 1, pyz))
    assert (
        str(full.value) == "ssh pool bed: other needs 1 more host(s), but only 0 of its 3 are free"
    )
    assert full.value.block == Block(infra="ssh", region=POOL)

    again = await provider.launch(request("trio", 3, pyz))
    assert again == nodes  # same hosts, same ranks, same agents
    restarted = SshProvider(stix_home, load_pools(stix_home), SETTINGS)  # a daemon restart
    try:
        assert await restarted.query("trio") == nodes
    finally:
        await restarted.aclose()

    ips = [n.ip for n in nodes]
    script = 'echo "rank $SKYPILOT_NODE_RANK of $SKYPILOT_NUM_NODES on $(hostname)"'
    for node in nodes:
        agent = provider.connector(node)
        await agent.call("submit", job_id=1, run=script, node_ips=ips, num_nodes=3)
    for node, host in zip(nodes, hosts.hosts, strict=True):
        agent = provider.connector(node)
        assert (await finished(agent, 1))["state"] == "SUCCEEDED"
        assert await full_log(agent, 1) == f"rank {node.rank} of 3 on {host.name}\n"
    assert [provider.connection(h).connects for h in provider.pools[POOL].hosts] == [1, 1, 1]


async def test_stop_then_terminate_releases_the_hosts_and_cleans_them(
    provider: SshProvider, hosts: SshBed, pyz: Path, stix_home: Path
) -> None:
    nodes = await provider.launch(request("gone", 2, pyz))
    (hosts.host(1).home / "sky_workdir" / "data").write_text("x")

    await provider.stop("gone")
    assert [n.status for n in await provider.query("gone")] == [NodeStatus.STOPPED] * 2
    assert provider.node_errors("gone") == {}
    await no_agents(hosts, "gone")  # an agent answers its shutdown, then exits

    started = await provider.launch(request("gone", 2, pyz))  # a start is a launch
    assert [(n.ip, n.status) for n in started] == [(n.ip, NodeStatus.RUNNING) for n in nodes]

    await provider.terminate("gone")
    assert provider.allocations.read() == {}
    await no_agents(hosts, "gone")
    for rank, host in enumerate(hosts.hosts[:2]):
        assert not (host.home / ".stix" / "nodes" / f"gone-{rank}").exists()
        assert not (host.home / "sky_workdir").exists()
    assert await provider.query("gone") == []
    # released hosts are free for the next cluster
    assert len(await provider.launch(request("next", 3, pyz))) == 3


async def test_sync_sends_only_changed_files_over_rsync_and_honours_ignores(
    provider: SshProvider, hosts: SshBed, pyz: Path, tmp_path: Path
) -> None:
    [node] = await provider.launch(request("rs", 1, pyz))
    src = make_tree(tmp_path / "proj")
    remote = hosts.host(1).home / "sky_workdir"

    assert await provider.sync(node, [Mount(str(src), "")], method="rsync") == 3
    assert sorted(files_under(remote)) == [".gitignore", "a.py", "pkg/b.py"]
    assert await provider.sync(node, [Mount(str(src), "")], method="rsync") == 0

    (src / "a.py").write_text("print('changed')\n")
    (src / "pkg" / "b.py").unlink()
    assert await provider.sync(node, [Mount(str(src), "")], method="rsync") == 1
    assert (remote / "a.py").read_text() == "print('changed')\n"
    assert not (remote / "pkg" / "b.py").exists()

    assert await provider.sync(node, [Mount(str(src / "a.py"), "~/one/a.py")]) == 1
    assert (hosts.host(1).home / "one" / "a.py").read_text() == "print('changed')\n"


async def test_sync_falls_back_to_sftp_incrementally(
    provider: SshProvider, hosts: SshBed, pyz: Path, tmp_path: Path
) -> None:
    [node] = await provider.launch(request("sf", 1, pyz))
    src = make_tree(tmp_path / "proj")
    mount = [Mount(str(src), "~/code")]
    remote = hosts.host(1).home / "code"

    assert await provider.sync(node, mount, method="sftp") == 3
    assert sorted(files_under(remote)) == [".gitignore", "a.py", "pkg/b.py"]
    assert await provider.sync(node, mount, method="sftp") == 0

    (src / "a.py").write_text("print('changed, and longer')\n")
    (src / "pkg" / "b.py").unlink()
    (remote / "stray.txt").write_text("not in the source")
    assert await provider.sync(node, mount, method="sftp") == 1
    assert (remote / "a.py").read_text() == "print('changed, and longer')\n"
    assert sorted(files_under(remote)) == [".gitignore", "a.py"]
    assert (remote / "a.py").stat().st_mtime == int((src / "a.py").stat().st_mtime)


@pytest.mark.parametrize("method", ["rsync", "sftp"])
async def test_ssh_sync_sends_what_the_shared_filter_keeps_and_spares_excluded_outputs(
    provider: SshProvider, hosts: SshBed, pyz: Path, tmp_path: Path, method: Method
) -> None:
    from tests.test_sync_filter import GITIGNORE, NESTED, make_tree, sent_by_rules

    [node] = await provider.launch(request(f"flt-{method}", 1, pyz))
    src = make_tree(tmp_path / "proj", {".gitignore": GITIGNORE, **NESTED})
    remote = hosts.host(1).home / f"filtered-{method}"
    mount = [Mount(str(src), f"~/filtered-{method}")]
    await provider.sync(node, mount, method=method)
    assert set(files_under(remote)) == sent_by_rules(src)
    (remote / "logs" / "run.txt").parent.mkdir(exist_ok=True)
    (remote / "logs" / "run.txt").write_text("a job's output in an ignored folder\n")
    (remote / "outputs").mkdir()
    (remote / "outputs" / "model.bin").write_text("an ignored folder the source lacks\n")
    (remote / "stray.py").write_text("not in the source\n")
    await provider.sync(node, mount, method=method)
    assert (remote / "logs" / "run.txt").exists() and not (remote / "stray.py").exists()
    assert (remote / "outputs" / "model.bin").exists()
    if method == "rsync":  # the node has the ignore files rsync would send: delete as it goes
        conn, dest = provider.connection(provider._host_of(node)), f"/root/filtered-{method}"
        assert not await _ignore_files_sent(conn, dest, rsync_plan(src))
        os.utime(src / "src" / ".gitignore", ns=(0, 10**9 * 86400 + 1))
        assert await _ignore_files_sent(conn, dest, rsync_plan(src))
    # an ignore file that arrives with this very sync already spares what it names
    (remote / "results").mkdir()
    (remote / "results" / "eval.json").write_text("an output the new rules name\n")
    (src / "src" / "deep" / ".gitignore").write_text("!x.tmp\nscratch/\n")
    (remote / "src" / "deep" / "scratch").mkdir()
    (remote / "src" / "deep" / "scratch" / "a.txt").write_text("named one level down\n")
    (src / ".gitignore").write_text(GITIGNORE + "results/\n")
    await provider.sync(node, mount, method=method)
    assert (remote / "results" / "eval.json").exists()
    assert (remote / "src" / "deep" / "scratch" / "a.txt").exists()
    assert (remote / ".gitignore").read_text() == GITIGNORE + "results/\n"


async def test_an_unreachable_host_is_reported_while_the_others_are_fine(
    provider: SshProvider, hosts: SshBed, pyz: Path, stix_home: Path
) -> None:
    nodes = await provider.launch(request("part", 3, pyz))
    before = await provider.probe_pool(POOL)
    assert [(r.host, r.ok, r.agents) for r in before] == [
        (f"{h.ip}:22", True, (f"part-{rank}",)) for rank, h in enumerate(hosts.hosts)
    ]
    assert all(r.python and r.python.startswith("3.") and r.free_bytes for r in before)

    down = hosts.host(3)
    down.kill_sshd_listener()
    fresh = SshProvider(stix_home, load_pools(stix_home), SETTINGS)  # no connection yet
    try:
        reports = await fresh.probe_pool(POOL)
        assert [r.reachable for r in reports] == [True, True, False]
        assert reports[2].error == (
            f"host {down.ip}: connection refused on port 22 (is sshd running?)"
        )
        assert [n.status for n in await fresh.query("part")] == [
            NodeStatus.RUNNING,
            NodeStatus.RUNNING,
            NodeStatus.UNREACHABLE,  # the host did not answer: not the same as stopped
        ]
        assert fresh.last_error["part"] == {2: reports[2].error}
    finally:
        await fresh.aclose()
        start_sshd(down)
    # the provider's own connection outlived the listener: the agent there still answers
    assert (await provider.connector(nodes[2]).call("hello"))["pid"] == nodes[2].pid


async def no_agents(bed: SshBed, cluster: str) -> None:
    with anyio.fail_after(10):
        while any(agents_on(h, cluster) for h in bed.hosts):
            await anyio.sleep(0.05)


def make_tree(src: Path) -> Path:
    (src / "pkg").mkdir(parents=True)
    (src / "a.py").write_text("print('a')\n")
    (src / "pkg" / "b.py").write_text("print('b')\n")
    (src / ".gitignore").write_text("*.log\nbuild/\n")
    (src / "debug.log").write_text("ignored\n")
    (src / "build").mkdir()
    (src / "build" / "out.bin").write_text("ignored\n")
    return src


def files_under(root: Path) -> list[str]:
    return [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()]


def test_a_proxy_command_expands_openssh_tokens_and_reaches_the_openssh_client() -> None:
    from stixd.providers.shared.ssh_sync import ssh_client_args

    pools = parse_pools(
        {"p": {"user": "u", "identity_file": "/k", "hosts": [{"ip": "h", "port": 2}],
               "proxy_command": "nc -X 5 %h %p # %r 100%%"}}
    )  # fmt: skip
    [host] = pools["p"].hosts
    assert host.target().expanded_proxy_command() == "nc -X 5 h 2 # u 100%"
    args = ssh_client_args(host)
    assert args[args.index("-o", args.index("LogLevel=ERROR")) + 1] == (
        "ProxyCommand=nc -X 5 %h %p # %r 100%%"
    )
