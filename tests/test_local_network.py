"""Local nodes in network namespaces of their own: real daemon, real namespaces, real servers.

Two clusters whose jobs bind one fixed port both serve, each at its node's address; a cluster's
nodes reach each other; `down` (also after a `kill -9` of the daemon) and the leak scan remove
what was made; `local: {network: host}` shares this machine's network as the README says.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import anyio
import msgspec
import pytest
import yaml

from stixd.agent_bundle import build_agent_zipapp
from stixd.providers.base import ProvisionRequest
from stixd.providers.local.config import LocalConfig
from stixd.providers.local.netns import (
    NETNS_DIR,
    NetworkError,
    NodeNetworks,
    node_resolver,
    overlapping_route,
    remove_under,
    unavailable_reason,
)
from stixd.providers.local.networked import NamespacedLocalProvider
from tests.conftest import Stix, kill_everything_under, processes_mentioning, wait_until

WHY_NOT = unavailable_reason()
needs_namespaces = pytest.mark.skipif(
    WHY_NOT is not None, reason=f"node namespaces need root and `ip`: {WHY_NOT}"
)

SERVE = """
run: |
  echo {name} > who
  exec python3 -m http.server {port}
"""
"""A job binding one fixed port, as most SkyPilot service examples do (`who` says which)."""


def fetch(url: str, timeout: float = 1.0) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return str(reply.read().decode())
    except (urllib.error.URLError, OSError):
        return None


def namespaces() -> set[str]:
    try:
        return {p.name for p in NETNS_DIR.iterdir()}
    except OSError:
        return set()


def node_namespaces(stix: Stix) -> list[str]:
    """The namespaces recorded for nodes of this stix home."""
    return [
        net.name
        for networks in _subnets()
        for net in networks.records()
        if net.node_dir.is_relative_to(stix.home)
    ]


def _subnets() -> list[NodeNetworks]:
    from stixd.providers.local.netns import every_subnet

    return every_subnet()


def veths_on_switch(networks: NodeNetworks) -> set[str]:
    shown = subprocess.run(
        ["ip", "-n", networks.switch, "-br", "link"], capture_output=True, text=True, check=False
    )
    return {line.split("@")[0] for line in shown.stdout.splitlines() if line.startswith("stx")}


def serving(name: str, port: int = 8080) -> str:
    return SERVE.format(name=name, port=port)


def launch_server(stix: Stix, task_file, name: str, port: int = 8080) -> str:
    """Launch a cluster serving on ``port``; its head's address."""
    stix.run("launch", "-c", name, "-y", "-d", str(task_file(serving(name, port))), check=True)
    ip = str(stix.clusters()[name]["head_ip"])
    wait_until(lambda: fetch(f"http://{ip}:{port}/who") == f"{name}\n", timeout=20)
    return ip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def networks() -> NodeNetworks:
    return NodeNetworks("10.177.0.0/16")


@needs_namespaces
def test_two_clusters_serve_one_fixed_port_each_at_its_own_address(stix: Stix, task_file) -> None:
    first = launch_server(stix, task_file, "web1")
    second = launch_server(stix, task_file, "web2")
    assert first != second and "127.0.0.1" not in (first, second)
    assert fetch(f"http://{first}:8080/who") == "web1\n"
    assert fetch(f"http://{second}:8080/who") == "web2\n"
    assert stix.run("ssh", "web1", "cat who", check=True).stdout == "web1\n"
    # a shell on the node is in the node's network: its loopback is the node's own
    own = "import urllib.request as u; print(u.urlopen('http://127.0.0.1:8080/who').read())"
    assert "web2" in stix.run("ssh", "web2", f'python3 -c "{own}"', check=True).stdout


