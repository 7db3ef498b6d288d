"""SSH node pools: ``<stix home>/ssh_node_pools.yaml`` in SkyPilot's form, as typed values.

A pool names machines the user already has::

    gpus:
      user: ubuntu
      identity_file: ~/.ssh/id_ed25519
      hosts:
        - 10.0.0.11
        - ip: 10.0.0.12
          port: 2222

Each host inherits the pool's ``user``, ``identity_file``, ``password``, ``port``, and
``jump_host`` or ``proxy_command``, unless it says otherwise. Hosts that are only reachable
through a bastion name it either as ``jump_host: [user@]host[:port]`` (logged in to with the
host's own key) or as an OpenSSH ``proxy_command`` (``%h``, ``%p``, ``%r`` and ``%%`` are
expanded). Every error is one sentence naming the file, the pool and the key at fault.

A pool may say ``install_packages: false``: stix then installs nothing on its hosts (a task that
mounts a bucket on a host without rclone and fuse3 is refused in one sentence saying how to
install them). By default a host whose login is root or a passwordless sudoer gets what a task
needs installed (rclone and fuse3 for a bucket mount), as SkyPilot does for its own dependencies.

``Allocations`` records which cluster holds which host (``<stix home>/ssh_allocations.json``).
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from stixd.providers.base import Block, CapacityError
from stixd.providers.shared.ssh_hosts import JumpHost, PoolHost
from stixd.providers.ssh.meta import POOLS_FILE as POOLS_FILE  # its home is the meta
from stixproto import user_yaml
from stixproto.errors import ProvisionError

_ROUTE_KEYS = ("jump_host", "proxy_command")
_POOL_KEYS = (
    "user",
    "identity_file",
    "password",
    "port",
    "hosts",
    *_ROUTE_KEYS,
    "install_packages",
)
_HOST_KEYS = ("ip", "user", "identity_file", "port", "password", *_ROUTE_KEYS)

Fail = Callable[[str, str], "PoolError"]
"""Makes the error for (key, problem) at one place in the file."""


class PoolError(ValueError):
    """The pools file is unreadable or invalid; the message says where and what."""


class SshPool(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    hosts: tuple[PoolHost, ...]
    install_packages: bool = True
    """Whether stix may install what a task needs (rclone, fuse3) on hosts that let it."""


def load_pools(home: Path) -> dict[str, SshPool]:
    """The pools of ``home``; no file means no pools."""
    path = home / POOLS_FILE
    try:
        data = user_yaml.load(user_yaml.read_file(path))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise PoolError(f"{POOLS_FILE}: cannot read it ({exc})") from None
    except user_yaml.YamlError as exc:
        if exc.syntax:
            where = f" at line {exc.line}" if exc.line is not None else ""
            raise PoolError(f"{POOLS_FILE}: not valid YAML{where}") from None
        raise PoolError(f"{POOLS_FILE}: {exc}") from None
    return parse_pools(data)


def parse_pools(data: Any, source: str = POOLS_FILE) -> dict[str, SshPool]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise PoolError(f"{source}: expected a mapping of pool name to pool")
    pools: dict[str, SshPool] = {}
    for name, raw in data.items():
        if not isinstance(name, str) or not name:
            raise PoolError(f"{source}: pool names must be non-empty strings, not {name!r}")
        pools[name] = _pool(source, name, raw)
    return pools


def _pool(source: str, name: str, raw: Any) -> SshPool:
    def fail(key: str, problem: str) -> PoolError:
        return PoolError(f"{source}: pool {name}: {key}: {problem}")

    if not isinstance(raw, dict):
        raise PoolError(f"{source}: pool {name}: expected a mapping with hosts")
    for key in raw:
        if key not in _POOL_KEYS:
            raise fail(str(key), f"unknown key (expected one of {', '.join(_POOL_KEYS)})")
    defaults = {
        "user": _opt_str(raw, "user", fail),
        "identity_file": _opt_str(raw, "identity_file", fail),
        "password": _opt_str(raw, "password", fail),
        "port": _port(raw.get("port", 22), "port", fail),
        **_route(raw, fail),
    }
    hosts_raw = raw.get("hosts")
    if hosts_raw is None:
        raise fail("hosts", "missing")
    if not isinstance(hosts_raw, list) or not hosts_raw:
        raise fail("hosts", "expected a non-empty list of addresses or host mappings")
    hosts = tuple(_host(i, h, defaults, fail) for i, h in enumerate(hosts_raw))
    seen: dict[str, int] = {}
    for i, host in enumerate(hosts):
        if host.key in seen:
            raise fail(f"hosts.{i}", f"{host.key} is listed twice (also hosts.{seen[host.key]})")
        seen[host.key] = i
    install = raw.get("install_packages", True)
    if not isinstance(install, bool):
        raise fail("install_packages", f"expected true or false, not {install!r}")
    return SshPool(name=name, hosts=hosts, install_packages=install)


def _route(raw: dict[str, Any], fail: Fail) -> dict[str, Any]:
    """How a host is reached: directly, through a jump host, or through a proxy command."""
    jump_text = _opt_str(raw, "jump_host", fail)
    proxy = _opt_str(raw, "proxy_command", fail)
    if jump_text and proxy:
        raise fail("jump_host", "give either jump_host or proxy_command, not both")
    route: dict[str, Any] = {}
    if "jump_host" in raw:
        route["jump"] = _jump(jump_text, fail) if jump_text else None
        route["proxy_command"] = None
    if "proxy_command" in raw:
        route["proxy_command"] = proxy
        route["jump"] = None
    return route


def _jump(text: str, fail: Fail) -> JumpHost:
    user, at, rest = text.rpartition("@")
    host, colon, port_text = rest.partition(":")
    if not host or (at and not user) or any(c.isspace() for c in text):
        raise fail("jump_host", f"expected [user@]host[:port], not {text!r}")
    port = 22
    if colon:
        if not port_text.isdigit():
            raise fail("jump_host", f"the port of {text!r} is not a number")
        port = _port(int(port_text), "jump_host", fail)
    return JumpHost(host=host, port=port, user=user or getpass.getuser())


def _host(index: int, raw: Any, defaults: dict[str, Any], fail: Fail) -> PoolHost:
    at = f"hosts.{index}"
    if isinstance(raw, str):
        raw = {"ip": raw}
    if not isinstance(raw, dict):
        raise fail(at, "expected an address or a mapping with ip")
    for key in raw:
        if key not in _HOST_KEYS:
            raise fail(f"{at}.{key}", f"unknown key (expected one of {', '.join(_HOST_KEYS)})")

    def host_fail(key: str, problem: str) -> PoolError:
        return fail(f"{at}.{key}", problem)

    ip = raw.get("ip")
    if ip is None:
        raise host_fail("ip", "missing")
    if not isinstance(ip, str) or not ip.strip():
        raise host_fail("ip", "expected a host name or address")
    user = _opt_str(raw, "user", host_fail) or defaults["user"] or getpass.getuser()
    identity = _opt_str(raw, "identity_file", host_fail) or defaults["identity_file"]
    password = _opt_str(raw, "password", host_fail) or defaults["password"]
    port = _port(raw["port"], "port", host_fail) if "port" in raw else defaults["port"]
    route = {"jump": defaults.get("jump"), "proxy_command": defaults.get("proxy_command")}
    route.update(_route(raw, host_fail))
    return PoolHost(
        ip=ip.strip(),
        port=port,
        user=user,
        identity_file=os.path.expanduser(identity) if identity else None,
        password=password,
        **route,
    )


def _opt_str(raw: dict[str, Any], key: str, fail: Fail) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise fail(key, "expected a non-empty string")
    return value


def _port(value: Any, key: str, fail: Fail) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise fail(key, f"expected a port number from 1 to 65535, not {value!r}")
    return value


_Data = TypeVar("_Data")


@contextlib.contextmanager
def locked_json(
    path: Path, read: Callable[[], _Data], kept: Callable[[_Data], object] = lambda d: d
) -> Iterator[_Data]:
    """``read()``'s data of ``path`` to change in place, written back if it changed (``kept``
    of it: what is stored), under an ``flock`` on ``<path>.lock`` and through a temp name and a
    rename: two daemons never interleave and a crash never leaves half a file. Blocks."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        data = read()
        before = msgspec.json.encode(data)
        yield data
        after = msgspec.json.encode(kept(data))
        if after != before:
            partial = path.with_name(f"{path.name}.{os.getpid()}.part")
            partial.write_bytes(msgspec.json.format(after))
            os.replace(partial, path)
    finally:
        os.close(fd)  # releases the lock


