"""Volumes on Kubernetes: a ``k8s-pvc`` volume is a PersistentVolumeClaim made in the volume's
namespace (``config.namespace``, else the context's), labelled as stix's and this home's; a
``use_existing`` one adopts the claim of that name and is never deleted. A ``k8s-hostpath``
volume makes nothing: the pods mount ``config.host_path`` (``DirectoryOrCreate``).

An ephemeral volume (a task's ``{size: ...}`` entry) is a claim made the same way for one
cluster, labelled with the cluster too, and deleted at its `down`.

A launch mounts them through the pod spec (``pod_volumes``: the pods exist only once, so the
volumes are known before they are made); a claim must be in the pods' namespace.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from stixd.providers.abilities import VolumeMount
from stixd.providers.kubernetes.api import KubeApi, KubeApiError, path
from stixd.providers.kubernetes.podspec import LABEL_CLUSTER, LABEL_OWNER, label_value, object_name
from stixproto.errors import ProvisionError
from stixproto.volumes import HOSTPATH, VolumeConfig

RESOURCE = "persistentvolumeclaims"
LABEL_VOLUME = "stix-volume"
DEFAULT_ACCESS = "ReadWriteOnce"


def claim_name(volume: VolumeConfig, owner: str) -> str:
    """The claim stix makes is ``<volume>-<owner>`` (a DNS label, `object_name`); an adopted
    one is the volume's own name."""
    return volume.name if volume.use_existing else object_name(volume.name, owner, "")


def claim_manifest(volume: VolumeConfig, owner: str, cluster: str | None = None) -> dict[str, Any]:
    labels = {**volume.labels, LABEL_VOLUME: label_value(volume.name), LABEL_OWNER: owner}
    if cluster is not None:
        labels[LABEL_CLUSTER] = label_value(cluster)
    spec: dict[str, Any] = {
        "accessModes": [volume.config.access_mode or DEFAULT_ACCESS],
        "resources": {"requests": {"storage": f"{volume.size_gb}Gi"}},
    }
    if volume.config.storage_class_name:
        spec["storageClassName"] = volume.config.storage_class_name
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": claim_name(volume, owner), "labels": labels},
        "spec": spec,
    }


def _ours(claim: Mapping[str, Any], volume: VolumeConfig, owner: str) -> bool:
    labels = (claim.get("metadata") or {}).get("labels") or {}
    return bool(
        isinstance(labels, dict)
        and labels.get(LABEL_VOLUME) == label_value(volume.name)
        and labels.get(LABEL_OWNER) == owner
    )


async def _get(api: KubeApi, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return await api.call("GET", path("namespaces", namespace, RESOURCE, name))
    except KubeApiError as exc:
        if exc.status == 404:
            return None
        raise


async def make_claim(
    api: KubeApi, namespace: str, volume: VolumeConfig, owner: str, cluster: str | None = None
) -> str:
    """Make (or find again) the volume's claim; ``context/namespace/claim``."""
    name = claim_name(volume, owner)
    where = f"{api.context}/{namespace}/{name}"
    if volume.use_existing:
        if await _get(api, namespace, name) is None:
            raise ProvisionError(
                f"volume {volume.name}: no PersistentVolumeClaim {name} in namespace "
                f"{namespace} of {api.context} to adopt (use_existing)"
            )
        return where
    try:
        await api.call(
            "POST",
            path("namespaces", namespace, RESOURCE),
            body=claim_manifest(volume, owner, cluster),
        )
    except KubeApiError as exc:
        if exc.status != 409:
            raise
        found = await _get(api, namespace, name)
        if found is None or not _ours(found, volume, owner):
            raise ProvisionError(
                f"volume {volume.name}: a PersistentVolumeClaim {name} that stix did not make "
                f"is in namespace {namespace}; adopt it with use_existing: true"
            ) from None
    return where


async def delete_claim(api: KubeApi, namespace: str, volume: VolumeConfig, owner: str) -> None:
    """Delete the claim stix made; an adopted claim, or one not labelled as this volume's of
    this home, is left alone."""
    if volume.use_existing:
        return
    name = claim_name(volume, owner)
    found = await _get(api, namespace, name)
    if found is None or not _ours(found, volume, owner):
        return
    try:
        await api.call("DELETE", path("namespaces", namespace, RESOURCE, name))
    except KubeApiError as exc:
        if exc.status != 404:
            raise


def placed(mounts: Iterable[VolumeMount], owner: str) -> list[dict[str, str]]:
    """The task's volumes as a launch's placement carries them to `pod_volumes`."""
    out: list[dict[str, str]] = []
    for m in mounts:
        if not m.dest.startswith("/"):
            raise ProvisionError(
                f"volumes: {m.dest[:60]!r} is not an absolute path; a pod mounts a volume at one"
            )
        entry = {"dest": m.dest}
        if m.volume.type == HOSTPATH:
            entry["host_path"] = m.volume.config.host_path or ""
        else:
            entry["claim"] = claim_name(m.volume, owner)
        if m.sub_path:
            entry["sub_path"] = m.sub_path
        out.append(entry)
    return out