@needs_namespaces
def test_a_clusters_nodes_reach_each_other_at_their_node_ips(stix: Stix, task_file) -> None:
    task = task_file(
        """
num_nodes: 2
run: |
  python3 -m http.server 8081 --bind 0.0.0.0 >/dev/null 2>served &
  other=$(echo "$SKYPILOT_NODE_IPS" | sed -n "$((2 - SKYPILOT_NODE_RANK))p")
  python3 - "$other" <<'EOF'
  import sys, time, urllib.request
  for _ in range(100):
      try:
          urllib.request.urlopen(f"http://{sys.argv[1]}:8081/", timeout=1)
          print("reached", sys.argv[1]); break
      except OSError:
          time.sleep(0.1)
  EOF
  for _ in $(seq 100); do grep -q GET served && break; sleep 0.1; done  # the other reached me
  kill %1
"""
    )
    out = stix.run("launch", "-c", "pair", "-y", str(task), check=True).stdout
    reached = [line.split("reached ")[1] for line in out.splitlines() if "reached " in line]
    assert len(set(reached)) == 2 and not any(ip.startswith("127.") for ip in reached)


@needs_namespaces
def test_down_removes_the_namespaces_and_veths(
    stix: Stix, task_file, networks: NodeNetworks
) -> None:
    stix.run("launch", "-c", "two", "-y", "--num-nodes", "2", "true", check=True)
    made = node_namespaces(stix)
    assert len(made) == 2 and set(made) <= namespaces()
    veths = {"stx" + name.removeprefix("stix-") for name in made}
    assert veths <= veths_on_switch(networks)
    stix.run("down", "-y", "two", check=True)
    assert not set(made) & namespaces()
    assert not veths & veths_on_switch(networks)
    assert node_namespaces(stix) == []


@needs_namespaces
def test_down_after_kill_9_of_the_daemon_removes_the_namespace(stix: Stix, task_file) -> None:
    ip = launch_server(stix, task_file, "crash")
    made = node_namespaces(stix)
    stix.kill_daemon()
    assert fetch(f"http://{ip}:8080/who") == "crash\n"  # the node outlives the daemon
    stix.run("down", "-y", "crash", check=True)
    assert not set(made) & namespaces()
    assert fetch(f"http://{ip}:8080/who", timeout=0.3) is None


@pytest.fixture
def doomed_home() -> Iterator[Stix]:
    """A second stix home that a test deletes under its running clusters, as a crashed run
    would; whatever is left of it is removed at the end."""
    home = Path(tempfile.mkdtemp(prefix="stxdoom", dir="/tmp"))
    try:
        yield Stix(home)
    finally:
        kill_everything_under(home)
        shutil.rmtree(home, ignore_errors=True)


@needs_namespaces
def test_a_namespace_left_by_a_crashed_run_is_found_and_removed(
    stix: Stix, doomed_home: Stix, networks: NodeNetworks
) -> None:
    doomed_home.run("launch", "-c", "lost", "-y", "true", check=True)
    (left,) = node_namespaces(doomed_home)
    for pid in processes_mentioning(str(doomed_home.home)):  # the run crashes: all of it dies
        subprocess.run(["kill", "-9", str(pid)], check=False)
    wait_until(lambda: not processes_mentioning(str(doomed_home.home)), timeout=10)
    shutil.rmtree(doomed_home.home)
    assert left in namespaces()
    # it crashed a while ago: the scan leaves alone what is younger than a launch may take
    record = networks.dir / f"{left}.json"
    raw = json.loads(record.read_text())
    record.write_text(json.dumps({**raw, "created": raw["created"] - 3600}))

    found = stix.json("leaks")["leaks"]
    assert {"infra": "local", "id": left, "kind": "instance"}.items() <= next(
        leak for leak in found if leak["id"] == left
    ).items()
    cleaned = stix.json("leaks", "--terminate", "-y")
    assert left in cleaned["terminated"]
    assert left not in namespaces() and not record.exists()


