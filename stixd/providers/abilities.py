"""What some providers can do beyond the ``Provider`` protocol, each ability one type.

The core asks ``isinstance(provider, Ability)`` and, where a provider lacks the ability, says
plainly what it does instead (a one-line error, or a skip with its reason). A provider gains an
ability by having its members; nothing is registered. No ``getattr`` on a provider: an ability
read by name is an ability missing here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

import anyio

from stixd.providers.base import Machine, NodeInfo, NodeLoss, Provider
from stixproto.errors import ProvisionError
from stixproto.volumes import VolumeConfig

ShellCommand = tuple[list[str], str | None, dict[str, str]]
"""argv, working directory (None: the client's), environment to add."""


@runtime_checkable
class HasShell(Protocol):
    """Nodes a user can log in to: `stixctl ssh CLUSTER` runs this command on the client."""

    def shell_command(self, node: NodeInfo, command: str | None) -> ShellCommand:
        """A login shell on ``node`` (``command`` None), or ``command`` run there."""
        ...


@dataclasses.dataclass(frozen=True)
class HostReport:
    """One pool host as a probe found it."""

    host: str
    """The host's key in its pool (``[user@]ip[:port]``, with its jump host)."""
    reachable: bool
    python: str | None = None
    free_bytes: int | None = None
    agents: tuple[str, ...] = ()
    """Nodes (``<cluster>-<rank>``) whose agent answers on this host."""
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.reachable and self.python is not None and self.error is None


@dataclasses.dataclass(frozen=True)
class PoolHolding:
    """The hosts a cluster holds in a pool, in rank order (their keys)."""

    pool: str
    hosts: tuple[str, ...]


@runtime_checkable
class HasPools(Protocol):
    """Machines the user already has, listed in named pools (the ssh provider): a launch takes
    free hosts of one pool; nothing is created or destroyed."""

    def pool_sizes(self) -> dict[str, int]:
        """Hosts per pool, the pools' file re-read when it changed since the last call;
        ``InvalidConfig`` naming the file and key when it is broken."""
        ...

    async def probe_pool(self, pool: str) -> list[HostReport]: ...

    def holdings(self) -> dict[str, PoolHolding]:
        """Per cluster: the pool hosts it holds."""
        ...


@runtime_checkable
class ReportsLostNodes(Protocol):
    """A provider that can tell, after ``query``, which nodes' machines the cloud took away.

    The cluster actor ends their jobs at once (no grace: the machine will not come back) and
    records each loss, so a managed job recovers without waiting for a timeout."""

    def lost_nodes(self, cluster: str) -> list[NodeLoss]: ...


@runtime_checkable
class ReportsMachines(Protocol):
    """A provider that can tell, after ``query``, what each live node's machine is: the
    cluster records it, so a resize or new address made outside stix shows in status and
    cost-report."""

    def machines(self, cluster: str) -> list[Machine]: ...


@runtime_checkable
class ReportsNodeErrors(Protocol):
    """A provider that knows why, at the last ``query``, it could not reach a node: status
    names the reason instead of a bare "unreachable"."""

    def node_errors(self, cluster: str) -> dict[int, str]:
        """Per rank of ``cluster``: why the last query could not reach that node."""
        ...


@runtime_checkable
class LooksUpMany(Protocol):
    """A provider that looks at many clusters at once (one listing for all, or calls they
    share): the daemon's health check asks it once a tick for every live cluster it holds,
    instead of ``query`` once per cluster."""

    async def query_many(self, clusters: Sequence[str]) -> dict[str, list[NodeInfo]]:
        """``query`` of each of ``clusters`` (and what ``lost_nodes``, ``machines`` and
        ``node_errors`` say after it, as after ``query``). A cluster it could not look at is
        left out: the caller asks ``query`` of it alone, and meets the error there."""
        ...


async def query_each(
    provider: Provider,
    clusters: Sequence[str],
    width: int | None,
    failed: Callable[[str, ProvisionError], None] | None = None,
) -> dict[str, list[NodeInfo]]:
    """``query`` of each of ``clusters``, ``width`` at a time (None: all at once, for a
    provider whose queries in flight together share their cloud calls). A cluster whose
    ``query`` failed is left out (and told to ``failed``), for its own ``query`` to meet the
    error: ``LooksUpMany``'s contract, kept by the health check's round for a provider without
    ``query_many`` and by a provider whose ``query_many`` is this."""
    found: dict[str, list[NodeInfo]] = {}
    limiter = anyio.CapacityLimiter(width or max(len(clusters), 1))

    async def one(cluster: str) -> None:
        async with limiter:
            try:
                found[cluster] = await provider.query(cluster)
            except ProvisionError as exc:
                if failed is not None:
                    failed(cluster, exc)

    async with anyio.create_task_group() as tg:
        for cluster in clusters:
            tg.start_soon(one, cluster)
    return found


@dataclasses.dataclass(frozen=True)
class LookAbilities:
    """What a health check may ask a provider after ``query``, found once per provider: an
    ``isinstance`` against a runtime-checkable protocol walks the provider's class every time
    (some 20 us on Python 3.11), and every cluster asks on every look."""

    machines: ReportsMachines | None
    lost: ReportsLostNodes | None
    errors: ReportsNodeErrors | None
    many: LooksUpMany | None = None
    every_port: bool = False
    """``ReachesEveryPort``: `status` asks it of every provider on every request."""

    @classmethod
    def of(cls, provider: object) -> LookAbilities:
        return cls(
            machines=provider if isinstance(provider, ReportsMachines) else None,
            lost=provider if isinstance(provider, ReportsLostNodes) else None,
            errors=provider if isinstance(provider, ReportsNodeErrors) else None,
            many=provider if isinstance(provider, LooksUpMany) else None,
            every_port=isinstance(provider, ReachesEveryPort),
        )


@runtime_checkable
class NeedsCredentials(Protocol):
    """A provider that is usable only with credentials the user provides (a cloud account)."""

    def credentials_problem(self) -> str | None:
        """What is missing, read locally (no network); None if nothing."""
        ...


@runtime_checkable
class RefreshesCatalog(Protocol):
    """A provider that writes the planner's catalog of its infra from what exists now (the
    nodes of Kubernetes contexts): the daemon asks it to bring that up to date before a plan."""

    async def refresh_catalog(self) -> None:
        """Bounded; a part that cannot be read is left out of the catalog, never an error."""
        ...


@runtime_checkable
class ShowsGpus(Protocol):
    """GPUs read live from the infra (Kubernetes nodes: those free right now), not from a
    catalog, for ``show-gpus --infra NAME[/REGION]``."""

    async def show_gpus(
        self, name: str | None, count: float | None, region: str | None
    ) -> tuple[str, list[dict[str, object]]]:
        """(the text to print, the rows as data)."""
        ...


@dataclasses.dataclass(frozen=True)
class Leak:
    """Something of stix's at a cloud that no live cluster owns."""

    kind: str
    """``instance``, or what the cloud made around one (``security-group``)."""
    id: str
    region: str
    cluster: str
    age_s: float | None = None
    instance_type: str | None = None
    state: str | None = None
    network: str | None = None
    """The network it lives in, where removing it needs that (an AWS VPC)."""
    spot: bool = False


@dataclasses.dataclass(frozen=True)
class LeakPolicy:
    """How the daemon's leak reconciler treats one provider."""

    check_every_s: float
    min_age_s: float
    """Younger things are never leaks: their launch may still be writing its record."""
    terminate: bool
    """Terminate what a periodic scan finds, instead of only reporting it."""


@runtime_checkable
class FindsLeaks(Protocol):
    """A provider that can list what stix made at its cloud, so the daemon finds what no
    live cluster owns (a crash between create and record, a row removed by hand)."""

    def leak_policy(self) -> LeakPolicy:
        """This provider's reconciler settings (from its config section, given when built)."""
        ...

    def regions(self) -> list[str]:
        """Where stix may have made something here (without the catalog's regions)."""
        ...

    async def leaks(
        self, regions: Sequence[str], live: Collection[str], young_s: float
    ) -> list[Leak]:
        """What in ``regions`` belongs to no cluster of ``live``, leaving out anything made
        less than ``young_s`` ago."""
        ...

    async def clean_leaks(self, leaks: Sequence[Leak]) -> None: ...


@runtime_checkable
class OpensPorts(Protocol):
    """Nodes behind a firewall the provider controls (a cloud's security group): a task's
    ``resources.ports`` are opened on launch."""

    async def open_ports(self, cluster: str, ports: list[int]) -> None:
        """Idempotent: ports already open stay as they are."""
        ...


@runtime_checkable
class ReachesEveryPort(Protocol):
    """Nodes whose every port this machine reaches (local: in its network, or each in a
    namespace of its own at an address this machine routes to): nothing is opened and status
    shows any port as reachable."""

    every_port_reachable: Literal[True]


@runtime_checkable
class CannotStop(Protocol):
    """Nodes that can only be taken down, never stopped (Kubernetes pods): ``stop`` refuses in
    one line naming ``down`` (the cluster asks it before changing anything), and autostop takes
    the cluster down instead."""

    cannot_stop: Literal[True]


@runtime_checkable
class ReachedElsewhere(Protocol):
    """Nodes this machine may reach at another address than the one they know each other by
    (a cloud instance's public address beside its private one), or not at all: a service
    probes a replica's port and balances to it there. Without this ability a node is reached
    at its ``ip``."""

    def reachable_address(self, cluster: str, node: NodeInfo) -> str:
        """``ProvisionError`` when this machine cannot reach the node's ports at all (an SSH
        host behind a jump host); ``AddressPending`` while the address is still being made."""
        ...


class AddressPending(ProvisionError):
    """The address the node's ports will be reached at is still being made (a cloud load
    balancer's, which may take minutes): ask again later; the provider looks it up again at
    its next ``query`` (the health check's)."""

    def __init__(self, message: str, *, service: str) -> None:
        super().__init__(message)
        self.service = service
        """What is being made, by its name at the infra (a Kubernetes Service)."""


@runtime_checkable
class SharesHostNetwork(Protocol):
    """Nodes that may share this machine's network (local without a namespace per node): two
    of them cannot bind one port, so a service gives each replica a port of its own."""

    def nodes_share_host_network(self) -> bool: ...


@runtime_checkable
class Closes(Protocol):
    """A provider holding connections or clients: the daemon closes it when it stops."""

    async def aclose(self) -> None: ...


@runtime_checkable
class SimulatesPreemption(Protocol):
    """A provider for tests and benchmarks only (fake) that can take nodes away as a spot
    preemption does (`stixctl fake preempt`)."""

    def clusters(self) -> list[str]: ...

    def region_of(self, cluster: str) -> str | None: ...

    def preempt(self, clusters: Iterable[str] = (), count: int = 0) -> list[str]:
        """Take the nodes of ``clusters`` (or of ``count`` running ones picked at random);
        returns the clusters hit."""
        ...


@dataclasses.dataclass(frozen=True)
class VolumeMount:
    """A volume to place at ``dest`` on a node (as the node resolves a file mount's path)."""

    volume: VolumeConfig
    dest: str
    sub_path: str | None = None
    cluster: str | None = None
    """The cluster an ephemeral volume was made for (None: one `volumes apply` made)."""


@runtime_checkable
class HasVolumes(Protocol):
    """Volumes that outlive clusters (`stixctl volumes`): made once, mounted by each launch; and
    ephemeral ones (``cluster`` given), made for one cluster and removed at its `down`."""

    async def make_volume(self, volume: VolumeConfig, cluster: str | None = None) -> str:
        """Make ``volume`` (or, ``use_existing``, find it); where it is (a folder or a claim).
        Idempotent: a second call finds what the first made."""
        ...

    async def remove_volume(self, volume: VolumeConfig, cluster: str | None = None) -> None:
        """Remove what `make_volume` made (never what ``use_existing`` adopted); idempotent."""
        ...

    def launch_resources(self, mounts: Sequence[VolumeMount]) -> dict[str, Any]:
        """What a launch whose nodes mount ``mounts`` adds to its request's resources (the
        pods' spec on Kubernetes; nothing where nodes are made first and mounted after)."""
        ...

    async def mount_volumes(self, node: NodeInfo, mounts: Sequence[VolumeMount]) -> None:
        """Make each volume appear at its ``dest`` on ``node``, writable by the job's user."""
        ...