# -- allocations ---------------------------------------------------------------------------

ALLOCATIONS_FILE = "ssh_allocations.json"


class HeldHost(msgspec.Struct, kw_only=True):
    host: str
    """``PoolHost.key`` of the machine."""
    home: str | None = None
    socket: str | None = None
    """Where its agent listens, once an agent was started there."""


class Holding(msgspec.Struct, kw_only=True):
    pool: str
    hosts: list[HeldHost]
    """In rank order: rank 0 is the head."""


class Allocations:
    """Which cluster holds which pool hosts, in ``<home>/ssh_allocations.json``.

    Every change is a read-modify-write under an ``flock`` on a side file, written to a temp
    name and renamed, so two daemons (or two launches) never hand one host to two clusters and
    a crash never leaves half a file. The methods block: call them from a worker thread.
    """

    def __init__(self, home: Path) -> None:
        self.path = home / ALLOCATIONS_FILE

    def _locked(self) -> contextlib.AbstractContextManager[dict[str, Holding]]:
        return locked_json(self.path, self._read)

    def _read(self) -> dict[str, Holding]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        try:
            return msgspec.json.decode(raw, type=dict[str, Holding])
        except msgspec.DecodeError as exc:
            raise PoolError(f"{ALLOCATIONS_FILE}: unreadable ({exc}); fix or remove it") from None

    def read(self) -> dict[str, Holding]:
        with self._locked() as data:
            return data

    def take(self, cluster: str, pool: SshPool, count: int) -> list[PoolHost]:
        """``count`` hosts of ``pool`` for ``cluster``: the ones it holds first, in rank order."""
        by_key = {h.key: h for h in pool.hosts}
        with self._locked() as data:
            holding = data.get(cluster)
            if holding is not None and holding.pool != pool.name:
                raise ProvisionError(
                    f"cluster {cluster} holds hosts of ssh pool {holding.pool}, not {pool.name}; "
                    "terminate it first"
                )
            held = holding.hosts if holding is not None else []
            missing = [h.host for h in held if h.host not in by_key]
            if missing:
                raise ProvisionError(
                    f"cluster {cluster} holds {', '.join(missing)}, which ssh pool {pool.name} "
                    f"no longer lists; put them back in {POOLS_FILE} or terminate the cluster"
                )
            busy = {h.host for other in data.values() for h in other.hosts}
            free = [h for h in pool.hosts if h.key not in busy]
            need = count - len(held)
            if need > len(free):
                raise CapacityError(
                    f"ssh pool {pool.name}: {cluster} needs {need} more host(s), but only "
                    f"{len(free)} of its {len(pool.hosts)} are free",
                    Block(infra="ssh", region=pool.name),
                )
            if need > 0:
                held = held + [HeldHost(host=h.key) for h in free[:need]]
                data[cluster] = Holding(pool=pool.name, hosts=held)
            return [by_key[h.host] for h in held[:count]]

    def record(self, cluster: str, rank: int, home: str, socket: str) -> None:
        with self._locked() as data:
            holding = data.get(cluster)
            if holding is not None and rank < len(holding.hosts):
                holding.hosts[rank].home = home
                holding.hosts[rank].socket = socket

    def release(self, cluster: str) -> None:
        with self._locked() as data:
            data.pop(cluster, None)
