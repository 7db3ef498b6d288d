"""Put a running agent of the right build on a host (over SSH, or a pod over exec), idempotently.

``ensure_agent`` first reads what is there (home, python3, an agent answering on the node's
socket) and only then acts: uploads the zipapp if that build is missing, starts the agent if
none answers, or upgrades the running one in place (same pid, jobs untouched) if its build
differs. Two calls for the same node never leave two agents: the agent's own per-node lock
makes a second start exit at once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

import anyio

from stixd.agent_bundle import zipapp_name
from stixd.agent_client import AgentClient, AgentError, AgentUnreachable
from stixd.providers.shared.ssh_transport import quote
from stixproto.errors import ProvisionError
from stixproto.paths import PathOutsideParent, child_path

MIN_PYTHON = (3, 7)
MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes (107 and a NUL) on Linux
START_WITHIN_S = 15.0
HELLO_DEADLINE_S = 5.0

# Detaches the agent from the SSH session: a double fork leaves it owned by init, in its own
# session, with no descriptor of the session's, so the channel closes and no hang-up reaches it.
# It runs on the node's python3, which may be as old as MIN_PYTHON.
_SPAWN = """
import os, sys
if os.fork():
    os._exit(0)
os.setsid()
if os.fork():
    os._exit(0)
log = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
os.dup2(log, 1); os.dup2(log, 2)
null = os.open(os.devnull, os.O_RDONLY); os.dup2(null, 0)
os.execv(sys.argv[2], sys.argv[2:])
"""

_PROBE = """\
printf 'home=%s\\n' "$HOME"
printf 'uid=%s\\n' "$(id -u)"
if command -v python3 >/dev/null 2>&1; then
  python3 -c 'import sys; print("python=%d.%d %s" % (sys.version_info[0], sys.version_info[1], \
sys.executable))'
else
  echo python=
fi
"""


class BootstrapError(ProvisionError):
    """The agent could not be put on a host; the message names the host and the next step."""

    def __init__(self, host: str, problem: str, *, retryable: bool) -> None:
        super().__init__(f"host {host}: {problem}")
        self.host = host
        self.retryable = retryable


class AgentHost(Protocol):
    """What putting an agent on a host needs of the channel to it: an SSH connection
    (``SshConnection``) or a pod reached through ``exec`` (the kubernetes provider's
    ``PodShell``)."""

    @property
    def host(self) -> str: ...

    async def run(
        self,
        command: str,
        *,
        timeout: float,  # noqa: ASYNC109 (the channel keeps it, so its error names the phase)
    ) -> tuple[int, str, str]: ...

    async def put_file(self, local: Path, remote: str, *, mode: int = 0o600) -> None: ...

    def agent_client(self, socket_path: str, name: str) -> AgentClient: ...


@dataclasses.dataclass(frozen=True)
class RemoteFacts:
    home: str
    uid: int
    python: str
    """Absolute path of the host's python3."""
    python_version: tuple[int, int]


@dataclasses.dataclass(frozen=True)
class AgentEndpoint:
    host: str
    cluster: str
    rank: int
    home: str
    node_dir: str
    socket_path: str
    pyz: str
    """The zipapp the agent should run (``<base>/agent/stix-agent-<build>.pyz``)."""
    build: str
    pid: int
    started: bool
    """True when this call started the agent (False: it was already running)."""
    upgraded: bool
    phases: dict[str, float] = dataclasses.field(default_factory=dict)
    """Seconds spent in each phase of this call: ``probe``, ``upload``, ``start``."""


@dataclasses.dataclass(frozen=True)
class _Layout:
    base: str
    node_dir: str
    socket_path: str
    pyz: str


async def probe(conn: AgentHost) -> RemoteFacts:
    """Home, uid and python3 of the login user; a host without a usable python3 is an error."""
    status, out, err = await conn.run(_PROBE, timeout=30)
    facts = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    home, python = facts.get("home", ""), facts.get("python", "")
    if status != 0 or not home.startswith("/"):
        detail = (err or out).strip()[-300:] or f"exit status {status}"
        raise BootstrapError(
            conn.host, f"cannot read the login environment: {detail}", retryable=True
        )
    need = ".".join(map(str, MIN_PYTHON))
    if not python:
        raise BootstrapError(
            conn.host,
            f"python3 is not installed; stix needs Python {need} or newer on every node "
            "(install it, e.g. `apt-get install -y python3`)",
            retryable=False,
        )
    version_text, _, executable = python.partition(" ")
    major, _, minor = version_text.partition(".")
    version = (int(major), int(minor))
    if version < MIN_PYTHON:
        raise BootstrapError(
            conn.host,
            f"python3 is {version_text}, but stix needs {need} or newer on every node",
            retryable=False,
        )
    return RemoteFacts(home, int(facts.get("uid", "0")), executable or "python3", version)


def remote_node_dir(base: str, cluster: str, rank: int) -> str:
    """``<base>/nodes/<cluster>-<rank>`` on the host; `PathOutsideParent` for a name that would
    leave ``<base>/nodes`` (stix runs ``rm -rf`` on this directory at ``down``)."""
    return str(child_path(PurePosixPath(base) / "nodes", f"{cluster}-{rank}"))


def _layout(
    facts: RemoteFacts, cluster: str, rank: int, build: str, remote_base: str | None
) -> _Layout:
    base = (remote_base or f"{facts.home}/.stix").rstrip("/")
    if base.startswith("~"):
        base = facts.home + base[1:]
    node_dir = remote_node_dir(base, cluster, rank)
    socket_path = f"{node_dir}/agent.sock"
    if len(socket_path.encode()) > MAX_SOCKET_PATH:
        digest = hashlib.sha1(node_dir.encode()).hexdigest()[:20]
        socket_path = f"/tmp/stix-{facts.uid}/{digest}.sock"
    return _Layout(base, node_dir, socket_path, f"{base}/agent/{zipapp_name(build)}")


