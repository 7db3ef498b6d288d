"""A pod's ``ExecShell`` made on first use: the provider hands out shells (``connector`` is not
async) before the context's API client exists, which is made off the loop on first use."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import anyio.abc

from stixd.agent_client import AgentClient
from stixd.providers.kubernetes.contexts import Clients
from stixd.providers.kubernetes.seams import PodRef

if TYPE_CHECKING:
    from stixd.providers.kubernetes.shell import ExecShell


class DeferredShell:
    """Implements ``seams.PodShell`` over one ``ExecShell``, made when first needed."""

    def __init__(self, clients: Clients, pod: PodRef) -> None:
        self.clients = clients
        self.pod = pod
        self.host = str(pod)
        self._made: ExecShell | None = None
        self._lock = anyio.Lock()

    async def shell(self) -> ExecShell:
        async with self._lock:
            if self._made is None:
                from stixd.providers.kubernetes.shell import open_shell

                self._made = await open_shell(self.clients, self.pod)
            return self._made

    async def run(
        self,
        command: str,
        *,
        timeout: float,  # noqa: ASYNC109 (the shell's own bound)
        stdin: bytes | None = None,
    ) -> tuple[int, str, str]:
        return await (await self.shell()).run(command, timeout=timeout, stdin=stdin)

    async def put_file(self, local: Path, remote: str, *, mode: int = 0o600) -> None:
        await (await self.shell()).put_file(local, remote, mode=mode)

    async def put_tree(self, local: Path, remote: str, *, timeout: float) -> int:  # noqa: ASYNC109
        return await (await self.shell()).put_tree(local, remote, timeout=timeout)

    def agent_client(self, socket_path: str, name: str) -> AgentClient:
        async def open_stream() -> anyio.abc.ByteStream:
            return await (await self.shell()).relay.open_stream(socket_path)

        return AgentClient(open_stream, name)

    def channel_up(self) -> bool:
        return self._made is not None and self._made.channel_up()

    async def aclose(self) -> None:
        made, self._made = self._made, None
        if made is not None:
            await made.aclose()
