"""Server-side printing: what `kubectl get` shows a person (it asks for `as=Table`). The
columns are the real server's for pods, nodes, services, events and namespaces; `-o wide`
shows the priority-1 columns too."""

from __future__ import annotations

import calendar
import time
from collections.abc import Callable
from typing import Any

from tests.kube_fake.meta import Obj

Column = tuple[str, int, Callable[[Obj], Any]]  # name, priority (1: -o wide only), cell


def wants_table(accept: str) -> bool:
    return "as=Table" in accept


def age(stamp: str | None) -> str:
    if not stamp:
        return "<unknown>"
    seconds = int(time.time() - calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def _pod_status(pod: Obj) -> str:
    if pod["metadata"].get("deletionTimestamp"):
        return "Terminating"
    status = pod["status"]
    if status.get("reason"):
        return str(status["reason"])
    for c in status.get("containerStatuses") or []:
        state = c.get("state", {})
        if "waiting" in state:
            return str(state["waiting"].get("reason", "Waiting"))
        if "terminated" in state:
            return str(state["terminated"].get("reason", "Terminated"))
    return str(status.get("phase", "Unknown"))


def _ready(pod: Obj) -> str:
    statuses = pod["status"].get("containerStatuses") or []
    ready = sum(1 for c in statuses if c.get("ready"))
    return f"{ready}/{len(pod['spec']['containers'])}"


def _ports(service: Obj) -> str:
    return ",".join(
        f"{p['port']}{':' + str(p['nodePort']) if 'nodePort' in p else ''}/{p['protocol']}"
        for p in service["spec"].get("ports", [])
    )


def _external(service: Obj) -> str:
    ingress = service["status"].get("loadBalancer", {}).get("ingress") or []
    if ingress:
        return ",".join(i.get("ip", i.get("hostname", "")) for i in ingress)
    return "<pending>" if service["spec"]["type"] == "LoadBalancer" else "<none>"


def _name(o: Obj) -> str:
    return str(o["metadata"]["name"])


def _created(o: Obj) -> str:
    return age(o["metadata"].get("creationTimestamp"))


COLUMNS: dict[str, list[Column]] = {
    "pods": [
        ("Ready", 0, _ready),
        ("Status", 0, _pod_status),
        (
            "Restarts",
            0,
            lambda p: sum(
                c.get("restartCount", 0) for c in p["status"].get("containerStatuses") or []
            ),
        ),
        ("Age", 0, _created),
        ("IP", 1, lambda p: p["status"].get("podIP", "<none>")),
        ("Node", 1, lambda p: p["spec"].get("nodeName", "<none>")),
    ],
    "nodes": [
        ("Status", 0, lambda n: "Ready"),
        ("Roles", 0, lambda n: "<none>"),
        ("Age", 0, _created),
        ("Version", 0, lambda n: n["status"]["nodeInfo"]["kubeletVersion"]),
    ],
    "services": [
        ("Type", 0, lambda s: s["spec"]["type"]),
        ("Cluster-IP", 0, lambda s: s["spec"].get("clusterIP", "<none>")),
        ("External-IP", 0, _external),
        ("Port(s)", 0, _ports),
        ("Age", 0, _created),
    ],
    "events": [
        ("Last Seen", 0, lambda e: age(e.get("lastTimestamp"))),
        ("Type", 0, lambda e: e.get("type", "")),
        ("Reason", 0, lambda e: e.get("reason", "")),
        (
            "Object",
            0,
            lambda e: f"{e['involvedObject']['kind'].lower()}/{e['involvedObject']['name']}",
        ),
        ("Message", 0, lambda e: e.get("message", "")),
    ],
    "namespaces": [("Status", 0, lambda n: "Active"), ("Age", 0, _created)],
}


def table(resource: str, items: list[Obj], version: int) -> Obj:
    named: list[Column] = [] if resource == "events" else [("Name", 0, _name)]
    columns = named + COLUMNS.get(resource, [("Age", 0, _created)])
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": str(version)},
        "columnDefinitions": [
            {
                "name": name,
                "type": "string",
                "format": "name" if name == "Name" else "",
                "description": "",
                "priority": priority,
            }
            for name, priority, _ in columns
        ],
        "rows": [
            {
                "cells": [cell(o) for _, _, cell in columns],
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": o["metadata"],
                },
            }
            for o in items
        ],
    }
