"""Discovery as kubectl reads it: /version, /api, /apis and the core group's resource list.
The fake serves the legacy (unaggregated) documents; kubectl falls back to them."""

from __future__ import annotations

from tests.kube_fake.meta import Obj
from tests.kube_fake.rbac import GROUP_DOC, SERVICE_ACCOUNTS

VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0-kube-fake",
    "gitCommit": "",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.23",
    "compiler": "gc",
    "platform": "linux/amd64",
}

API_VERSIONS = {
    "kind": "APIVersions",
    "versions": ["v1"],
    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
}

API_GROUPS = {"kind": "APIGroupList", "apiVersion": "v1", "groups": [GROUP_DOC]}

_RW = ["create", "delete", "get", "list", "patch", "watch"]


def _resource(
    name: str, kind: str, verbs: list[str], short: list[str] | None = None, namespaced: bool = True
) -> Obj:
    singular = "" if "/" in name else kind.lower()
    out = {
        "name": name,
        "singularName": singular,
        "namespaced": namespaced,
        "kind": kind,
        "verbs": verbs,
    }
    if short:
        out["shortNames"] = short
    return out


CORE_RESOURCES = {
    "kind": "APIResourceList",
    "groupVersion": "v1",
    "resources": [
        _resource("pods", "Pod", _RW, ["po"]),
        _resource("pods/exec", "PodExecOptions", ["create", "get"]),
        _resource("pods/log", "Pod", ["get"]),
        _resource("pods/eviction", "Eviction", ["create"]),
        _resource("pods/status", "Pod", ["get"]),
        _resource("services", "Service", _RW, ["svc"]),
        _resource("events", "Event", _RW, ["ev"]),
        _resource("persistentvolumeclaims", "PersistentVolumeClaim", _RW, ["pvc"]),
        SERVICE_ACCOUNTS.discovery(),
        _resource("nodes", "Node", ["get", "list", "watch"], ["no"], namespaced=False),
        _resource(
            "namespaces", "Namespace", ["create", "get", "list", "watch"], ["ns"], namespaced=False
        ),
    ],
}

KINDS = {
    "pods": "Pod",
    "services": "Service",
    "events": "Event",
    "persistentvolumeclaims": "PersistentVolumeClaim",
    "nodes": "Node",
    "namespaces": "Namespace",
}
