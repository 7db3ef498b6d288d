"""Service accounts (core/v1) and the RBAC group's Roles and RoleBindings
(rbac.authorization.k8s.io/v1), namespaced, as the API server stores them: create (201, or 409
AlreadyExists), get (404 NotFound), list with label selectors, delete. A Role must carry
``rules`` of verbs, resources and apiGroups; a RoleBinding a ``roleRef`` of kind Role or
ClusterRole, which cannot change once made. The fake grants everyone everything: it never
checks a request against these objects, it keeps them so the clients that make them can be
tested (and ``kubectl get sa,role,rolebinding`` shows them)."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable

from aiohttp import web

from tests.kube_fake import tables
from tests.kube_fake.meta import ApiError, Obj, label_matcher, new_metadata
from tests.kube_fake.paging import Pager
from tests.kube_fake.store import Store

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
BodyReader = Callable[[web.Request], Awaitable[Obj]]
GROUP = "rbac.authorization.k8s.io"
GROUP_VERSION = f"{GROUP}/v1"
_RW = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


@dataclasses.dataclass(frozen=True)
class Kind:
    plural: str
    kind: str
    group_version: str
    short: tuple[str, ...] = ()

    @property
    def stored_as(self) -> str:
        """The store's key, which is also how the server names the resource in messages
        (``roles.rbac.authorization.k8s.io "x" already exists``)."""
        group = self.group_version.rpartition("/")[0]
        return f"{self.plural}.{group}" if group else self.plural

    @property
    def prefix(self) -> str:
        return "/api/v1" if self.group_version == "v1" else f"/apis/{self.group_version}"

    def discovery(self) -> Obj:
        out: Obj = {
            "name": self.plural,
            "singularName": self.kind.lower(),
            "namespaced": True,
            "kind": self.kind,
            "verbs": _RW,
        }
        if self.short:
            out["shortNames"] = list(self.short)
        return out


SERVICE_ACCOUNTS = Kind("serviceaccounts", "ServiceAccount", "v1", ("sa",))
ROLES = Kind("roles", "Role", GROUP_VERSION)
ROLE_BINDINGS = Kind("rolebindings", "RoleBinding", GROUP_VERSION)

GROUP_DOC: Obj = {
    "name": GROUP,
    "versions": [{"groupVersion": GROUP_VERSION, "version": "v1"}],
    "preferredVersion": {"groupVersion": GROUP_VERSION, "version": "v1"},
}
"""The group as ``/apis`` lists it."""
RESOURCES: Obj = {
    "kind": "APIResourceList",
    "apiVersion": "v1",
    "groupVersion": GROUP_VERSION,
    "resources": [ROLES.discovery(), ROLE_BINDINGS.discovery()],
}


def _invalid(kind: Kind, name: str, message: str) -> ApiError:
    return ApiError(422, "Invalid", f'{kind.kind} "{name}" is invalid: {message}')


def _check_role(body: Obj, name: str) -> None:
    for i, rule in enumerate(body.get("rules") or []):
        if not isinstance(rule, dict) or not rule.get("verbs"):
            raise _invalid(ROLES, name, f"rules[{i}].verbs: Required value: verbs must contain "
                           "at least one value")  # fmt: skip
        if rule.get("resources") and rule.get("apiGroups") is None:
            raise _invalid(ROLES, name, f"rules[{i}].apiGroups: Required value: resource rules "
                           "must supply at least one api group")  # fmt: skip


def _check_binding(body: Obj, name: str, before: Obj | None) -> None:
    ref = body.get("roleRef")
    if not isinstance(ref, dict) or ref.get("kind") not in ("Role", "ClusterRole"):
        raise _invalid(ROLE_BINDINGS, name, "roleRef.kind: Unsupported value: must be Role "
                       "or ClusterRole")  # fmt: skip
    if not ref.get("name"):
        raise _invalid(ROLE_BINDINGS, name, "roleRef.name: Required value")
    if before is not None and before.get("roleRef") != ref:
        raise _invalid(ROLE_BINDINGS, name, "roleRef: Invalid value: cannot change roleRef")
    for i, subject in enumerate(body.get("subjects") or []):
        if not isinstance(subject, dict) or not subject.get("name") or not subject.get("kind"):
            raise _invalid(ROLE_BINDINGS, name, f"subjects[{i}]: Required value: kind and name")


class Rbac:
    def __init__(self, store: Store, pager: Pager, read_body: BodyReader) -> None:
        self.store, self.pager, self.read_body = store, pager, read_body

    def routes(self) -> list[web.RouteDef]:
        out = [
            web.get(f"/apis/{GROUP}", self.group),
            web.get(f"/apis/{GROUP_VERSION}", self.resources),
        ]
        for kind in (SERVICE_ACCOUNTS, ROLES, ROLE_BINDINGS):
            one = f"{kind.prefix}/namespaces/{{ns}}/{kind.plural}/{{name}}"
            out += [
                web.get(f"{kind.prefix}/{kind.plural}", self.collection(kind)),
                web.get(f"{kind.prefix}/namespaces/{{ns}}/{kind.plural}", self.collection(kind)),
                web.post(f"{kind.prefix}/namespaces/{{ns}}/{kind.plural}", self.create(kind)),
                web.get(one, self.get(kind)),
                web.put(one, self.replace(kind)),
                web.delete(one, self.delete(kind)),
            ]
        return out

    async def group(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"kind": "APIGroup", "apiVersion": "v1", **GROUP_DOC})

    async def resources(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(RESOURCES)

    def _checked(self, kind: Kind, body: Obj, name: str, before: Obj | None) -> None:
        if kind is ROLES:
            _check_role(body, name)
        elif kind is ROLE_BINDINGS:
            _check_binding(body, name, before)

    def create(self, kind: Kind) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            ns, body = request.match_info["ns"], await self.read_body(request)
            self.store.get("namespaces", "", ns)  # 404 for a namespace nobody made
            meta = new_metadata(body, ns, kind.stored_as)
            self._checked(kind, body, meta["name"], None)
            obj = {**body, "apiVersion": kind.group_version, "kind": kind.kind, "metadata": meta}
            return web.json_response(self.store.create(kind.stored_as, obj), status=201)

        return handler

    def get(self, kind: Kind) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            ns, name = request.match_info["ns"], request.match_info["name"]
            obj = self.store.get(kind.stored_as, ns, name)
            if tables.wants_table(request.headers.get("Accept", "")):
                return web.json_response(tables.table(kind.plural, [obj], self.store.version))
            return web.json_response(obj)

        return handler

    def replace(self, kind: Kind) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            ns, name = request.match_info["ns"], request.match_info["name"]
            body, before = await self.read_body(request), self.store.get(kind.stored_as, ns, name)
            meta = dict(body.get("metadata") or {})
            if meta.get("name", name) != name:
                raise ApiError(400, "BadRequest", "the name of the object does not match the URL")
            asked_version = meta.get("resourceVersion")
            if asked_version and asked_version != before["metadata"]["resourceVersion"]:
                raise ApiError(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {kind.stored_as} "{name}": the object '
                    "has been modified; please apply your changes to the latest version and "
                    "try again",
                )
            self._checked(kind, body, name, before)
            kept = {k: before["metadata"][k] for k in ("name", "namespace", "uid",
                                                       "creationTimestamp")}  # fmt: skip
            meta.update(kept)
            meta.setdefault("labels", {})
            obj = {**body, "apiVersion": kind.group_version, "kind": kind.kind, "metadata": meta}
            return web.json_response(self.store.update(kind.stored_as, obj))

        return handler

    def delete(self, kind: Kind) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            ns, name = request.match_info["ns"], request.match_info["name"]
            gone = self.store.delete(kind.stored_as, ns, name)
            return web.json_response(gone)

        return handler

    def collection(self, kind: Kind) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            by_labels = label_matcher(request.query.get("labelSelector", ""))
            items, meta = self.pager.page(
                kind.stored_as,
                request.match_info.get("ns"),
                lambda o: bool(by_labels(o["metadata"].get("labels"))),
                dict(request.query),
            )
            if tables.wants_table(request.headers.get("Accept", "")):
                return web.json_response(
                    {**tables.table(kind.plural, items, self.store.version), "metadata": meta}
                )
            return web.json_response(
                {
                    "kind": f"{kind.kind}List",
                    "apiVersion": kind.group_version,
                    "metadata": meta,
                    "items": items,
                }
            )

        return handler