@needs_namespaces
def test_a_live_clusters_namespace_is_no_leak(
    stix: Stix, task_file, networks: NodeNetworks
) -> None:
    stix.run("launch", "-c", "kept", "-y", "true", check=True)
    (made,) = node_namespaces(stix)
    provider = NamespacedLocalProvider(stix.home, network=networks)
    found = anyio.run(provider.leaks, provider.regions(), {"kept"}, 0.0)
    assert made not in [leak.id for leak in found]
    orphaned = anyio.run(provider.leaks, provider.regions(), set(), 0.0)
    assert made in [leak.id for leak in orphaned]


def test_host_network_shares_this_machines_address_and_a_second_bind_fails(
    stix: Stix, task_file
) -> None:
    (stix.home / "config.yaml").write_text(yaml.safe_dump({"local": {"network": "host"}}))
    check = stix.run("check", check=True).stdout
    assert "nodes share this machine's network (local.network is host)" in check
    port = free_port()  # this machine's own port space: 8080 may be taken here
    ip = launch_server(stix, task_file, "only", port)
    assert ip == "127.0.0.1" and node_namespaces(stix) == []
    stix.run("launch", "-c", "clash", "-y", "-d", str(task_file(serving("x", port))), check=True)
    log = ""
    deadline = time.monotonic() + 20
    while "Address already in use" not in log and time.monotonic() < deadline:
        log = stix.run("logs", "clash", "1", "--no-follow").stdout
    assert "Address already in use" in log
    assert fetch(f"http://127.0.0.1:{port}/who") == "only\n"


@needs_namespaces
def test_a_nodes_network_is_made_once(networks: NodeNetworks, tmp_path: Path) -> None:
    """A second `ensure` finds what the first made: the same address and the same namespace
    (its file's inode), nothing made again. How fast, bench/bench_local_netns.py measures."""
    node = tmp_path / "clusters" / "bench" / "node-0"
    try:
        net = networks.ensure(node)
        made = (NETNS_DIR / net.name).stat().st_ino
        assert networks.ensure(node) == net  # idempotent: the same address
        assert (NETNS_DIR / net.name).stat().st_ino == made
    finally:
        remove_under(tmp_path)
    assert net.name not in namespaces()


def test_nodes_get_the_upstream_resolvers_when_this_machine_names_a_loopback_one(
    tmp_path: Path,
) -> None:
    stub, upstream = tmp_path / "stub.conf", tmp_path / "upstream.conf"
    upstream.write_text("nameserver 192.0.2.53\nsearch example\n")
    stub.write_text("# systemd-resolved\nnameserver 127.0.0.53\noptions edns0\n")
    assert node_resolver(stub, upstream) == upstream
    assert node_resolver(stub, tmp_path / "missing") is None  # nothing better known
    assert node_resolver(upstream, upstream) is None  # reachable from a namespace as it is
    upstream.write_text("nameserver ::1\n")
    assert node_resolver(stub, upstream) is None


@needs_namespaces
def test_a_nodes_agent_sees_the_resolver_file_it_was_given(
    networks: NodeNetworks, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    resolver = tmp_path / "resolv.conf"
    resolver.write_text("nameserver 192.0.2.53\n")
    provider = NamespacedLocalProvider(home, network=networks, resolver=resolver)
    pyz = build_agent_zipapp(tmp_path / "agent")
    request = ProvisionRequest("dns", 1, pyz)

    async def launch_and_read() -> tuple[str, str]:
        try:
            (node,) = await provider.launch(request)
            assert node.pid is not None and node.ip != "127.0.0.1"
            seen = Path(f"/proc/{node.pid}/root/etc/resolv.conf").read_text()
            return node.ip, seen
        finally:
            await provider.terminate("dns")

    try:
        ip, seen = anyio.run(launch_and_read)
    finally:
        kill_everything_under(home)
    assert seen == "nameserver 192.0.2.53\n"
    assert Path("/etc/resolv.conf").read_text() != seen  # this machine's is left as it was
    assert ip.startswith("10.177.")


def test_insisting_on_namespaces_where_they_cannot_be_made_fails_saying_why(
    tmp_path: Path,
) -> None:
    networks = NodeNetworks("10.177.0.0/16", run_dir=tmp_path, refused="stixd is not root")
    with pytest.raises(NetworkError) as refused:
        networks.ensure(tmp_path / "clusters" / "c" / "node-0")
    message = str(refused.value)
    assert "stixd is not root" in message and "network: host" in message
    assert "\n" not in message and not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("subnet", "error"),
    [
        ("8.8.0.0/16", "must be a private IPv4 network"),
        ("fd00::/64", "must be a private IPv4 network"),
        ("10.0.0.0/30", "between a /8 and a /24"),
        ("10.1.0.1/16", "has host bits set"),
    ],
)
def test_a_subnet_stix_cannot_own_is_refused_in_the_config(subnet: str, error: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=error):
        msgspec.convert({"subnet": subnet}, LocalConfig)
    assert msgspec.convert({"subnet": "100.80.0.0/16"}, LocalConfig).subnet == "100.80.0.0/16"


