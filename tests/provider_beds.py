"""The worlds the provider contract (tests/test_provider_contract.py) runs in, one per provider.

A world is a provider's real surroundings plus the ways to look at them and disturb them from
outside stix, as a user or a cloud would: ``local`` is a stix home on this machine, ``ssh`` real
sshd hosts in network namespaces (tests/sshbed.py), ``aws`` a moto server whose instances are
stood in for by such hosts (tests/awsbed.py), ``fake`` the in-memory cloud
(stixd/providers/fake/). Each world counts what exists (agents, instances), breaks a node, reads
a node's files, plants a leak and tries a port, each in the provider's own terms.

Each provider declares what it cannot do in ONE place: its ``Bed`` in ``BEDS``, as ability ->
why. ``ABILITIES`` says how an ability shows on a provider object, where it does (a protocol
checked with ``isinstance``); the contract holds every declaration against both that check and
the behaviour itself, so a declaration cannot outlive the inability it states.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import socket
import tempfile
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

import anyio
import boto3  # type: ignore[import-untyped]

from stixd.agent_bundle import build_id
from stixd.agent_client import AgentClient
from stixd.providers.abilities import (
    FindsLeaks,
    HasShell,
)
from stixd.providers.aws.instances import TAG_CLUSTER, TAG_RANK, TAG_USER
from stixd.providers.aws.network import group_name
from stixd.providers.aws.provider import AwsProvider
from stixd.providers.aws.records import Records
from stixd.providers.base import NodeInfo, NodeStatus, Provider, ProvisionRequest
from stixd.providers.fake.provider import FakeProvider
from stixd.providers.kubernetes import ports as kube_ports
from stixd.providers.kubernetes.agents import ref_of
from stixd.providers.kubernetes.config import KubernetesConfig, PortMode
from stixd.providers.kubernetes.contexts import Clients, read_kubeconfig
from stixd.providers.kubernetes.deferred import DeferredShell
from stixd.providers.kubernetes.podspec import LABEL_CLUSTER, LABEL_OWNER
from stixd.providers.kubernetes.provider import KubernetesProvider
from stixd.providers.kubernetes.records import Records as KubeRecords
from stixd.providers.kubernetes.seams import PodRef
from stixd.providers.local.config import DEFAULT_SUBNET
from stixd.providers.local.netns import NodeNetworks, node_resolver, remove_under
from stixd.providers.local.netns import unavailable_reason as netns_unavailable
from stixd.providers.local.networked import NamespacedLocalProvider
from stixd.providers.local.node import marked_processes
from stixd.providers.local.provider import LocalProvider
from stixd.providers.shared.ssh_transport import SshSettings
from stixd.providers.ssh.pools import Allocations, load_pools
from stixd.providers.ssh.provider import SshProvider
from tests.awsbed import REGION, AwsBed
from tests.kube_fake.process import FakeProcess
from tests.sshbed import (
    Host,
    SshBed,
    hosts_down,
    hosts_up,
    leftovers,
    start_sshd,
    unavailable_reason,
)

NODES = 2
"""Every world can hold a cluster of this many nodes (the ssh and aws worlds have as many hosts)."""
SSH_SETTINGS = SshSettings(connect_timeout=3.0, keepalive_interval=2.0, keepalive_count_max=3)
POOL = "contract"
PORT_BANNER = b"stix-port-ok"
REACH_WITHIN_S = 20.0


# -- abilities -------------------------------------------------------------------------------
# The abilities only some providers have are the providers' own protocols
# (stixd/providers/abilities.py), checked with ``isinstance`` as the core does.


ABILITIES: dict[str, Callable[[object], bool]] = {
    "shell": lambda p: isinstance(p, HasShell),
    "leaks": lambda p: isinstance(p, FindsLeaks),
}
"""Ability -> whether a provider object has it, for abilities that show in its type. The others
(``restart``, ``stop``, ``sync``, ``ports``: reachable as the provider's network allows, opened
by ``OpensPorts`` or not) are judged by their behaviour alone."""


@dataclasses.dataclass(frozen=True)
class Disturbed:
    """What ``query`` must say after an out-of-band change, and which ranks' machines the cloud
    took (what a provider that reports lost nodes must name)."""

    statuses: list[NodeStatus]
    lost: list[int]


# -- the worlds ------------------------------------------------------------------------------


class World(abc.ABC):
    """One provider's surroundings for a test module; ``begin``/``end`` bracket each test."""

    stops_machines = True
    """A stopped node's machine runs nothing (false where a stand-in outlives its instance)."""

    def __init__(self, bed: Bed, pyz: Path) -> None:
        self.bed = bed
        self.pyz = pyz
        self.home = Path("/nonexistent")
        self._clusters: list[str] = []

    # per test
    def begin(self) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="stxk", dir="/tmp"))
        self._clusters = []

    async def end(self) -> None:
        """Terminate what the test made (from a fresh provider, as a restarted daemon would),
        close every provider opened, remove the home."""
        await self.heal()
        cleaner = self.open()
        for cluster in self._clusters:
            with contextlib.suppress(Exception):
                await cleaner.terminate(cluster)
        await self.close_providers()
        shutil.rmtree(self.home, ignore_errors=True)

    def request(self, cluster: str, nodes: int = NODES, **resources: object) -> ProvisionRequest:
        self._clusters.append(cluster)
        return ProvisionRequest(cluster, nodes, self.pyz, {**self.resources(), **resources})

    # what each world says in its own terms
    def resources(self) -> Mapping[str, object]:
        return {}

    @abc.abstractmethod
    def open(self) -> Provider:
        """A new provider on the same home and cloud: what a restarted daemon makes."""
        raise NotImplementedError

    async def close_providers(self) -> None:
        """Close what the providers opened (connections, clients); most hold nothing."""
        return

    async def heal(self) -> None:
        """Undo what ``disturb`` broke in the world itself (a host taken down)."""
        return

    @abc.abstractmethod
    async def made(self, cluster: str) -> int:
        """How many nodes of ``cluster`` exist, counted from outside stix."""
        raise NotImplementedError

    async def settles_at(self, cluster: str, count: int, within: float = 10.0) -> int:
        """How many nodes of ``cluster`` exist once the count reaches ``count`` or ``within``
        seconds pass: a second agent started for a node that has one quits at once, seeing the
        first hold the node's lock, and is no node."""
        with anyio.move_on_after(within):
            while await self.made(cluster) != count:
                await anyio.sleep(0.05)
        return await self.made(cluster)

    async def left_after(self, cluster: str, within: float = 5.0) -> list[str]:
        """What of ``cluster`` is still there once nothing is, or ``within`` seconds pass: an
        agent stops answering before its process has exited."""
        with anyio.move_on_after(within):
            while await self.leftovers(cluster):
                await anyio.sleep(0.05)
        return await self.leftovers(cluster)

    @abc.abstractmethod
    async def disturb(self, provider: Provider, cluster: str, nodes: list[NodeInfo]) -> Disturbed:
        """Change the cluster behind stix's back, as a user, the cloud or a failure would."""
        raise NotImplementedError

    @abc.abstractmethod
    async def leftovers(self, cluster: str) -> list[str]:
        """What of ``cluster`` exists (processes, files, machines, allocations), by name."""
        raise NotImplementedError

    async def files_at(self, node: NodeInfo, dest: str) -> set[str]:
        raise NotImplementedError

    async def plant_leak(self, provider: Provider, cluster: str) -> None:
        raise NotImplementedError(f"{self.bed.name} has no leaks to plant")

    async def port_reachable(
        self, provider: Provider, cluster: str, node: NodeInfo, port: int, *, job_id: int
    ) -> bool:
        """Whether ``port`` of ``node`` can be reached as the provider means it (a listener
        started as agent job ``job_id`` where the world needs one)."""
        raise NotImplementedError

    def close(self) -> None:
        """End of the module: everything the world made is gone."""
        return


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _args(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def agents_among(pids: Collection[int], cluster: str) -> list[int]:
    """The agents of ``cluster`` among ``pids`` (a job's runner is its agent's child, with the
    same command line: not counted)."""
    found = []
    for pid in pids:
        args = _args(pid)
        if "serve" not in args or "--cluster" not in args:
            continue
        serve, named = args.index("serve"), args.index("--cluster") + 1
        spawner = "-c" in args[:serve]  # the launcher that double-forks into the agent
        if not spawner and named < len(args) and args[named] == cluster:
            found.append(pid)
    return [pid for pid in found if _ppid(pid) not in found]


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


async def _kill(pids: Collection[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with anyio.fail_after(10):
        while any(Path(f"/proc/{pid}/cmdline").exists() and _args(pid) != [""] for pid in pids):
            await anyio.sleep(0.02)


async def listen_on_node(agent: AgentClient, port: int, job_id: int = 1) -> None:
    """A job on the node that answers one connection to ``port`` with ``PORT_BANNER``."""
    script = (
        "import socket\n"
        "s = socket.socket()\n"
        "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        f"s.bind(('0.0.0.0', {port}))\n"
        "s.listen()\n"
        "c, _ = s.accept()\n"
        f"c.sendall({PORT_BANNER!r})\n"
        "c.close()\n"
    )
    await agent.call("submit", job_id=job_id, run=f"exec python3 -c {_sh_quote(script)}")


def _sh_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


async def answers_banner(ip: str, port: int, within: float = REACH_WITHIN_S) -> bool:
    """Whether something at ``ip:port`` sends ``PORT_BANNER`` within ``within`` seconds."""
    with anyio.move_on_after(within):
        while True:
            try:
                async with await anyio.connect_tcp(ip, port) as stream:
                    got = b""
                    with anyio.move_on_after(5):
                        while len(got) < len(PORT_BANNER):
                            got += await stream.receive()
                    if got == PORT_BANNER:
                        return True
            except (OSError, anyio.EndOfStream):
                pass
            await anyio.sleep(0.05)
    return False


class LocalWorld(World):
    def __init__(self, bed: Bed, pyz: Path) -> None:
        super().__init__(bed, pyz)

    def open(self) -> LocalProvider:
        return LocalProvider(self.home)

    def _agents(self, cluster: str) -> list[int]:
        sandbox = LocalProvider(self.home).cluster_dir(cluster)
        marked = [pid for pids in marked_processes(sandbox).values() for pid in pids]
        return agents_among(marked, cluster)

    async def made(self, cluster: str) -> int:
        return len(await anyio.to_thread.run_sync(self._agents, cluster))

    async def disturb(self, provider: Provider, cluster: str, nodes: list[NodeInfo]) -> Disturbed:
        """Kill rank 0's agent: its node is stopped (no agent, nothing of it runs)."""
        assert nodes[0].pid is not None
        await _kill([nodes[0].pid])
        return Disturbed([NodeStatus.STOPPED, NodeStatus.RUNNING], lost=[])

    async def leftovers(self, cluster: str) -> list[str]:
        local = LocalProvider(self.home)
        found = [f"agent process {pid}" for pid in self._agents(cluster)]
        sandbox = local.cluster_dir(cluster)
        found += [f"process {p} of {d}" for d, ps in marked_processes(sandbox).items() for p in ps]
        if sandbox.exists():
            found.append(f"directory {sandbox}")
        for rank in range(NODES):
            sock = Path(local.socket_path(local.state_dir(local.node_dir(cluster, rank))))
            if sock.exists():
                found.append(f"socket {sock}")
        return found

    async def files_at(self, node: NodeInfo, dest: str) -> set[str]:
        return files_under(LocalProvider.resolve_dest(node, dest))

    async def port_reachable(
        self, provider: Provider, cluster: str, node: NodeInfo, port: int, *, job_id: int
    ) -> bool:
        await listen_on_node(provider.connector(node), port, job_id)
        return await answers_banner(node.ip, port)


class LocalNetnsWorld(LocalWorld):
    """The local world with a network namespace per node, as a root stixd makes them."""

    def open(self) -> LocalProvider:
        networks = NodeNetworks(DEFAULT_SUBNET)
        return NamespacedLocalProvider(self.home, network=networks, resolver=node_resolver())

    async def end(self) -> None:
        await super().end()
        remove_under(self.home)  # what a failed test left

    async def leftovers(self, cluster: str) -> list[str]:
        sandbox = LocalProvider(self.home).cluster_dir(cluster)
        nets = NodeNetworks(DEFAULT_SUBNET).records()
        found = [f"namespace {n.name}" for n in nets if n.node_dir.parent == sandbox]
        return found + await super().leftovers(cluster)

    async def plant_leak(self, provider: Provider, cluster: str) -> None:
        """A node whose cluster no record knows (a launch whose daemon lost its state)."""
        await provider.launch(ProvisionRequest(cluster, 1, self.pyz))


class HostsWorld(World):
    """A world whose nodes are sshd hosts in network namespaces."""

    def __init__(self, bed: Bed, pyz: Path) -> None:
        super().__init__(bed, pyz)
        self.hosts: SshBed = hosts_up(NODES)
        self._down: list[Host] = []

    def host_of(self, node: NodeInfo) -> Host:
        [host] = [h for h in self.hosts.hosts if h.ip == node.ip]
        return host

    def agents_on(self, cluster: str) -> list[int]:
        return [pid for h in self.hosts.hosts for pid in agents_among(h.pids(), cluster)]

    async def files_at(self, node: NodeInfo, dest: str) -> set[str]:
        assert dest.startswith("~/"), dest
        return files_under(self.host_of(node).home / dest[2:])

    async def heal(self) -> None:
        down, self._down = self._down, []
        for host in down:
            await anyio.to_thread.run_sync(start_sshd, host)

    async def end(self) -> None:
        await super().end()
        # what a test may leave on a host behind stix's back (the aws world's stand-in hosts
        # outlive their instances): no agent of the test's clusters stays
        for cluster in self._clusters:
            await _kill(self.agents_on(cluster))

    def close(self) -> None:
        hosts_down(self.hosts)
        left = leftovers(self.hosts)
        assert not left, f"the SSH test bed left things behind: {left}"


class SshWorld(HostsWorld):
    def begin(self) -> None:
        super().begin()
        addresses = "".join(f"    - {h.ip}\n" for h in self.hosts.hosts)
        (self.home / "ssh_node_pools.yaml").write_text(
            f"{POOL}:\n  user: root\n  identity_file: {self.hosts.key}\n  hosts:\n{addresses}"
        )
        self._opened: list[SshProvider] = []

    def resources(self) -> Mapping[str, object]:
        return {"pool": POOL}

    def open(self) -> SshProvider:
        provider = SshProvider(self.home, load_pools(self.home), SSH_SETTINGS)
        self._opened.append(provider)
        return provider

    async def close_providers(self) -> None:
        for provider in self._opened:
            await provider.aclose()

    async def made(self, cluster: str) -> int:
        return len(await anyio.to_thread.run_sync(self.agents_on, cluster))

    async def disturb(self, provider: Provider, cluster: str, nodes: list[NodeInfo]) -> Disturbed:
        """Kill rank 0's agent (its host answers without one: stopped) and take rank 1's host
        down: its sshd and every session die (the host does not answer: unreachable)."""
        await _kill(agents_among(self.host_of(nodes[0]).pids(), cluster))
        down = self.host_of(nodes[1])
        self._down.append(down)
        await anyio.to_thread.run_sync(down.kill_sshd)
        return Disturbed([NodeStatus.STOPPED, NodeStatus.UNREACHABLE], lost=[])

    async def leftovers(self, cluster: str) -> list[str]:
        found = [f"agent process {pid}" for pid in self.agents_on(cluster)]
        holding = Allocations(self.home).read()
        if cluster in holding:
            found.append(f"allocation of {cluster} in {Allocations(self.home).path}")
        for host in self.hosts.hosts:
            for rank in range(NODES):
                node_dir = host.home / ".stix" / "nodes" / f"{cluster}-{rank}"
                if node_dir.exists():
                    found.append(f"{host.name}:{node_dir}")
            if not holding and (host.home / "sky_workdir").exists():
                found.append(f"{host.name}:{host.home / 'sky_workdir'}")
        return found

    async def port_reachable(
        self, provider: Provider, cluster: str, node: NodeInfo, port: int, *, job_id: int
    ) -> bool:
        await listen_on_node(provider.connector(node), port, job_id)
        return await answers_banner(node.ip, port)


class AwsWorld(HostsWorld):
    """moto as the cloud; each instance's node is the host of its rank."""

    stops_machines = False  # moto stops the instance; the host standing in for it runs on

    def __init__(self, bed: Bed, pyz: Path) -> None:
        super().__init__(bed, pyz)
        try:
            self.aws = AwsBed()
        except BaseException:
            super().close()
            raise
        self._client: Any = None
        self._image = ""

    def begin(self) -> None:
        super().begin()
        self.aws.reset()
        self._image = self._image or self.aws.an_image()
        self._opened: list[AwsProvider] = []

    async def ec2(self, operation: str, **params: Any) -> Any:
        """One EC2 call straight to moto (behind stix's back), on one client kept for the
        world: making a client costs most of a second."""

        def call() -> Any:
            if self._client is None:
                self._client = boto3.client(
                    "ec2",
                    region_name=REGION,
                    endpoint_url=self.aws.moto_url,
                    aws_access_key_id="testing",
                    aws_secret_access_key="testing",
                )
            return getattr(self._client, operation)(**params)

        return await anyio.to_thread.run_sync(call)

    def env(self) -> dict[str, str]:
        return {
            **self.aws.env,
            "HOME": "/nonexistent",
            "AWS_CONFIG_FILE": "/nonexistent/config",
            "STIX_TEST_SSH_HOSTS": ",".join(f"root@{h.ip}:22" for h in self.hosts.hosts),
            "STIX_TEST_SSH_KEY": str(self.hosts.key),
        }

    def resources(self) -> Mapping[str, object]:
        return {"region": REGION, "instance_type": "t3.micro", "image_id": self._image}

    def open(self) -> AwsProvider:
        provider = AwsProvider(self.home, self.env(), SSH_SETTINGS)
        self._opened.append(provider)
        return provider

    async def close_providers(self) -> None:
        for provider in self._opened:
            await provider.aclose()

    async def _live(self, cluster: str) -> list[dict[str, Any]]:
        found = await self.ec2(
            "describe_instances",
            Filters=[
                {"Name": f"tag:{TAG_CLUSTER}", "Values": [cluster]},
                {
                    "Name": "instance-state-name",
                    "Values": ["pending", "running", "stopping", "stopped"],
                },
            ],
        )
        return [i for r in found["Reservations"] for i in r["Instances"]]

    async def made(self, cluster: str) -> int:
        return len(await self._live(cluster))

    async def disturb(self, provider: Provider, cluster: str, nodes: list[NodeInfo]) -> Disturbed:
        """Through EC2 itself: stop rank 0's instance, terminate rank 1's."""
        by_rank: dict[str, str] = {}
        for inst in await self._live(cluster):
            tags = {t["Key"]: t["Value"] for t in inst["Tags"]}
            by_rank[tags[TAG_RANK]] = str(inst["InstanceId"])
        await self.ec2("stop_instances", InstanceIds=[by_rank["0"]])
        await self.ec2("terminate_instances", InstanceIds=[by_rank["1"]])
        return Disturbed([NodeStatus.STOPPED, NodeStatus.UNREACHABLE], lost=[0, 1])

    async def _groups(self, cluster: str) -> list[dict[str, Any]]:
        name = group_name(cluster)
        found = await self.ec2(
            "describe_security_groups", Filters=[{"Name": "group-name", "Values": [name]}]
        )
        return [g for g in found["SecurityGroups"] if g["GroupName"] == name]

    async def leftovers(self, cluster: str) -> list[str]:
        found = [f"instance {i['InstanceId']}" for i in await self._live(cluster)]
        found += [f"security group {g['GroupId']}" for g in await self._groups(cluster)]
        if Records(self.home).get(cluster) is not None:
            found.append(f"record of {cluster} in {Records(self.home).path}")
        return found

    async def plant_leak(self, provider: Provider, cluster: str) -> None:
        """An instance tagged as stix's for a cluster no record knows (a launch whose daemon
        lost its state)."""
        assert isinstance(provider, AwsProvider)
        tags = [{"Key": TAG_CLUSTER, "Value": cluster}, {"Key": TAG_USER, "Value": provider.user}]
        await self.ec2(
            "run_instances",
            ImageId=self._image,
            MinCount=1,
            MaxCount=1,
            TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
        )

    async def port_reachable(
        self, provider: Provider, cluster: str, node: NodeInfo, port: int, *, job_id: int
    ) -> bool:
        """Open where EC2 is concerned: the cluster's security group lets the port in."""
        [group] = await self._groups(cluster)
        rules = group["IpPermissions"]
        return any(r.get("FromPort", -1) <= port <= r.get("ToPort", -1) for r in rules)

    def close(self) -> None:
        try:
            if self._client is not None:
                self._client.close()
            self.aws.close()
        finally:
            super().close()


class AwsSpotWorld(AwsWorld):
    """The aws world on spot instances, which EC2 cannot stop."""

    def resources(self) -> Mapping[str, object]:
        return {**super().resources(), "use_spot": True}


class FakeWorld(World):
    """The fake's cloud lives in the provider object: every instance opened is part of it."""

    def begin(self) -> None:
        super().begin()
        self._opened: list[FakeProvider] = []

    def open(self) -> FakeProvider:
        provider = FakeProvider(("fake-1", "fake-2"), build=build_id())
        self._opened.append(provider)
        return provider

    async def made(self, cluster: str) -> int:
        return sum([len(await p.query(cluster)) for p in self._opened])

    async def disturb(self, provider: Provider, cluster: str, nodes: list[NodeInfo]) -> Disturbed:
        """The fake's own spot preemption: the nodes vanish."""
        assert isinstance(provider, FakeProvider)
        assert provider.preempt([cluster]) == [cluster]
        return Disturbed([], lost=[n.rank for n in nodes])

    async def leftovers(self, cluster: str) -> list[str]:
        found = [
            f"cluster {cluster} in a fake cloud" for p in self._opened if cluster in p.clusters()
        ]
        found += [f"lost node {x.rank}" for p in self._opened for x in p.lost_nodes(cluster)]
        return found

    async def settles_at(self, cluster: str, count: int, within: float = 10.0) -> int:
        return await self.made(cluster)  # in memory: no node is on its way in or out

    async def files_at(self, node: NodeInfo, dest: str) -> set[str]:
        return set()  # a fake node has no disk

    async def port_reachable(
        self, provider: Provider, cluster: str, node: NodeInfo, port: int, *, job_id: int
    ) -> bool:
        return False  # nor a network


class KubernetesWorld(World):
    """The fake Kubernetes API server (tests/kube_fake): pods are sandboxes of real processes
    on this machine, reached by stix over exec only; kubectl looks from outside."""

    def __init__(self, bed: Bed, pyz: Path) -> None:
        super().__init__(bed, pyz)
        self.state = Path(tempfile.mkdtemp(prefix="stxk-kube", dir="/tmp"))
        # pods with addresses of their own where this machine can make them (root): ports go
        # through a LoadBalancer service, the default; else pods share this machine's network
        # (and its ports with the services), so ports are the pods' own (podip)
        own = netns_unavailable() is None
        self.ports: PortMode = "loadbalancer" if own else "podip"
        self.kube = FakeProcess(self.state, "--pod-network", "namespace" if own else "host")

    def begin(self) -> None:
        super().begin()
        self._opened: list[KubernetesProvider] = []

    def open(self) -> KubernetesProvider:
        kubeconfig = read_kubeconfig({"KUBECONFIG": str(self.kube.kubeconfig)})
        clients = Clients(kubeconfig, self.home / "kubernetes" / "certs")
        provider = KubernetesProvider(
            self.home,
            KubernetesConfig(ports=self.ports),
            kubeconfig,
            lambda pod: DeferredShell(clients, pod),
            clients=clients,
        )
        self._opened.append(provider)
        return provider

    async def close_providers(self) -> None:
        for provider in self._opened:
            await provider.aclose()

    async def _objects(self, cluster: str) -> list[dict[str, Any]]:
        def listed() -> list[dict[str, Any]]:
            found = self.kube.kubectl_json(
                "get", "pods,services", "-l", f"{LABEL_CLUSTER}={cluster}"
            )
            return [o for o in found["items"] if not o["metadata"].get("deletionTimestamp")]

        return await anyio.to_thread.run_sync(listed)

    async def made(self, cluster: str) -> int:
        return len([o for o in await self._objects(cluster) if o["kind"] == "Pod"])

    async def disturb(self, provider: Provider, cluster: str, nodes: list[NodeInfo]) -> Disturbed:
        """``kubectl delete pod`` of rank 0's pod: a lost node; rank 1 runs on."""
        name = self.ref(nodes[0]).name
        await anyio.to_thread.run_sync(
            lambda: self.kube.kubectl("delete", "pod", name, "--wait=true")
        )
        return Disturbed([NodeStatus.UNREACHABLE, NodeStatus.RUNNING], lost=[0])

    @staticmethod
    def ref(node: NodeInfo) -> PodRef:
        return ref_of(node)

    async def leftovers(self, cluster: str) -> list[str]:
        def everything() -> list[dict[str, Any]]:
            found = self.kube.kubectl_json(
                "get", "pods,services", "-l", f"{LABEL_CLUSTER}={cluster}"
            )
            return list(found["items"])

        found = [
            f"{o['kind']} {o['metadata']['name']}"
            for o in await anyio.to_thread.run_sync(everything)
        ]
        if KubeRecords(self.home).where(cluster) is not None:
            found.append(f"record of {cluster} in {KubeRecords(self.home).path}")
        return found

    async def files_at(self, node: NodeInfo, dest: str) -> set[str]:
        assert dest.startswith("~/"), dest
        return files_under(Path(node.home) / dest[2:])  # a fake pod's home is a local folder

    async def plant_leak(self, provider: Provider, cluster: str) -> None:
        """A pod labelled as this home's for a cluster no record knows."""
        assert isinstance(provider, KubernetesProvider)
        labels = {LABEL_CLUSTER: cluster, LABEL_OWNER: provider.owner}
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"{cluster}-0", "labels": labels},
            "spec": {"containers": [{"name": "stix", "image": "x", "command": ["sleep", "600"]}]},
        }
        await anyio.to_thread.run_sync(
            lambda: self.kube.kubectl("apply", "-f", "-", input=json.dumps(pod))
        )

    async def end(self) -> None:
        await super().end()
        selector = ",".join(self._clusters)

        def remove() -> None:  # what a test made behind stix's back (a planted leak)
            self.kube.kubectl(
                "delete", "pods,services", "-l", f"{LABEL_CLUSTER} in ({selector})", "--wait=true"
            )

        if self._clusters:
            await anyio.to_thread.run_sync(remove)

    async def port_reachable(
        self, provider: Provider, cluster: str, node: NodeInfo, port: int, *, job_id: int
    ) -> bool:
        """Where the configured mode exposes it (the service's address, or the pod's IP)."""
        assert isinstance(provider, KubernetesProvider)
        await listen_on_node(provider.connector(node), port, job_id)
        ref = ref_of(node)
        api = await provider.api(ref.context)
        where = await kube_ports.endpoints(
            api, ref.namespace, cluster, provider.owner, [port], self.ports
        )
        host, _, at = where[port].rpartition(":")
        return await answers_banner(host, int(at))

    def close(self) -> None:
        try:
            self.kube.stop()
            assert self.kube.pod_processes() == [], "the fake Kubernetes left pod processes"
        finally:
            shutil.rmtree(self.state, ignore_errors=True)


# -- the declarations ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Bed:
    """A provider in the contract: its world, and what it declares it cannot do (and why)."""

    name: str
    world: Callable[[Bed, Path], World]
    cannot: Mapping[str, str] = dataclasses.field(default_factory=dict)
    slow: bool = False
    """Its world takes long to make or use (mark its cases slow)."""

    def unavailable(self) -> str | None:
        """Why this world cannot be made on this machine (then its cases skip)."""
        if isinstance(self.world, type) and issubclass(self.world, HostsWorld):
            return unavailable_reason()
        if isinstance(self.world, type) and issubclass(self.world, LocalNetnsWorld):
            return netns_unavailable()
        return None


BEDS = [
    Bed(
        "local",
        LocalWorld,
        cannot={"leaks": "local nodes are this machine's processes; down removes every one"},
    ),
    Bed("local-netns", LocalNetnsWorld),
    Bed(
        "ssh",
        SshWorld,
        cannot={"leaks": "pool hosts are the user's own machines: nothing is rented to leak"},
    ),
    Bed("aws", AwsWorld),
    Bed(
        "aws-spot",
        AwsSpotWorld,
        cannot={"stop": "EC2 cannot stop spot instances: stop says so and names `down`"},
        slow=True,
    ),
    Bed(
        "kubernetes",
        KubernetesWorld,
        cannot={"stop": "Kubernetes cannot stop a pod: stop says so and names `down`"},
    ),
    Bed(
        "fake",
        FakeWorld,
        cannot={
            "restart": "the fake's nodes live in the provider object: a daemon crash takes them",
            "shell": "fake nodes are in memory: there is nothing to log in to",
            "sync": "fake nodes have no disk to sync to",
            "ports": "fake nodes have no network",
            "leaks": "nothing the fake makes outlives the provider object",
        },
    ),
]
"""One line per provider: a new provider joins the contract here."""
