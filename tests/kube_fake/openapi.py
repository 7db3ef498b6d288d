"""Just enough OpenAPI v3 for kubectl's `apply`/`create`: kubectl validates a manifest on the
server (`fieldValidation=Strict`) when the group's document says its PATCH operations take that
query parameter, and otherwise wants the full schemas, which the fake does not have."""

from __future__ import annotations

from tests.kube_fake.meta import Obj

GROUP_PATH = "api/v1"
ROOT = {"paths": {GROUP_PATH: {"serverRelativeURL": f"/openapi/v3/{GROUP_PATH}?hash=kube-fake"}}}

_VALIDATION = {
    "name": "fieldValidation",
    "in": "query",
    "schema": {"type": "string"},
    "description": "the fake accepts and ignores unknown fields",
}


def _patch_op(kind: str) -> Obj:
    return {
        "operationId": f"patchCoreV1Namespaced{kind}",
        "parameters": [_VALIDATION],
        "responses": {"200": {"description": "OK"}},
        "x-kubernetes-action": "patch",
        "x-kubernetes-group-version-kind": {"group": "", "version": "v1", "kind": kind},
    }


def core_v1() -> Obj:
    kinds = {"pods": "Pod", "services": "Service", "events": "Event"}
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes (kube-fake)", "version": "v1.32.0"},
        "paths": {
            f"/api/v1/namespaces/{{namespace}}/{res}/{{name}}": {"patch": _patch_op(kind)}
            for res, kind in kinds.items()
        },
        "components": {"schemas": {}},
    }
