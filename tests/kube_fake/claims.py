"""PersistentVolumeClaims, as far as the scheduler reads them: the fake has no volume
provisioner, so a claim stays ``Pending`` (unbound) until a test binds it, and a pod mounting a
claim that is missing or unbound is left Pending with the real scheduler's pod-level sentence
(``pod has unbound immediate PersistentVolumeClaims``; ``persistentvolumeclaim "x" not found``)."""

from __future__ import annotations

import copy

from tests.kube_fake.meta import Obj, new_metadata
from tests.kube_fake.store import Store

RESOURCE = "persistentvolumeclaims"


def new_claim(body: Obj, namespace: str) -> Obj:
    spec = copy.deepcopy(body.get("spec") or {})
    spec.setdefault("volumeMode", "Filesystem")
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": new_metadata(body, namespace, RESOURCE),
        "spec": spec,
        "status": {"phase": "Pending"},
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
