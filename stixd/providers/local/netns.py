"""Each local node's own network: a namespace, a veth into a switch, an address of stix's subnet.

So two nodes on one machine can both bind port 8080. Per subnet (shared by every stix home on
this machine, since addresses must not clash):

- a switch namespace ``stix-sw-<s>`` holding a bridge ``br0``; the host reaches it through a
  veth pair, ``stixgw<s>`` on the host (the subnet's first address) and ``up0`` in the bridge;
- per node, a namespace ``stix-<d>`` (``d`` a digest of the node directory) whose ``eth0`` is
  paired with ``stx<d>`` in the bridge: an address of the subnet, loopback up, a default route
  through the host.

Node-to-node traffic is bridged inside the switch namespace, so the host's firewall (Docker's
FORWARD DROP with ``br_netfilter``) never sees it; host-to-node traffic is the host's own.

Records live in ``/run/stix-net/<s>/``: ``<namespace>.json`` names the node directory and
address and is written before the namespace is made, so whatever exists has a record saying
whose it is; ``ip-<address>`` files claim addresses; ``<namespace>.made`` and ``switch.made``
mark what is whole (a daemon killed half way leaves them out, and the next launch mends what it
left). Every change holds one machine-wide lock, as several daemons (one per user home) share
the switch. All of it is gone after a reboot, as the namespaces are.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from stixd.providers.local.outbound import allow_outbound, forbid_outbound
from stixproto.errors import ProvisionError

RUN_DIR = Path("/run/stix-net")
NETNS_DIR = Path("/run/netns")
NODE_PREFIX = "stix-"
SWITCH_PREFIX = "stix-sw-"
_CAP_NET_ADMIN, _CAP_SYS_ADMIN = 12, 21


class NetworkError(ProvisionError):
    """A node's network could not be made; the message says how to do without."""


def unavailable_reason() -> str | None:
    """Why nodes cannot have namespaces here, or None when they can."""
    if not sys.platform.startswith("linux"):
        return "network namespaces are Linux only"
    if os.geteuid() != 0:
        return "stixd is not root"
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2)"
    if not _has_capabilities(_CAP_NET_ADMIN, _CAP_SYS_ADMIN):
        return "stixd lacks CAP_NET_ADMIN or CAP_SYS_ADMIN (a container without them)"
    return None


def _has_capabilities(*bits: int) -> bool:
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return False
    for line in status.splitlines():
        if line.startswith("CapEff:"):
            effective = int(line.split()[1], 16)
            return all(effective >> bit & 1 for bit in bits)
    return False


def _digest(text: str, size: int) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:size]


@dataclass(frozen=True)
class NodeNet:
    """One node's namespace as its record says."""

    name: str
    node_dir: Path
    ip: str
    created: float

    @property
    def path(self) -> Path:
        return NETNS_DIR / self.name

    @property
    def veth(self) -> str:
        return "stx" + self.name.removeprefix(NODE_PREFIX)


