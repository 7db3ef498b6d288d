"""What a terminate left on a pool host it could not reach, in ``<home>/ssh_leftovers.json``.

The host goes back to the pool anyway (it may never come back, and `down` must end), but the
cluster's agent may still run there with its jobs: a server holding its port, an agent a new
cluster of the same name would adopt. The next launch that takes the host shuts that agent
down (its jobs with it) and removes its files before it starts its own.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import anyio
import msgspec
import structlog

from stixd.agent_client import AgentError, AgentUnreachable
from stixd.providers.shared.fuse_mounts import SHUTDOWN_DEADLINE_S
from stixd.providers.shared.ssh_transport import SshConnection, quote
from stixd.providers.ssh.pools import locked_json

LEFTOVERS_FILE = "ssh_leftovers.json"
GONE_WITHIN_S = 10.0
"""How long a leftover agent told to shut down may take to stop answering."""


class Leftover(msgspec.Struct, frozen=True, kw_only=True):
    cluster: str
    rank: int
    socket: str | None = None
    """Where its agent listened (None: it never started one)."""
    paths: list[str] = []
    """Its files on the host (workdir, node directory), removed once the agent is down."""


class Leftovers:
    """Per host (``PoolHost.key``), what terminated clusters left there. Read-modify-write
    under an ``flock`` and a rename, as the allocations; the methods block (worker thread)."""

    def __init__(self, home: Path) -> None:
        self.path = home / LEFTOVERS_FILE

    def _locked(self) -> contextlib.AbstractContextManager[dict[str, list[Leftover]]]:
        return locked_json(self.path, self._read, lambda d: {k: v for k, v in d.items() if v})

    def _read(self) -> dict[str, list[Leftover]]:
        try:
            return msgspec.json.decode(self.path.read_bytes(), type=dict[str, list[Leftover]])
        except FileNotFoundError:
            return {}
        except msgspec.DecodeError:  # a damaged note: what it said is lost, the pool still works
            return {}

    def add(self, host: str, left: Leftover) -> None:
        with self._locked() as data:
            found = data.setdefault(host, [])
            if left not in found:
                found.append(left)

    def on(self, host: str) -> list[Leftover]:
        with self._locked() as data:
            return list(data.get(host, []))

    def drop(self, host: str, left: Leftover) -> None:
        with self._locked() as data:
            data[host] = [x for x in data.get(host, []) if x != left]


async def reap(
    conn: SshConnection, host: str, leftovers: Leftovers, log: structlog.stdlib.BoundLogger
) -> None:
    """Shut down what terminates that could not reach ``host`` (its key) left running there,
    an agent and its jobs (a replica's server holding the port the next one binds), and
    remove their files. ``SshError`` if the host cannot be reached now either."""
    for left in await anyio.to_thread.run_sync(leftovers.on, host):
        if left.socket:
            agent = conn.agent_client(left.socket, f"{left.cluster}-{left.rank}@{conn.host}")
            with contextlib.suppress(AgentUnreachable, AgentError):
                # jobs end first, then the mounts flush
                await agent.call("shutdown", deadline=SHUTDOWN_DEADLINE_S, kill_jobs=True)
            with anyio.move_on_after(GONE_WITHIN_S):
                while True:  # it answers before it exits
                    try:
                        await agent.call("hello", deadline=2)
                    except (AgentUnreachable, AgentError):
                        break
                    await anyio.sleep(0.1)
        if left.paths:
            await conn.run(f"rm -rf -- {quote(*left.paths)}", timeout=60)
        log.info("ssh_leftover_reaped", host=host, cluster=left.cluster, rank=left.rank)
        await anyio.to_thread.run_sync(leftovers.drop, host, left)
