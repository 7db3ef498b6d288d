"""Events as the scheduler and the kubelet write them (`FailedScheduling`, `Scheduled`,
`Started`, `Killing`, `Evicted`); a repeat of the same reason and message bumps `count`."""

from __future__ import annotations

import uuid

from tests.kube_fake.meta import Obj, timestamp
from tests.kube_fake.store import Store


def record(
    store: Store,
    about: Obj,
    reason: str,
    message: str,
    *,
    warning: bool = False,
    component: str = "kubelet",
) -> Obj:
    meta = about["metadata"]
    namespace = meta.get("namespace", "default")
    now = timestamp()
    for old in store.list("events", namespace):
        same = old["involvedObject"]["uid"] == meta["uid"] and old["reason"] == reason
        if same and old["message"] == message:
            old["count"] += 1
            old["lastTimestamp"] = now
            return store.update("events", old)
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{meta['name']}.{uuid.uuid4().hex[:16]}",
            "namespace": namespace,
            "uid": str(uuid.uuid4()),
            "creationTimestamp": now,
        },
        "involvedObject": {
            "kind": about.get("kind", ""),
            "apiVersion": about.get("apiVersion", "v1"),
            "namespace": namespace,
            "name": meta["name"],
            "uid": meta["uid"],
        },
        "reason": reason,
        "message": message,
        "type": "Warning" if warning else "Normal",
        "count": 1,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "source": {"component": component},
        "reportingComponent": component,
        "reportingInstance": "",
    }
    return store.create("events", event)