class NodeNetworks:
    """The namespaces of local nodes in one subnet: made, found and removed by node directory."""

    def __init__(
        self,
        subnet: str,
        *,
        outbound: bool = True,
        run_dir: Path = RUN_DIR,
        refused: str | None = None,
    ) -> None:
        self.refused = refused
        """Why namespaces cannot be made here, though the config insists on them."""
        self.subnet = ipaddress.IPv4Network(subnet)
        tag = _digest(subnet, 6)
        self.switch = SWITCH_PREFIX + tag
        self.gateway_link = "stixgw" + tag
        self.gateway = str(self.subnet.network_address + 1)
        self.outbound = outbound
        self.dir = run_dir / tag

    # -- reading (no lock: records are replaced whole) -------------------------------------

    @staticmethod
    def name_of(node_dir: Path) -> str:
        return NODE_PREFIX + _digest(str(node_dir), 10)

    def record(self, node_dir: Path) -> NodeNet | None:
        return self._read(self.dir / f"{self.name_of(node_dir)}.json")

    def records(self) -> list[NodeNet]:
        try:
            paths = sorted(self.dir.glob(f"{NODE_PREFIX}*.json"))
        except OSError:
            return []
        return [r for r in map(self._read, paths) if r is not None]

    @staticmethod
    def _read(path: Path) -> NodeNet | None:
        try:
            raw = json.loads(path.read_text())
            return NodeNet(path.stem, Path(raw["node_dir"]), str(raw["ip"]), float(raw["created"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def address_of(self, node_dir: Path) -> str | None:
        """The node's address, if its namespace exists."""
        found = self.record(node_dir)
        return found.ip if found is not None and found.path.exists() else None

    @staticmethod
    def pids_in(net: NodeNet) -> list[int]:
        """Processes inside the node's namespace (what `ip netns pids` lists)."""
        try:
            inode = os.stat(net.path).st_ino
        except OSError:
            return []
        found = []
        for name in os.listdir("/proc"):
            if name.isdigit():
                with contextlib.suppress(OSError):
                    if os.stat(f"/proc/{name}/ns/net").st_ino == inode:
                        found.append(int(name))
        return found

    def unrecorded(self) -> list[str]:
        """Node namespaces on this switch with no record: records are written before and
        removed after their namespace, so only one whose record was deleted by hand."""
        recorded = {r.name for r in self.records()}
        try:
            names = os.listdir(NETNS_DIR)
        except OSError:
            return []
        nodes = [n for n in names if n.startswith(NODE_PREFIX) and not n.startswith(SWITCH_PREFIX)]
        return sorted(n for n in nodes if n not in recorded and self._on_switch(n))

    def _on_switch(self, name: str) -> bool:
        veth = "stx" + name.removeprefix(NODE_PREFIX)
        return _ip("-n", self.switch, "link", "show", veth, check=False).returncode == 0

    # -- changing (under the machine-wide lock) --------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if not (self.dir / "subnet").exists():  # what `every_subnet` reads
            self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            (self.dir / "subnet").write_text(str(self.subnet))
        fd = os.open(self.dir / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def ensure(self, node_dir: Path) -> NodeNet:
        """The node's namespace, made if missing (idempotent; the address stays the node's)."""
        if self.refused is not None:
            raise NetworkError(
                f"local.network is namespace but {self.refused}: run stixd as root, "
                "or set `local: {network: host}` in the config"
            )
        try:
            return self._ensure(node_dir)
        except OSError as exc:  # /run not writable, a record unreadable
            raise NetworkError(f"could not make a local node's network: {exc}") from exc

    def _ensure(self, node_dir: Path) -> NodeNet:
        with self._locked():
            if self._ensure_switch():  # made anew: every node's link went with the old one
                for other in self.records():
                    if other.path.exists():
                        self._plumb(other)
            net = self.record(node_dir)
            if net is not None and net.path.exists() and self._made(net).exists():
                return net
            net = net or self._claim(node_dir)
            try:
                self._plumb(net)
            except NetworkError:
                self._unmake(net)
                raise
            return net

    def _made(self, net: NodeNet) -> Path:
        """Present once the node's namespace is whole (a killed daemon may leave half of one)."""
        return self.dir / f"{net.name}.made"

    def remove(self, net: NodeNet) -> None:
        """Delete the node's namespace and veth, free its address; the switch goes with the last
        node. Idempotent. A process still inside keeps an empty namespace, cut off, until it
        exits."""
        with self._locked():
            self._made(net).unlink(missing_ok=True)
            self._unmake(net)
            claims = [self.dir / f"ip-{net.ip}"] if net.ip else self.dir.glob("ip-*")
            for path in claims:
                with contextlib.suppress(OSError):
                    if path.read_text() == net.name:
                        path.unlink()
            (self.dir / f"{net.name}.json").unlink(missing_ok=True)
            if not self.records():
                self._remove_switch()

    def remove_unrecorded(self, name: str) -> None:
        self.remove(NodeNet(name, Path(), "", 0.0))

    def _claim(self, node_dir: Path) -> NodeNet:
        name = self.name_of(node_dir)
        count = self.subnet.num_addresses - 3  # less the network, the gateway, the broadcast
        start = int(_digest(str(node_dir), 8), 16) % count
        for step in range(count):
            ip = str(self.subnet.network_address + 2 + (start + step) % count)
            claim = self.dir / f"ip-{ip}"
            try:
                fd = os.open(claim, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                continue
            with os.fdopen(fd, "w") as f:
                f.write(name)
            net = NodeNet(name, node_dir, ip, time.time())
            record = {"node_dir": str(node_dir), "ip": ip, "created": net.created}
            tmp = self.dir / f".{name}.tmp"
            tmp.write_text(json.dumps(record))
            os.replace(tmp, self.dir / f"{name}.json")
            return net
        raise NetworkError(f"local.subnet {self.subnet} has no free address: choose a larger one")

    def _plumb(self, net: NodeNet) -> None:
        """Make the node's namespace and its link into the switch; of a namespace that exists
        (half made, or cut off by a switch made anew) only the link, so whatever runs inside
        stays and is reachable again."""
        self._made(net).unlink(missing_ok=True)
        pair = f"link add {net.veth} netns {self.switch} type veth peer name eth0 netns {net.name}"
        add = [f"netns add {net.name}"] if not net.path.exists() else []
        try:
            _batch([], *add, pair)
        except NetworkError:  # a link left half made or half removed: once more without it
            _ip("-n", self.switch, "link", "del", net.veth, check=False)
            _ip("-n", net.name, "link", "del", "eth0", check=False)
            _batch([], *([f"netns add {net.name}"] if not net.path.exists() else []), pair)
        prefix = self.subnet.prefixlen
        _batch(["-n", self.switch], f"link set {net.veth} master br0", f"link set {net.veth} up")
        _batch(
            ["-n", net.name],
            f"addr add {net.ip}/{prefix} dev eth0",
            "link set eth0 up",
            "link set lo up",
            f"route add default via {self.gateway}",
        )
        self._made(net).touch()

    def _unmake(self, net: NodeNet) -> None:
        _ip("netns", "del", net.name, check=False)
        _ip("-n", self.switch, "link", "del", net.veth, check=False)

    def _ensure_switch(self) -> bool:
        """The switch, whole: one half made (a daemon killed while making it) or gone (deleted
        by hand) is made anew, and then True."""
        made = self.dir / "switch.made"
        if not Path("/sys/class/net", self.gateway_link).exists():
            clash = overlapping_route(self.subnet)
            if clash:
                raise NetworkError(
                    f"local.subnet {self.subnet} overlaps {clash} on this machine: set "
                    "`local: {subnet: ...}` to a free private range, or `local: {network: host}`"
                )
        whole = made.exists() and (NETNS_DIR / self.switch).exists()
        if whole and Path("/sys/class/net", self.gateway_link).exists():
            return False
        if not whole:
            made.unlink(missing_ok=True)
            _ip("netns", "del", self.switch, check=False)
            _ip("link", "del", self.gateway_link, check=False)
            _batch([], f"netns add {self.switch}")
            _batch(
                ["-n", self.switch],
                "link set lo up",
                "link add br0 type bridge",
                "link set br0 up",
            )
        if not Path("/sys/class/net", self.gateway_link).exists():
            _batch(
                [],
                f"link add {self.gateway_link} type veth peer name up0 netns {self.switch}",
                f"addr add {self.gateway}/{self.subnet.prefixlen} dev {self.gateway_link}",
                f"link set {self.gateway_link} up",
            )
            _batch(["-n", self.switch], "link set up0 master br0", "link set up0 up")
            if self.outbound:
                allow_outbound(str(self.subnet), self.gateway_link)
        made.touch()
        return not whole

    def _remove_switch(self) -> None:
        (self.dir / "switch.made").unlink(missing_ok=True)
        forbid_outbound(str(self.subnet), self.gateway_link)
        _ip("netns", "del", self.switch, check=False)  # takes up0, and so stixgw<s>, with it
        _ip("link", "del", self.gateway_link, check=False)


def overlapping_route(subnet: ipaddress.IPv4Network, listing: str | None = None) -> str | None:
    """A route of this machine into ``subnet`` ("10.0.0.0/8 via wg0"), if any: asked before
    stix routes the subnet itself, as nodes there would hide the machines behind that route.
    ``listing``: `ip -j -4 route show`'s output (read here when not given)."""
    if listing is None:
        listing = _ip("-j", "-4", "route", "show", check=False).stdout
    with contextlib.suppress(ValueError):
        for route in json.loads(listing or "[]"):
            if not isinstance(route, dict) or route.get("dst") in (None, "default"):
                continue
            dst, dev = route["dst"], str(route.get("dev", "?"))
            with contextlib.suppress(ValueError, TypeError):
                routed = ipaddress.IPv4Network(dst, strict=False)
                # wider than a /8 is a default route in parts (a VPN's 0.0.0.0/1 + 128.0.0.0/1):
                # more specific routes, such as the subnet's own, still win over it
                if routed.prefixlen >= 8 and routed.overlaps(subnet):
                    return f"{dst} via {dev}"
    return None


def _ip(
    *args: str, check: bool = True, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["ip", *args], input=stdin, capture_output=True, text=True, check=False, timeout=30
    )
    if check and done.returncode != 0:
        error = " ".join(done.stderr.split())[:300]
        raise NetworkError(
            f"could not make a local node's network ({error}); set `local: {{network: host}}` "
            "in the config to share this machine's network instead"
        )
    return done


def _batch(options: list[str], *lines: str) -> None:
    """Several `ip` commands in one process (each `ip` start costs more than its work)."""
    _ip(*options, "-batch", "-", stdin="\n".join(lines) + "\n")


def every_subnet(run_dir: Path = RUN_DIR) -> list[NodeNetworks]:
    """The node networks of every subnet stix has used on this machine since it booted."""
    found = []
    for subnet_file in sorted(run_dir.glob("*/subnet")):
        with contextlib.suppress(OSError, ValueError):
            subnet = subnet_file.read_text().strip()
            found.append(NodeNetworks(subnet, run_dir=run_dir))
    return found


def remove_under(home: Path, run_dir: Path = RUN_DIR) -> int:
    """Remove every node namespace of a node directory under ``home`` (a stix home that is
    going away: tests end with it); returns how many."""
    removed = 0
    for networks in every_subnet(run_dir):
        for net in networks.records():
            if net.node_dir.is_relative_to(home):
                networks.remove(net)
                removed += 1
    return removed


SYSTEM_RESOLV = Path("/etc/resolv.conf")
RESOLVED_UPSTREAM = Path("/run/systemd/resolve/resolv.conf")


def _nameservers(path: Path) -> list[str]:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    return [line.split()[1] for line in lines if line.startswith("nameserver") and line.split()[1:]]


def _all_loopback(servers: list[str]) -> bool:
    try:
        return bool(servers) and all(ipaddress.ip_address(s).is_loopback for s in servers)
    except ValueError:
        return False


def node_resolver(system: Path = SYSTEM_RESOLV, upstream: Path = RESOLVED_UPSTREAM) -> Path | None:
    """The resolv.conf node namespaces need instead of this machine's: when it names a
    resolver on this machine's loopback (systemd-resolved's 127.0.0.53), which a namespace
    cannot reach, the servers that resolver itself asks. None: the machine's serves as it is
    (or nothing better is known, and names do not resolve on the nodes)."""
    if not _all_loopback(_nameservers(system)):
        return None
    servers = _nameservers(upstream)
    return upstream if servers and not _all_loopback(servers) else None
