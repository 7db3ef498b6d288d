"""The fake's HTTP surface: the core/v1 paths kubectl and kubernetes-asyncio use, one handler
per verb over the store, and the admin routes under /fake/ through which a test in another
process turns the knobs."""

from __future__ import annotations

import asyncio
import calendar
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from tests.kube_fake import claims, discovery, exec_ws, openapi, protobuf, tables
from tests.kube_fake.cluster import KubeFake
from tests.kube_fake.meta import (
    ApiError,
    Obj,
    field_matcher,
    label_matcher,
    new_metadata,
    timestamp,
)
from tests.kube_fake.nodes import node
from tests.kube_fake.paging import Pager
from tests.kube_fake.rbac import Rbac
from tests.kube_fake.services import Services

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
NAMESPACED = ("pods", "services", "events", claims.RESOURCE)
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
WATCH_LIMIT = 1800.0  # seconds: the longest watch the fake keeps open


@web.middleware
async def statuses(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every refusal leaves as a Kubernetes `Status` object, with its HTTP code."""
    try:
        return await handler(request)
    except ApiError as e:
        return web.json_response(e.status(), status=e.code)
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, ValueError) as e:  # bad input
        error = ApiError(400, "BadRequest", f"the request could not be read: {e}")
        return web.json_response(error.status(), status=400)


async def _body(request: web.Request) -> Obj:
    if request.can_read_body and request.content_type == "application/vnd.kubernetes.protobuf":
        return protobuf.decode(await request.read())
    body = await request.json() if request.can_read_body else {}
    if not isinstance(body, dict):
        raise ApiError(400, "BadRequest", "the request body must be a JSON object")
    return body


def _merge(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (the fake reads a strategic merge patch the same way)."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge(out.get(key), value)
    return out


class Routes:
    def __init__(self, kube: KubeFake, services: Services) -> None:
        self.kube, self.store, self.services = kube, kube.store, services
        self.pager = Pager(kube.store)

    def table(self) -> list[web.RouteDef]:
        v1, ns = "/api/v1", "/api/v1/namespaces/{ns}"
        fixed: dict[str, Obj] = {
            "/version": discovery.VERSION,
            "/api": discovery.API_VERSIONS,
            "/apis": discovery.API_GROUPS,
            v1: discovery.CORE_RESOURCES,
            "/openapi/v3": openapi.ROOT,
            f"/openapi/v3/{openapi.GROUP_PATH}": openapi.core_v1(),
            f"/openapi/v3/{openapi.RBAC_PATH}": openapi.rbac_v1(),
        }
        routes = [web.get(path, self._fixed(doc)) for path, doc in fixed.items()]
        routes += [web.get(p, self.healthy) for p in ("/healthz", "/livez", "/readyz")]
        for res in NAMESPACED:
            routes += [
                web.get(f"{v1}/{res}", self.collection(res)),
                web.get(f"{ns}/{res}", self.collection(res)),
                web.post(f"{ns}/{res}", self.create(res)),
                web.get(f"{ns}/{res}/{{name}}", self.get(res)),
                web.patch(f"{ns}/{res}/{{name}}", self.patch(res)),
                web.delete(f"{ns}/{res}/{{name}}", self.delete(res)),
            ]
        routes.append(web.put(f"{ns}/services/{{name}}", self.replace_service))
        routes += Rbac(self.store, self.pager, _body).routes()  # service accounts, roles
        routes.append(web.post(f"{v1}/namespaces", self.create_namespace))
        for res in ("nodes", "namespaces"):
            routes += [
                web.get(f"{v1}/{res}", self.collection(res)),
                web.get(f"{v1}/{res}/{{name}}", self.get(res)),
            ]
        routes += [
            web.get(f"{ns}/pods/{{name}}/status", self.get("pods")),
            web.get(f"{ns}/pods/{{name}}/exec", self.exec),
            web.post(f"{ns}/pods/{{name}}/exec", self.exec),
            web.get(f"{ns}/pods/{{name}}/log", self.log),
            web.post(f"{ns}/pods/{{name}}/eviction", self.eviction),
            web.post("/fake/evict", self.admin_evict),
            web.post("/fake/delete", self.admin_delete),
            web.post("/fake/faults", self.admin_faults),
            web.post("/fake/nodes", self.admin_add_node),
            web.post("/fake/compact", self.admin_compact),
            web.post("/fake/age", self.admin_age),
            web.post("/fake/load_balancer", self.admin_load_balancer),
        ]
        return routes

    @staticmethod
    def _fixed(doc: Obj) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            return web.json_response(doc)

        return handler

    async def healthy(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text="ok")

    # --- generic verbs --------------------------------------------------------------------

    def collection(self, resource: str) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            namespace = request.match_info.get("ns")
            by_labels = label_matcher(request.query.get("labelSelector", ""))
            by_fields = field_matcher(request.query.get("fieldSelector", ""))

            def accepts(o: Obj) -> bool:
                return bool(by_labels(o["metadata"].get("labels")) and by_fields(o))

            if request.query.get("watch", "").lower() in ("true", "1"):
                return await self._watch(request, resource, namespace, accepts)
            items, meta = self.pager.page(resource, namespace, accepts, dict(request.query))
            if tables.wants_table(request.headers.get("Accept", "")):
                return web.json_response(
                    {**tables.table(resource, items, self.store.version), "metadata": meta}
                )
            return web.json_response(
                {
                    "kind": f"{discovery.KINDS[resource]}List",
                    "apiVersion": "v1",
                    "metadata": meta,
                    "items": items,
                }
            )

        return handler

    async def _watch(
        self,
        request: web.Request,
        resource: str,
        namespace: str | None,
        accepts: Callable[[Obj], bool],
    ) -> web.StreamResponse:
        as_table = tables.wants_table(request.headers.get("Accept", ""))
        version = request.query.get("resourceVersion", "")
        since = int(version) if version not in ("", "0") else None
        timeout = min(float(request.query.get("timeoutSeconds", WATCH_LIMIT)), WATCH_LIMIT)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        try:
            watcher = self.store.watch(resource, namespace, accepts, since)
        except ApiError as e:  # a too-old version: the stream's only event says 410 Expired
            await response.prepare(request)
            await response.write(
                json.dumps({"type": "ERROR", "object": e.status()}).encode() + b"\n"
            )
            return response
        try:
            await response.prepare(request)
            async with asyncio.timeout(timeout):
                while (item := await watcher.queue.get()) is not None:
                    kind, obj = item
                    if as_table:  # each event carries a one-row table, as the server's do
                        obj = tables.table(resource, [obj], self.store.version)
                    line = json.dumps({"type": kind, "object": obj}).encode() + b"\n"
                    await response.write(line)
        except (TimeoutError, ConnectionError):
            pass
        finally:
            self.store.unwatch(watcher)
        return response

    def create(self, resource: str) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            ns, body = request.match_info["ns"], await _body(request)
            self.store.get("namespaces", "", ns)  # 404 for a namespace nobody made
            if resource == "pods":
                obj = self.kube.create_pod(ns, body)
            elif resource == "services":
                obj = await self.services.create(body, ns)
            elif resource == claims.RESOURCE:
                obj = self.store.create(resource, claims.new_claim(body, ns))
                self.kube.schedule()  # a pod waiting for the claim hears of it
            else:
                meta = new_metadata(body, ns, resource)
                obj = self.store.create(resource, {**body, "metadata": meta})
            return web.json_response(obj, status=201)

        return handler

    async def replace_service(self, request: web.Request) -> web.StreamResponse:
        ns, name = request.match_info["ns"], request.match_info["name"]
        body = await _body(request)
        if (body.get("metadata") or {}).get("name", name) != name:
            raise ApiError(400, "BadRequest", "the name of the object does not match the URL")
        return web.json_response(await self.services.replace(body, ns, name))

    async def create_namespace(self, request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        namespace = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "spec": {"finalizers": ["kubernetes"]},
            "metadata": new_metadata(body, None, "namespaces"),
            "status": {"phase": "Active"},
        }
        return web.json_response(self.store.create("namespaces", namespace), status=201)

    def get(self, resource: str) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            ns = request.match_info.get("ns", "")
            obj = self.store.get(resource, ns, request.match_info["name"])
            if tables.wants_table(request.headers.get("Accept", "")):
                return web.json_response(tables.table(resource, [obj], self.store.version))
            return web.json_response(obj)

        return handler

    def patch(self, resource: str) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            if request.content_type == "application/apply-patch+yaml":
                raise ApiError(415, "UnsupportedMediaType", "the fake has no server-side apply")
            ns, name = request.match_info["ns"], request.match_info["name"]
            obj = self.store.get(resource, ns, name)
            patch = await _body(request)
            patched = _merge(obj, {k: v for k, v in patch.items() if k in ("metadata", "spec")})
            patched["metadata"].update({k: obj["metadata"][k] for k in ("name", "uid")})
            obj.clear()
            obj.update(patched)
            return web.json_response(self.store.update(resource, obj))

        return handler

    def delete(self, resource: str) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            ns, name = request.match_info["ns"], request.match_info["name"]
            if resource == "services":
                return web.json_response(await self.services.delete(ns, name))
            if resource != "pods":
                return web.json_response(self.store.delete(resource, ns, name))
            options = await _body(request)
            grace = request.query.get("gracePeriodSeconds", options.get("gracePeriodSeconds"))
            grace_s = None if grace is None else max(0, min(int(grace), 3600))
            return web.json_response(await self.kube.delete_pod(ns, name, grace_s))

        return handler

    # --- pod subresources -----------------------------------------------------------------

    async def exec(self, request: web.Request) -> web.StreamResponse:
        pod = self.store.get("pods", request.match_info["ns"], request.match_info["name"])
        kubelet = self.kube.kubelets.get(pod["metadata"]["uid"])
        sandbox = None if kubelet is None or kubelet.ending else kubelet.sandbox
        command = exec_ws.check_target(request, pod, sandbox)
        assert sandbox is not None
        return await exec_ws.serve_exec(request, command, sandbox)

    async def log(self, request: web.Request) -> web.StreamResponse:
        """The container's output so far (no `follow`)."""
        pod = self.store.get("pods", request.match_info["ns"], request.match_info["name"])
        kubelet = self.kube.kubelets.get(pod["metadata"]["uid"])
        text = kubelet.sandbox.log.read_bytes() if kubelet else b""
        return web.Response(body=text, content_type="text/plain")

    async def eviction(self, request: web.Request) -> web.StreamResponse:
        """The Eviction API: a graceful delete (what `kubectl drain` does to a pod)."""
        await self.kube.delete_pod(request.match_info["ns"], request.match_info["name"])
        return web.json_response(
            {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "code": 201,
            },
            status=201,
        )

    # --- admin (the knobs, for tests in another process) ----------------------------------

    async def admin_evict(self, request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        pod = await self.kube.evict(body.get("namespace", "default"), body["name"])
        return web.json_response(pod)

    async def admin_delete(self, request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        ns, grace = body.get("namespace", "default"), body.get("gracePeriodSeconds")
        return web.json_response(await self.kube.delete_pod(ns, body["name"], grace))

    async def admin_faults(self, request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        self.kube.faults.set(body.get("delay"), body.get("fail_count"), body.get("fail_code"))
        return web.json_response({"failed": self.kube.faults.failed})

    async def admin_add_node(self, request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        made = node(
            body["name"],
            str(body.get("cpu", "4")),
            str(body.get("memory", "16Gi")),
            body.get("labels"),
            int(body.get("gpus", 0)),
            body.get("gpu_resource", "nvidia.com/gpu"),
            body.get("taints"),
            int(body.get("pods", 110)),
        )
        return web.json_response(self.kube.add_node(made), status=201)

    async def admin_load_balancer(self, request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        given = await self.services.hold(bool(body.get("hold", False)))
        return web.json_response({"holding": self.services.holding, "given": given})

    async def admin_age(self, request: web.Request) -> web.StreamResponse:
        """Time passing for one object: its creationTimestamp ``seconds`` earlier (what a
        client cannot set, as on a real server)."""
        body = await _body(request)
        obj = self.store.get(body["resource"], body.get("namespace", "default"), body["name"])
        made = calendar.timegm(time.strptime(obj["metadata"]["creationTimestamp"], TIME_FORMAT))
        obj["metadata"]["creationTimestamp"] = timestamp(made - float(body["seconds"]))
        return web.json_response(self.store.update(body["resource"], obj))

    async def admin_compact(self, request: web.Request) -> web.StreamResponse:
        self.store.compact()
        return web.json_response({"compacted": self.store.version})