def _primary_address() -> str | None:
    """This machine's address toward the world (not loopback, not a node bridge)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks a route
        except OSError:
            return None
        address = str(s.getsockname()[0])
    return None if address.startswith(("127.", "10.177.", "10.178.")) else address


def _outbound_rule(networks: NodeNetworks) -> bool:
    if shutil.which("nft"):
        table = ["nft", "list", "table", "ip", f"stix-{networks.gateway_link}"]
        return subprocess.run(table, capture_output=True, check=False).returncode == 0
    rules = subprocess.run(["iptables", "-t", "nat", "-S"], capture_output=True, text=True)
    return networks.gateway_link in rules.stdout


@needs_namespaces
@pytest.mark.skipif(
    not (shutil.which("nft") or shutil.which("iptables")), reason="outbound needs nft or iptables"
)
def test_a_subnet_gets_a_switch_and_a_way_out_that_go_with_its_last_node(tmp_path: Path) -> None:
    networks = NodeNetworks("10.178.0.0/24", run_dir=tmp_path)  # its own switch, not the default
    primary = _primary_address()
    try:
        net = networks.ensure(tmp_path / "clusters" / "c" / "node-0")
        assert Path("/sys/class/net", networks.gateway_link).exists()
        assert _outbound_rule(networks)
        with socket.create_server(("0.0.0.0", 0)) as server:
            port = server.getsockname()[1]
            # the node reaches this machine at its gateway, and beyond the subnet by its route
            for target in [networks.gateway, *([primary] if primary else [])]:
                reach = f"import socket; socket.create_connection(('{target}', {port}), 5)"
                inside = ["ip", "netns", "exec", net.name, sys.executable, "-c", reach]
                assert subprocess.run(inside, capture_output=True, timeout=10).returncode == 0
                server.accept()[0].close()
        networks.remove(net)
        assert net.name not in namespaces() and networks.switch not in namespaces()
        assert not Path("/sys/class/net", networks.gateway_link).exists()
        assert not _outbound_rule(networks)
    finally:
        remove_under(tmp_path, run_dir=tmp_path)


@needs_namespaces
def test_a_node_made_with_a_namespace_keeps_it_after_a_switch_to_host_until_down(
    stix: Stix, task_file
) -> None:
    ip = launch_server(stix, task_file, "before")
    (made,) = node_namespaces(stix)
    stix.run("daemon", "stop", check=True)
    (stix.home / "config.yaml").write_text(yaml.safe_dump({"local": {"network": "host"}}))
    assert stix.clusters()["before"]["head_ip"] == ip  # still there, at its own address
    assert fetch(f"http://{ip}:8080/who") == "before\n"
    stix.run("down", "-y", "before", check=True)
    assert made not in namespaces() and node_namespaces(stix) == []


def _answers_ping_of(net_from: str, address: str) -> bool:
    """Whether a TCP connect from inside namespace ``net_from`` to ``address`` gets an answer
    (a refusal is an answer: the address is there)."""
    probe = (
        "import socket, sys\n"
        "try:\n"
        f"    socket.create_connection(('{address}', 9), 3)\n"
        "except ConnectionRefusedError:\n"
        "    pass\n"
        "except OSError:\n"
        "    sys.exit(1)\n"
    )
    argv = ["ip", "netns", "exec", net_from, sys.executable, "-c", probe]
    return subprocess.run(argv, capture_output=True, timeout=10).returncode == 0


@needs_namespaces
def test_a_node_or_switch_left_half_made_by_a_killed_daemon_is_made_whole(
    tmp_path: Path,
) -> None:
    networks = NodeNetworks("10.178.1.0/24", run_dir=tmp_path, outbound=False)
    node = tmp_path / "clusters" / "c" / "node-0"
    try:
        net = networks.ensure(node)
        # killed half way through the node: its namespace is there, its link is not
        subprocess.run(["ip", "-n", net.name, "link", "del", "eth0"], check=True)
        (networks.dir / f"{net.name}.made").unlink()
        assert networks.ensure(node) == net
        assert _answers_ping_of(net.name, networks.gateway)

        # killed half way through the switch (its bridge missing), with a node on it already
        networks.remove(net)
        kept = networks.ensure(tmp_path / "clusters" / "c" / "node-9")
        subprocess.run(["ip", "-n", networks.switch, "link", "del", "br0"], check=True)
        (networks.dir / "switch.made").unlink()
        one = networks.ensure(tmp_path / "clusters" / "c" / "node-1")
        assert networks.record(kept.node_dir) == kept  # the node already there is linked again
        assert _answers_ping_of(one.name, kept.ip) and _answers_ping_of(kept.name, one.ip)
        assert _answers_ping_of(kept.name, networks.gateway)
    finally:
        remove_under(tmp_path, run_dir=tmp_path)
    assert networks.switch not in namespaces()


@needs_namespaces
def test_a_subnet_this_machine_already_routes_is_refused_and_nothing_is_made(
    tmp_path: Path,
) -> None:
    link = f"stxclash{os.getpid() % 10000}"  # and its peer: under 15 characters
    pair = ["ip", "link", "add", link, "type", "veth", "peer", "name", f"{link}p"]
    subprocess.run(pair, check=True)  # a veth pair: this kernel may have no dummy links
    try:
        subprocess.run(["ip", "addr", "add", "10.175.5.1/24", "dev", link], check=True)
        for end in (link, f"{link}p"):
            subprocess.run(["ip", "link", "set", end, "up"], check=True)
        networks = NodeNetworks("10.175.0.0/16", run_dir=tmp_path)  # no other test uses 10.175
        with pytest.raises(NetworkError, match=f"overlaps 10.175.5.0/24 via {link}"):
            networks.ensure(tmp_path / "clusters" / "c" / "node-0")
        assert networks.switch not in namespaces()
        assert not Path("/sys/class/net", networks.gateway_link).exists()
    finally:
        subprocess.run(["ip", "link", "del", link], check=False)
        remove_under(tmp_path, run_dir=tmp_path)


def test_a_vpns_split_default_route_is_no_overlap_but_its_private_range_is() -> None:
    subnet = ipaddress.IPv4Network("10.177.0.0/16")
    routes = [
        {"dst": "default", "dev": "eth0"},
        {"dst": "0.0.0.0/1", "dev": "tun0"},  # OpenVPN's redirect-gateway def1
        {"dst": "128.0.0.0/1", "dev": "tun0"},
        {"dst": "192.0.2.0/24", "dev": "eth0"},
        "garbage",
        {"dst": "not an address", "dev": "x"},
    ]
    assert overlapping_route(subnet, json.dumps(routes)) is None
    vpn = [*routes, {"dst": "10.0.0.0/8", "dev": "wg0"}]
    assert overlapping_route(subnet, json.dumps(vpn)) == "10.0.0.0/8 via wg0"
    assert overlapping_route(subnet, "{not json") is None
