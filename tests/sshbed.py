"""Real SSH hosts for tests: sshd servers in their own network namespaces on a private bridge.

Follows the recipe of the test-infrastructure notes (SSH hosts in network namespaces). A bed
takes a free *slot* k (a ``flock`` on ``/run/stixt-slot-k.lock`` held for its whole life, so
two test runs on one machine never share names) and makes:

- a bridge ``br-stixt<k>`` at 10.200.<k>.1/24 in the root namespace;
- per host i (1-based): a network namespace ``stixt<k>h<i>`` at 10.200.<k>.<10+i>, joined by
  the veth pair ``vstixt<k>h<i>`` (root side) / ``eth0`` (host side); its own sshd on port 22
  inside a private UTS + mount namespace, so the host has its own hostname (``stixt<k>h<i>``)
  and its own ``/root`` (a bind mount of ``<bed>/<name>/home``); hosts listed in ``nopy`` have
  no ``python3`` (an overlay on ``/usr/bin`` with whiteouts for ``python3*``), and those in
  ``hide`` lack the ``/usr/bin`` commands named there (``hide={2: ("rclone",)}``) the same way.

Hosts reach each other and nothing else (no default route). Teardown kills every process in
each namespace (``ip netns pids`` lists exactly those: sshd, sessions, agents, jobs), deletes
the namespaces and the bridge and removes the bed's directory, also after a failed setup. A
slot left dirty by a killed test run is cleaned when the slot is next taken.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

SLOTS = range(8)
PREFIX = "stixt"
SSH_PORT = 22
LOCK_DIR = Path("/run")
SSHD = "/usr/sbin/sshd"
UP_WITHIN_S = 10.0
INNER_PORT = 2222
USER, USER_ID = "stixu", 41500
"""An unprivileged login every host has besides root (its home: ``Host.dir/homes/USER``)."""
"""Each sshd also listens on the host's own loopback at this port: an address only a jump
through that host can reach (the daemon's 127.0.0.1 is another namespace's loopback)."""

_SSHD_CONFIG = """\
Port {port}
ListenAddress {ip}
ListenAddress 127.0.0.1:{inner_port}
HostKey {dir}/ssh_host_ed25519_key
PidFile {dir}/sshd.pid
AuthorizedKeysFile {dir}/authorized_keys
UsePAM no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
StrictModes no
AllowTcpForwarding yes
AllowStreamLocalForwarding yes
StreamLocalBindUnlink yes
Subsystem sftp internal-sftp
MaxStartups 100:30:200
MaxSessions 50
LogLevel ERROR
"""


def unavailable_reason() -> str | None:
    """Why SSH hosts cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "SSH test hosts need root (network namespaces, bind mounts)"
    for tool in ("ip", "unshare", "ssh-keygen"):
        if shutil.which(tool) is None:
            return f"SSH test hosts need the {tool!r} command"
    if not os.access(SSHD, os.X_OK):
        return f"SSH test hosts need {SSHD} (apt-get install -y openssh-server)"
    return None


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=30)