async def _hello(client: AgentClient) -> dict[str, Any] | None:
    try:
        return await client.call("hello", deadline=HELLO_DEADLINE_S)
    except AgentUnreachable:
        return None


async def _upload_if_missing(conn: AgentHost, pyz: Path, remote: str) -> None:
    status, _, _ = await conn.run(f"test -f {quote(remote)}", timeout=30)
    if status != 0:
        folder = quote(remote.rsplit("/", 1)[0])
        await conn.run(f"umask 077 && mkdir -p {folder} && chmod 700 {folder}", timeout=30)
        await conn.put_file(pyz, remote, mode=0o600)


async def _answer_within(client: AgentClient, build: str, within: float) -> dict[str, Any] | None:
    """The first hello reporting ``build``, or None if none does in time."""
    with anyio.move_on_after(within):
        while True:
            hello = await _hello(client)
            if hello is not None and hello.get("build") == build:
                return hello
            await anyio.sleep(0.1)
    return None


async def _start(
    conn: AgentHost,
    facts: RemoteFacts,
    where: _Layout,
    *,
    cluster: str,
    rank: int,
    node_ip: str,
    num_gpus: float,
) -> None:
    out = f"{where.node_dir}/agent.out"
    argv = [
        facts.python,
        where.pyz,
        "serve",
        "--node-dir",
        where.node_dir,
        "--socket",
        where.socket_path,
        "--cluster",
        cluster,
        "--rank",
        str(rank),
        "--num-gpus",
        f"{num_gpus:g}",
        "--node-ip",
        node_ip,
    ]
    # a subshell: the agent starts with the login's umask, which its jobs keep
    made = f"(umask 077 && mkdir -p {quote(where.node_dir)} && chmod 700 {quote(where.node_dir)})"
    command = f"{made} && {quote(facts.python, '-c', _SPAWN, out, *argv)}"
    status, _, err = await conn.run(command, timeout=30)
    if status != 0:
        raise BootstrapError(
            conn.host, f"could not start the agent: {err.strip()[-300:]}", retryable=True
        )


async def _agent_output(conn: AgentHost, where: _Layout) -> str:
    _, out, _ = await conn.run(f"tail -c 2000 {quote(where.node_dir + '/agent.out')}", timeout=30)
    return out.strip() or "(no output)"


async def ensure_agent(
    conn: AgentHost,
    *,
    cluster: str,
    rank: int,
    node_ip: str,
    pyz: Path,
    build: str,
    remote_base: str | None = None,
    num_gpus: float = 0.0,
    start_within: float = START_WITHIN_S,
) -> AgentEndpoint:
    """An agent of ``build`` answering for ``cluster``/``rank`` on the host of ``conn``.

    Raises ``BootstrapError`` for what is wrong on the host, and the transport's error
    (``SshError``, a pod's ``ExecError``) when the host cannot be reached at all.
    """
    try:
        remote_node_dir("", cluster, rank)
    except PathOutsideParent:
        raise BootstrapError(
            conn.host, f"cluster name {cluster!r} is not usable in a path", retryable=False
        ) from None
    phases: dict[str, float] = {}
    clock = time.monotonic()

    def lap(phase: str) -> None:
        nonlocal clock
        now = time.monotonic()
        phases[phase] = round(now - clock, 4)
        clock = now

    facts = await probe(conn)
    where = _layout(facts, cluster, rank, build, remote_base)
    client = conn.agent_client(where.socket_path, f"{cluster}-{rank}@{conn.host}")

    def endpoint(hello: dict[str, Any], *, started: bool, upgraded: bool) -> AgentEndpoint:
        return AgentEndpoint(
            host=conn.host,
            cluster=cluster,
            rank=rank,
            home=facts.home,
            node_dir=where.node_dir,
            socket_path=where.socket_path,
            pyz=where.pyz,
            build=str(hello.get("build")),
            pid=int(hello["pid"]),
            started=started,
            upgraded=upgraded,
            phases=phases,
        )

    hello = await _hello(client)
    lap("probe")
    if hello is not None and hello.get("build") == build:
        return endpoint(hello, started=False, upgraded=False)

    await _upload_if_missing(conn, pyz, where.pyz)
    lap("upload")
    if hello is not None:
        old = hello.get("build")
        try:
            await client.call("upgrade", deadline=HELLO_DEADLINE_S, pyz=where.pyz)
        except AgentError as exc:
            raise BootstrapError(
                conn.host,
                f"the agent refused to upgrade from {old} to {build}: {exc}",
                retryable=False,
            ) from None
        new = await _answer_within(client, build, start_within)
        lap("start")
        if new is None:
            raise BootstrapError(
                conn.host,
                f"the agent did not come back as build {build} within {start_within:g} s "
                f"after an upgrade from {old}; its output: {await _agent_output(conn, where)}",
                retryable=True,
            )
        return endpoint(new, started=False, upgraded=True)

    await _start(conn, facts, where, cluster=cluster, rank=rank, node_ip=node_ip, num_gpus=num_gpus)
    started = await _answer_within(client, build, start_within)
    lap("start")
    if started is None:
        raise BootstrapError(
            conn.host,
            f"the agent did not answer within {start_within:g} s of its start; "
            f"its output: {await _agent_output(conn, where)}",
            retryable=True,
        )
    return endpoint(started, started=True, upgraded=False)
