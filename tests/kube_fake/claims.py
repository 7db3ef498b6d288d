"""PersistentVolumeClaims, as far as the scheduler reads them. The fake has no default
StorageClass: a claim naming none stays ``Pending`` (unbound), as on a cluster without one, and
a pod mounting a claim that is missing or unbound is left Pending with the real scheduler's
pod-level sentence (``pod has unbound immediate PersistentVolumeClaims``;
``persistentvolumeclaim "x" not found``). A claim naming a ``storageClassName`` is bound at once,
as a class with ``volumeBindingMode: Immediate`` and a provisioner binds it: ``spec.volumeName``
``pvc-<uid>`` and the status a real server gives (phase, access modes, capacity)."""

from __future__ import annotations

import copy
from pathlib import Path

from tests.kube_fake.meta import Obj, new_metadata
from tests.kube_fake.store import Store

RESOURCE = "persistentvolumeclaims"
DIRECTORY_TYPES = ("", "Directory", "DirectoryOrCreate")
"""The hostPath types the fake mounts (a device such as /dev/fuse the pod reaches as it is)."""


def new_claim(body: Obj, namespace: str) -> Obj:
    spec = copy.deepcopy(body.get("spec") or {})
    spec.setdefault("volumeMode", "Filesystem")
    meta = new_metadata(body, namespace, RESOURCE)
    status: Obj = {"phase": "Pending"}
    if spec.get("storageClassName"):
        spec["volumeName"] = f"pvc-{meta['uid']}"
        asked = ((spec.get("resources") or {}).get("requests") or {}).get("storage")
        status = {
            "phase": "Bound",
            "accessModes": list(spec.get("accessModes") or []),
            "capacity": {"storage": asked} if asked else {},
        }
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": meta,
        "spec": spec,
        "status": status,
    }


def claim_problem(store: Store, pod: Obj) -> str | None:
    """Why the pod's claims keep it off every node (a reason of the whole pod), or None."""
    namespace = pod["metadata"]["namespace"]
    unbound = False
    for volume in pod.get("spec", {}).get("volumes") or []:
        claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
        if not claim:
            continue
        found = store.find(RESOURCE, namespace, claim)
        if found is None:
            return f'persistentvolumeclaim "{claim}" not found'
        unbound = unbound or found.get("status", {}).get("phase") != "Bound"
    return "pod has unbound immediate PersistentVolumeClaims" if unbound else None


def pod_level_message(nodes: int, problem: str) -> str:
    """The scheduler's sentence for a pod its PreFilter stage turned away from every node."""
    return (
        f"0/{nodes} nodes are available: {problem}. preemption: 0/{nodes} nodes are available: "
        f"{nodes} Preemption is not helpful for scheduling."
    )


def pod_mounts(store: Store, root: Path, pod: Obj) -> list[tuple[Path, str, bool]]:
    """(folder on this machine, mount path, whether a claim) of each claim and folder hostPath
    the pod's container mounts: a bound claim is a folder the fake keeps per claim (by its uid,
    so a claim made again under the same name starts empty), a ``subPath`` a folder in it."""
    namespace = pod["metadata"]["namespace"]
    sources: dict[str, tuple[Path, bool]] = {}
    for volume in pod["spec"].get("volumes") or []:
        claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
        host_path = volume.get("hostPath") or {}
        host = host_path.get("path") if host_path.get("type", "") in DIRECTORY_TYPES else None
        found = store.find(RESOURCE, namespace, claim) if claim else None
        if found is not None:
            sources[volume["name"]] = (root / "claims" / found["metadata"]["uid"], True)
        elif host:
            sources[volume["name"]] = (Path(host), False)
    mounts = []
    for mount in pod["spec"]["containers"][0].get("volumeMounts") or []:
        if (source := sources.get(mount.get("name", ""))) is not None:
            folder, is_claim = source
            mounts.append((folder / mount.get("subPath", ""), mount["mountPath"], is_claim))
    return mounts