def _namespaces() -> list[str]:
    out = _run("ip", "netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _link_exists(name: str) -> bool:
    return _run("ip", "link", "show", name, check=False).returncode == 0


def _subnet_in_use(subnet: str) -> bool:
    """True when a route of the root namespace already covers (part of) this /24."""
    out = _run("ip", "-4", "route", "show", "match", subnet.replace(".0/24", ".1")).stdout
    return any(line.split()[0] != "default" for line in out.splitlines() if line.strip())


@dataclasses.dataclass(frozen=True)
class Host:
    index: int
    name: str
    """Network namespace name, also the host's hostname."""
    ip: str
    veth: str
    """Root-namespace end of the host's veth pair: ``ip link set VETH down`` cuts the link."""
    dir: Path
    has_python: bool
    port: int = SSH_PORT
    hidden: tuple[str, ...] = ()
    """Commands of /usr/bin this host does not have (whiteouts, like python3 without it)."""

    @property
    def home(self) -> Path:
        """What the host sees as ``/root`` (readable from the test directly)."""
        return self.dir / "home"

    def pids(self) -> list[int]:
        """Every process inside this host's network namespace."""
        out = _run("ip", "netns", "pids", self.name, check=False).stdout
        return [int(p) for p in out.split() if p.isdigit()]

    def sshd_pid(self) -> int | None:
        try:
            return int((self.dir / "sshd.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def exec(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a command in the host's network namespace (not its mount namespace)."""
        return _run("ip", "netns", "exec", self.name, *argv, check=check)

    def established_ssh_connections(self) -> int:
        """TCP connections to this host's sshd, counted on the server side."""
        out = self.exec("ss", "-Htn", "state", "established", f"( sport = :{self.port} )").stdout
        return len([line for line in out.splitlines() if line.strip()])

    # -- faults --------------------------------------------------------------------------

    def link_down(self) -> None:
        _run("ip", "link", "set", self.veth, "down")

    def link_up(self) -> None:
        _run("ip", "link", "set", self.veth, "up")

    def kill_sshd_listener(self) -> None:
        """Kill the listening sshd only: open sessions (own processes) keep working."""
        pid = self.sshd_pid()
        assert pid is not None, f"{self.name} has no sshd pid file"
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        _wait_for(lambda: not _port_open(self.ip, self.port), 5.0, f"{self.name} sshd to stop")

    def sshd_pids(self) -> list[int]:
        """The listener and every session of this host's sshd (agents and jobs are not sshd)."""
        return [pid for pid in self.pids() if _comm(pid) == "sshd"]

    def kill_sshd(self) -> None:
        """Kill -9 the whole sshd (listener and sessions): every connection to the host breaks,
        the processes it started and detached keep running. `start_sshd` brings it back."""
        for pid in self.sshd_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _wait_for(lambda: not self.sshd_pids(), 5.0, f"{self.name} sshd processes to exit")
        _wait_for(lambda: not _port_open(self.ip, self.port), 5.0, f"{self.name} sshd to stop")


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _port_open(ip: str, port: int) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=0.5):
            return True
    except OSError:
        return False


def _wait_for(check: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {within}s waiting for {what}")
        time.sleep(0.05)


@dataclasses.dataclass
class SshBed:
    slot: int
    root: Path
    bridge: str
    subnet: str
    key: Path
    """Private key (ed25519, no passphrase) authorized for root on every host."""
    hosts: list[Host] = dataclasses.field(default_factory=list)
    _lock_fd: int | None = None

    def host(self, index: int) -> Host:
        return self.hosts[index - 1]

    def add_host(self, *, python: bool = True, hidden: Iterable[str] = ()) -> Host:
        index = len(self.hosts) + 1
        ip = self.subnet.replace(".0/24", f".{10 + index}")
        name = f"{PREFIX}{self.slot}h{index}"
        host = Host(index, name, ip, f"v{name}", self.root / name, python, hidden=tuple(hidden))
        self.hosts.append(host)  # before anything is made, so teardown sees it
        _make_host(self, host)
        return host

    def namespaces(self) -> list[str]:
        mine = f"{PREFIX}{self.slot}h"
        return [ns for ns in _namespaces() if ns.startswith(mine)]


def _make_host(bed: SshBed, host: Host) -> None:
    d = host.dir
    (d / "home" / ".ssh").mkdir(parents=True, exist_ok=True)
    _run("ip", "netns", "add", host.name)
    _run("ip", "link", "add", host.veth, "type", "veth", "peer", "name", "eth0", "netns", host.name)
    _run("ip", "link", "set", host.veth, "master", bed.bridge, "up")
    host.exec("ip", "addr", "add", f"{host.ip}/24", "dev", "eth0")
    host.exec("ip", "link", "set", "eth0", "up")
    host.exec("ip", "link", "set", "lo", "up")
    _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "ssh_host_ed25519_key"))
    shutil.copyfile(bed.key.with_suffix(".pub"), d / "authorized_keys")
    _add_login_user(d)
    (d / "sshd_config").write_text(
        _SSHD_CONFIG.format(port=host.port, ip=host.ip, dir=d, inner_port=INNER_PORT)
    )
    start_sshd(host)


def _add_login_user(d: Path) -> None:
    """Files that give the host a second, unprivileged login (``USER``, home ``/home/USER``),
    mounted over /etc/passwd, /etc/group, /etc/shadow and /home in the host's own mount
    namespace only: the machine's real user database is never touched."""
    etc = d / "etc"
    etc.mkdir()
    for name, line in (
        ("passwd", f"{USER}:x:{USER_ID}:{USER_ID}::/home/{USER}:/bin/sh"),
        ("group", f"{USER}:x:{USER_ID}:"),
        ("shadow", f"{USER}:*:19000:0:99999:7:::"),
    ):
        text = Path("/etc", name).read_text()
        (etc / name).write_text(text.rstrip("\n") + "\n" + line + "\n")
    (etc / "shadow").chmod(0o640)
    home = d / "homes" / USER
    home.mkdir(parents=True)
    os.chown(home, USER_ID, USER_ID)
    for up in (d, d.parent):  # the user's sshd reads authorized_keys under the bed directory
        up.chmod(0o755)


def start_sshd(host: Host) -> None:
    """(Re)start the host's sshd in a fresh private UTS + mount namespace; wait for its port."""
    d = host.dir
    hide = ""
    if not host.has_python or host.hidden:
        upper, work = d / "ub-up", d / "ub-work"
        upper.mkdir(exist_ok=True)
        work.mkdir(exist_ok=True)
        gone = [] if host.has_python else list(Path("/usr/bin").glob("python3*"))
        for exe in [*gone, *(Path("/usr/bin", n) for n in host.hidden)]:
            whiteout = upper / exe.name
            if not whiteout.exists():
                os.mknod(whiteout, 0o600 | stat.S_IFCHR, os.makedev(0, 0))
        hide = (
            "mount -t overlay overlay "
            f"-o lowerdir=/usr/bin,upperdir={upper},workdir={work} /usr/bin"
        )
    users = "; ".join(
        f"mount --bind {d}/etc/{name} /etc/{name}" for name in ("passwd", "group", "shadow")
    )
    script = (
        f"set -e; hostname {host.name}; mount --bind {d}/home /root; {hide}\n"
        f"{users}; mount --bind {d}/homes /home\n"
        f"exec {SSHD} -f {d}/sshd_config -E {d}/sshd.log"
    )
    host.exec("unshare", "--uts", "--mount", "--propagation", "private", "sh", "-c", script)
    _wait_for(lambda: _port_open(host.ip, host.port), UP_WITHIN_S, f"{host.name} sshd port")


def _take_slot() -> tuple[int, int]:
    for slot in SLOTS:
        fd = os.open(LOCK_DIR / f"{PREFIX}-slot-{slot}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        _clean_slot(slot)  # whatever a killed run left behind on this slot
        if _subnet_in_use(f"10.200.{slot}.0/24"):
            os.close(fd)  # used by something that is not ours: leave it alone
            continue
        return slot, fd
    raise RuntimeError(f"no free SSH test bed slot among {list(SLOTS)}")


def _kill_namespace(ns: str) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        out = _run("ip", "netns", "pids", ns, check=False).stdout
        pids = [int(p) for p in out.split() if p.isdigit()]
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        with contextlib.suppress(RuntimeError):
            _wait_for(
                lambda: not _run("ip", "netns", "pids", ns, check=False).stdout.split(), 1.0, ns
            )
    _run("ip", "netns", "del", ns, check=False)  # also deletes the namespace's veth pair


def _clean_slot(slot: int) -> None:
    mine = f"{PREFIX}{slot}h"
    for ns in _namespaces():
        if ns.startswith(mine):
            _kill_namespace(ns)
    out = _run("ip", "-o", "link", "show").stdout
    for line in out.splitlines():
        link = line.split(":")[1].strip().split("@")[0]
        if link == f"br-{PREFIX}{slot}" or link.startswith(f"v{mine}"):
            _run("ip", "link", "del", link, check=False)


def hosts_up(
    n: int, *, nopy: Iterable[int] = (), hide: Mapping[int, Iterable[str]] | None = None
) -> SshBed:
    """Make ``n`` hosts (1-based ``nopy`` indices get no python3, ``hide`` maps an index to the
    /usr/bin commands it lacks); torn down on any failure."""
    reason = unavailable_reason()
    if reason:
        raise RuntimeError(reason)
    no_python = set(nopy)
    slot, lock_fd = _take_slot()
    root = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{slot}-", dir="/tmp"))
    bed = SshBed(
        slot=slot,
        root=root,
        bridge=f"br-{PREFIX}{slot}",
        subnet=f"10.200.{slot}.0/24",
        key=root / "id_test",
        _lock_fd=lock_fd,
    )
    try:
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd refuses to start without it
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "stix-test", "-f", str(bed.key))
        _run("ip", "link", "add", bed.bridge, "type", "bridge")
        _run("ip", "addr", "add", bed.subnet.replace(".0/24", ".1/24"), "dev", bed.bridge)
        _run("ip", "link", "set", bed.bridge, "up")
        for i in range(1, n + 1):
            bed.add_host(python=i not in no_python, hidden=(hide or {}).get(i, ()))
    except BaseException:
        hosts_down(bed)
        raise
    return bed


def hosts_down(bed: SshBed) -> None:
    """Remove everything the bed made; safe to call twice and after a partial setup.

    Links come up first, so that sockets closed by the kills can say goodbye: an orphaned TCP
    socket still retransmitting keeps its namespace alive for minutes after ``ip netns del``.
    The root ends of the veth pairs are deleted explicitly for the same reason.
    """
    for host in bed.hosts:
        if _link_exists(host.veth):
            _run("ip", "link", "set", host.veth, "up", check=False)
    for host in bed.hosts:
        _kill_namespace(host.name)
        if _link_exists(host.veth):
            _run("ip", "link", "del", host.veth, check=False)
    _clean_slot(bed.slot)
    shutil.rmtree(bed.root, ignore_errors=True)
    if bed._lock_fd is not None:
        os.close(bed._lock_fd)
        bed._lock_fd = None


def leftovers(bed: SshBed) -> list[str]:
    """What of this bed still exists (empty after ``hosts_down``)."""
    found = [f"namespace {ns}" for ns in bed.namespaces()]
    found += [
        f"link {link}" for link in [bed.bridge, *(h.veth for h in bed.hosts)] if _link_exists(link)
    ]
    if bed.root.exists():
        found.append(f"directory {bed.root}")
    found += [f"process {pid} of {h.name}" for h in bed.hosts for pid in _pids_if_exists(h)]
    return found


def _pids_if_exists(host: Host) -> list[int]:
    return host.pids() if host.name in _namespaces() else []


@contextlib.contextmanager
def ssh_hosts(
    n: int, *, nopy: Iterable[int] = (), hide: Mapping[int, Iterable[str]] | None = None
) -> Iterator[SshBed]:
    """A bed for a ``with`` block (or a fixture); skips the test when beds cannot be made."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    bed = hosts_up(n, nopy=nopy, hide=hide)
    try:
        yield bed
    finally:
        hosts_down(bed)
        left = leftovers(bed)
        assert not left, f"the SSH test bed left things behind: {left}"


def bed_fixture(
    n: int,
    *,
    nopy: Iterable[int] = (),
    hide: Mapping[int, Iterable[str]] | None = None,
    scope: Any = "session",
) -> Any:
    """A pytest fixture giving a bed of ``n`` hosts: ``hosts = bed_fixture(3, nopy=[3])``."""
    no_python = tuple(nopy)
    hidden = {i: tuple(names) for i, names in (hide or {}).items()}

    @pytest.fixture(scope=scope)
    def _bed() -> Iterator[SshBed]:
        with ssh_hosts(n, nopy=no_python, hide=hidden) as bed:
            yield bed

    return _bed
