"""The parts of the Kubernetes provider meet here: what a pod is called, how stix talks to a
process in it, and what a launch asks of a pod.

- ``PodRef`` names one pod of one context.
- ``PodShell`` is the channel into a running pod, over the API server's ``exec`` only (no SSH):
  commands with an explicit stdin and a timeout, files and trees sent as byte-counted tar
  streams, and the node agent's socket reached through one long-lived relay per pod. Its
  ``run``/``put_file``/``agent_client`` are what ``stixd.providers.shared.bootstrap`` needs to put
  an agent on a host, so the agent goes into a pod the way it goes onto an SSH host.
- ``PodRequest`` is what a launch asks of each pod, read from the placement the planner made.

Kubernetes API access itself (kubeconfig contexts, clients per context) lives in
``contexts.py``; ``kubernetes_asyncio`` is imported only when a context is first used (it takes
about half a second and 40 MB), never at daemon start.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from stixd.agent_client import AgentClient
from stixproto.errors import ProvisionError

CONTAINER = "stix"
"""The container of every pod stix makes, where the agent and the jobs run."""


@dataclasses.dataclass(frozen=True)
class PodRef:
    context: str
    namespace: str
    name: str
    container: str = CONTAINER

    def __str__(self) -> str:
        return f"pod {self.namespace}/{self.name} in context {self.context}"


class PodShell(Protocol):
    """One pod reached through ``exec``. Every call is bounded by its ``timeout``: a stream that
    stops mid-way fails the call with ``ProvisionError`` (retryable), it never waits for an EOF
    that may not come."""

    host: str
    """How messages name the pod (``str(PodRef)``)."""

    async def run(
        self,
        command: str,
        *,
        timeout: float,  # noqa: ASYNC109 (a bound the channel keeps, as SshConnection.run's)
        stdin: bytes | None = None,
    ) -> tuple[int, str, str]:
        """``sh -c command`` in the pod: (exit status, stdout, stderr)."""
        ...

    async def put_file(self, local: Path, remote: str, *, mode: int = 0o600) -> None:
        """Write ``local``'s bytes at ``remote`` (its folder made), sent with their length."""
        ...

    async def put_tree(self, local: Path, remote: str, *, timeout: float) -> int:  # noqa: ASYNC109
        """Make ``remote`` a copy of ``local`` (a file or a folder) as ``filesync.sync_path``
        would, honouring its ignore files; returns the number of files sent."""
        ...

    def agent_client(self, socket_path: str, name: str) -> AgentClient:
        """The agent listening on ``socket_path`` in the pod, through the pod's relay."""
        ...

    def channel_up(self) -> bool:
        """Whether the pod's relay runs now (an agent call that failed with it up was refused
        by the agent's socket, not lost on the way)."""
        ...

    async def aclose(self) -> None: ...


@dataclasses.dataclass(frozen=True)
class PodVolume:
    """One mount of a pod, as a launch's placement carries it (`volumes.placed`, `of`)."""

    dest: str
    claim: str | None = None
    host_path: str | None = None
    sub_path: str | None = None

    @classmethod
    def of(cls, entry: Mapping[str, Any]) -> PodVolume:
        def text(key: str) -> str | None:
            value = entry.get(key)
            return value if isinstance(value, str) and value else None

        dest = text("dest")
        if dest is None or (text("claim") is None) == (text("host_path") is None):
            raise ProvisionError(f"a pod volume is not one stix writes: {dict(entry)!r:.200}")
        return cls(dest, text("claim"), text("host_path"), text("sub_path"))


@dataclasses.dataclass(frozen=True)
class PodRequest:
    """What each pod of a launch requests (and is limited to), from the placement."""

    cpus: float
    memory_gb: float
    accelerator: str | None = None
    """The accelerator's name as the task gives it (``A100``); None: no GPU."""
    accelerator_count: int = 0
    image: str | None = None
    """``image_id: docker:IMAGE`` without the prefix; None: the default image."""
    ports: tuple[int, ...] = ()
    volumes: tuple[PodVolume, ...] = ()
    """The task's volumes (`stixd.providers.kubernetes.volumes`)."""
    fuse: bool = False
    """The task mounts a bucket: the pod needs FUSE (``podspec.fuse_access``)."""

    @classmethod
    def of(cls, placement: dict[str, Any]) -> PodRequest:
        """From a placement as ``stixd.planner.target.cloud_spec`` writes it for kubernetes
        (its ``request`` entry: ``cpus``, ``memory_gb``, ``accelerator``,
        ``accelerator_count``)."""
        asked = placement.get("request") or {}
        image = placement.get("image_id")
        if isinstance(image, str) and image.startswith("docker:"):
            image = image[len("docker:") :]
        return cls(
            cpus=float(asked.get("cpus") or 0),
            memory_gb=float(asked.get("memory_gb") or 0),
            accelerator=asked.get("accelerator") or None,
            accelerator_count=int(asked.get("accelerator_count") or 0),
            image=image or None,
            ports=tuple(int(p) for p in placement.get("ports") or ()),
            volumes=tuple(PodVolume.of(v) for v in placement.get("volumes") or ()),
            fuse=bool(placement.get("fuse")),
        )
