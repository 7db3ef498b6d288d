"""What this stix home made in a context that no cluster owns: pods and services carrying its
owner label (a crash between a create and its record, a record removed by hand). Another
home's objects are never leaks of this one."""

from __future__ import annotations

import time
from collections.abc import Collection
from datetime import datetime
from typing import Any

from stixd.providers.abilities import Leak, LeakPolicy
from stixd.providers.kubernetes import pods
from stixd.providers.kubernetes.api import KubeApi, path
from stixd.providers.kubernetes.podspec import LABEL_CLUSTER, LABEL_OWNER, label_value
from stixd.providers.kubernetes.shapes import as_map, get, maps

POLICY = LeakPolicy(check_every_s=600.0, min_age_s=600.0, terminate=False)
KINDS = (("pods", "instance"), ("services", "service"))
"""The API's resource -> the leak's kind."""


def age_s(item: dict[str, Any]) -> float | None:
    made = get(item, "metadata", "creationTimestamp")
    if not isinstance(made, str) or len(made) > 64:
        return None
    try:
        return time.time() - datetime.fromisoformat(made.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


async def find(
    api: KubeApi, namespace: str, owner: str, live: Collection[str], young_s: float
) -> list[Leak]:
    """Objects of ``namespace`` made by ``owner`` for a cluster not in ``live``, at least
    ``young_s`` old; those being deleted are not leaks."""
    owned = {label_value(c) for c in live}
    found: list[Leak] = []
    for resource, kind in KINDS:
        answer = await api.list_all(
            path("namespaces", namespace, resource),
            query={"labelSelector": f"{LABEL_CLUSTER},{LABEL_OWNER}={owner}"},
        )
        for item in maps(answer.get("items")):
            meta = as_map(item.get("metadata"))
            cluster = as_map(meta.get("labels")).get(LABEL_CLUSTER, "")
            if not isinstance(cluster, str):
                continue  # not a label stix wrote (a server's labels are strings)
            age = age_s(item)
            name = meta.get("name")
            if not isinstance(name, str) or not 0 < len(name) <= 253:
                continue  # no name a server gives: nothing to delete it by
            if meta.get("deletionTimestamp") or cluster in owned:
                continue
            if age is not None and age < young_s:
                continue
            found.append(
                Leak(
                    kind=kind,
                    id=f"{namespace}/{name}",
                    region=api.context,
                    cluster=cluster,
                    age_s=age,
                    state=phase if isinstance(phase := get(item, "status", "phase"), str) else None,
                )
            )
    return found


async def clean(api: KubeApi, leak: Leak) -> None:
    namespace, _, name = leak.id.partition("/")
    resource = next((r for r, kind in KINDS if kind == leak.kind), "pods")
    await pods.delete(api, namespace, resource, name)
