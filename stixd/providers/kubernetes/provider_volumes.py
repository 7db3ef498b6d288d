"""The ``kubernetes`` provider's volumes (`stixctl volumes`): claims made and deleted in the
volume's context and namespace, and the pod spec entries of a launch that mounts them
(`stixd.providers.kubernetes.volumes`). A part of ``KubernetesProvider``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from stixd.providers.abilities import VolumeMount
from stixd.providers.base import NodeInfo
from stixd.providers.kubernetes import volumes
from stixd.providers.kubernetes.agents import ref_of
from stixd.providers.kubernetes.api import KubeApi, path
from stixd.providers.kubernetes.contexts import Clients, Kubeconfig
from stixproto.errors import ProvisionError
from stixproto.volumes import HOSTPATH, VolumeConfig


class HoldsVolumes:
    clients: Clients

    if TYPE_CHECKING:

        @property
        def owner(self) -> str: ...

        @property
        def kubeconfig(self) -> Kubeconfig: ...

        def contexts(self) -> list[str]: ...

        def namespace(self, context: str) -> str: ...

        async def api(self, context: str) -> KubeApi: ...

    def _volume_context(self, volume: VolumeConfig) -> tuple[str, str]:
        """(context, namespace) the volume lives in."""
        context = volume.where
        if context is None:
            contexts = self.contexts()
            if not contexts:
                raise ProvisionError(f"volume {volume.name}: no Kubernetes context to make it in")
            context = contexts[0]
        elif context not in self.kubeconfig.contexts:
            known = ", ".join(self.kubeconfig.contexts) or "none"
            raise ProvisionError(f"no Kubernetes context {context} (contexts: {known})")
        return context, volume.config.namespace or self.namespace(context)

    async def make_volume(self, volume: VolumeConfig, cluster: str | None = None) -> str:
        await self.clients.refresh()
        context, namespace = self._volume_context(volume)
        if volume.type == HOSTPATH:
            return f"{context}: hostPath {volume.config.host_path}"
        api = await self.api(context)
        return await volumes.make_claim(api, namespace, volume, self.owner, cluster)

    async def remove_volume(self, volume: VolumeConfig, cluster: str | None = None) -> None:
        if volume.type == HOSTPATH:
            return
        await self.clients.refresh()
        context, namespace = self._volume_context(volume)
        await volumes.delete_claim(await self.api(context), namespace, volume, self.owner)

    def launch_resources(self, mounts: Sequence[VolumeMount]) -> dict[str, Any]:
        """The pods mount the volumes from their spec; a claim must be in their namespace."""
        for m in mounts:
            context, namespace = self._volume_context(m.volume)
            pods = self.namespace(context)
            if m.volume.type != HOSTPATH and namespace != pods:
                raise ProvisionError(
                    f"volume {m.volume.name} is in namespace {namespace} but the pods run in "
                    f"{pods}; a pod mounts only claims of its own namespace"
                )
        return {"volumes": volumes.placed(mounts, self.owner)}

    async def mount_volumes(self, node: NodeInfo, mounts: Sequence[VolumeMount]) -> None:
        """Nothing to make: the pods were made mounting them (`launch_resources`). A launch on
        a cluster already up whose pod lacks one is refused, as a pod cannot gain a volume."""
        ref = ref_of(node)
        pod = await (await self.api(ref.context)).call(
            "GET", path("namespaces", ref.namespace, "pods", ref.name)
        )
        containers = (pod.get("spec") or {}).get("containers") or [{}]
        have = {
            m.get("mountPath")
            for m in (containers[0].get("volumeMounts") or [])
            if isinstance(m, dict)
        }
        for m in mounts:
            if m.dest not in have:
                raise ProvisionError(
                    f"volume {m.volume.name}: the pods of this cluster were made without a "
                    f"volume at {m.dest}; launch the task on a new cluster"
                )
