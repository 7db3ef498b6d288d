"""``ExecShell``: the ``PodShell`` of one pod, over the API server's ``exec`` only.

Commands are one exec each (``sh -c``); a file goes as its bytes with their count, read in the
pod by ``head -c`` and checked; a tree goes as one tar with its byte count after the pod listed
what it has (``tarsync.py``); the agent's socket is reached through the pod's relay
(``relay.py``), one long-lived exec shared by every agent call.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from stixd.agent_client import AgentClient
from stixd.providers.kubernetes import exec as pod_exec
from stixd.providers.kubernetes import inpod, tarsync
from stixd.providers.kubernetes.exec import ExecError
from stixd.providers.kubernetes.relay import Relay
from stixd.providers.kubernetes.seams import PodRef
from stixd.providers.shared.ssh_transport import quote

if TYPE_CHECKING:
    from kubernetes_asyncio.client import ApiClient

    from stixd.providers.kubernetes.contexts import Clients

PUT_FILE_BASE_S = 30.0
PUT_FILE_BYTES_PER_S = 1024 * 1024  # the slowest link a file upload is allowed to see


def remote_path(path: str) -> str:
    """``path`` for ``sh``: quoted, with a leading ``~/`` left to the shell's ``$HOME``."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + quote(path[2:])
    return quote(path)


class ExecShell:
    """One pod, reached through ``exec``: implements ``seams.PodShell``."""

    def __init__(self, client: ApiClient, pod: PodRef) -> None:
        self.client = client
        self.pod = pod
        self.host = str(pod)
        self.relay = Relay(client, pod)

    async def run(
        self,
        command: str,
        *,
        timeout: float,  # noqa: ASYNC109 (a bound the channel keeps, as SshConnection.run's)
        stdin: bytes | None = None,
    ) -> tuple[int, str, str]:
        done = await pod_exec.run(
            self.client,
            self.pod,
            ["sh", "-c", command],
            timeout=timeout,
            stdin=() if stdin is None else (stdin,),
        )
        return done.status, _text(done.stdout), _text(done.stderr)

    async def put_file(self, local: Path, remote: str, *, mode: int = 0o600) -> None:
        data = await anyio.Path(local).read_bytes()
        size = len(data)
        target = remote_path(remote)
        command = (
            f'set -e; umask 077; t={target}.part-$$; mkdir -p -- "$(dirname -- {target})"; '
            f'head -c {size} > "$t"; '
            f'if [ "$(wc -c < "$t")" -ne {size} ]; then rm -f "$t"; '
            f"echo 'the upload stopped short' >&2; exit 1; fi; "
            f'chmod {mode:o} "$t"; mv -f "$t" {target}'
        )
        timeout = PUT_FILE_BASE_S + size / PUT_FILE_BYTES_PER_S
        status, _, err = await self.run(command, timeout=timeout, stdin=data)
        if status != 0:
            why = err.strip().splitlines()[-1][:300] if err.strip() else f"exit status {status}"
            raise ExecError(f"{self.pod}: cannot write {remote}: {why}", retryable=True)

    async def put_tree(self, local: Path, remote: str, *, timeout: float) -> int:  # noqa: ASYNC109
        if not local.exists() and not local.is_symlink():
            raise FileNotFoundError(f"{local} does not exist")
        deadline = time.monotonic() + timeout
        listed = await self._tarsync(["list", remote], (), deadline, timeout)
        try:
            kind, there = tarsync.read_listing(listed)
        except (ValueError, KeyError, TypeError):
            raise ExecError(
                f"{self.pod}: cannot read what is at {remote}", retryable=True
            ) from None
        is_tree = local.is_dir() and not local.is_symlink()
        plan = await anyio.to_thread.run_sync(
            tarsync.plan_tree if is_tree else tarsync.plan_file, local, remote, kind, there
        )
        if plan.empty:
            return 0
        try:
            tar = await anyio.to_thread.run_sync(tarsync.TarStream, plan)
        except OSError as exc:  # a file went away since the walk: the next sync has it right
            raise ExecError(
                f"{self.pod}: cannot read {local} ({exc.strerror or exc}); try again",
                retryable=True,
            ) from None
        header = tarsync.apply_header(plan, tar.size, tar.times)
        await self._tarsync(["apply", plan.root], (header, tar.chunks()), deadline, timeout)
        return plan.files

    async def _tarsync(
        self,
        args: list[str],
        stdin: tuple[bytes | Iterator[bytes], ...],
        deadline: float,
        budget: float,
    ) -> str:
        left = deadline - time.monotonic()
        if left <= 0:
            raise ExecError(
                f"{self.pod}: syncing took over {budget:g} s; try again", retryable=True
            )
        done = await pod_exec.run(
            self.client,
            self.pod,
            inpod.argv("tarsync", *args),
            timeout=left,
            stdin=(inpod.preamble("tarsync"), *stdin),
        )
        if done.status != 0:
            err = _text(done.stderr).strip().splitlines()
            why = err[-1][:300] if err else f"exit status {done.status}"
            raise ExecError(f"{self.pod}: sync of {args[1]} failed: {why}", retryable=True)
        return _text(done.stdout)

    def agent_client(self, socket_path: str, name: str) -> AgentClient:
        async def open_stream() -> anyio.abc.ByteStream:
            return await self.relay.open_stream(socket_path)

        return AgentClient(open_stream, name)

    def channel_up(self) -> bool:
        return self.relay.alive

    async def aclose(self) -> None:
        await self.relay.aclose()


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


async def open_shell(clients: Clients, pod: PodRef) -> ExecShell:
    """The shell of ``pod``, on its context's API client (made on first use)."""
    return ExecShell(await clients.client(pod.context), pod)
