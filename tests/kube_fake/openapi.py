"""Just enough OpenAPI v3 for kubectl's `apply`/`create`: kubectl validates a manifest on the
server (`fieldValidation=Strict`) when the group's document says its PATCH operations take that
query parameter, and otherwise wants the full schemas, which the fake does not have."""

from __future__ import annotations

from tests.kube_fake.meta import Obj

GROUP_PATH = "api/v1"
RBAC_PATH = "apis/rbac.authorization.k8s.io/v1"
ROOT = {
    "paths": {
        p: {"serverRelativeURL": f"/openapi/v3/{p}?hash=kube-fake"} for p in (GROUP_PATH, RBAC_PATH)
    }
}

_VALIDATION = {
    "name": "fieldValidation",
    "in": "query",
    "schema": {"type": "string"},
    "description": "the fake accepts and ignores unknown fields",
}


def _patch_op(kind: str, group: str = "") -> Obj:
    return {
        "operationId": f"patch{'RbacAuthorizationV1' if group else 'CoreV1'}Namespaced{kind}",
        "parameters": [_VALIDATION],
        "responses": {"200": {"description": "OK"}},
        "x-kubernetes-action": "patch",
        "x-kubernetes-group-version-kind": {"group": group, "version": "v1", "kind": kind},
    }


def _document(prefix: str, kinds: dict[str, str], group: str = "") -> Obj:
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes (kube-fake)", "version": "v1.32.0"},
        "paths": {
            f"{prefix}/namespaces/{{namespace}}/{res}/{{name}}": {"patch": _patch_op(kind, group)}
            for res, kind in kinds.items()
        },
        "components": {"schemas": {}},
    }


def core_v1() -> Obj:
    kinds = {"pods": "Pod", "services": "Service", "events": "Event"}
    return _document("/api/v1", {**kinds, "serviceaccounts": "ServiceAccount"})


def rbac_v1() -> Obj:
    group = "rbac.authorization.k8s.io"
    return _document(f"/apis/{group}/v1", {"roles": "Role", "rolebindings": "RoleBinding"}, group)
