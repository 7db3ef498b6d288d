"""The dashboard's routes on the HTTP API's server: pages under `/dashboard/`, their data as JSON
and one event stream per page under `/api/v1/dashboard/`.

Every route but the login form and the static files needs a token: the `stix_dashboard` cookie
the login form sets (HttpOnly, SameSite=Strict, Secure under TLS) or a bearer header. Data comes
from the requests the CLI sends, as the token's user (`Gate.principal`), so the one access rule
of the daemon decides here too: a viewer sees and cannot act, only an admin lists users.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from stixd.app import App
from stixd.dashboard import html, pages
from stixd.dashboard.assets import Assets
from stixd.dashboard.changes import INFRA, Changes, Listener
from stixd.dashboard.infra_cache import InfraCache
from stixproto import messages as m
from stixproto.errors import StixError, Unauthenticated

PAGE_PREFIX = "/dashboard"
API_PREFIX = "/api/v1/dashboard/"
COOKIE = "stix_dashboard"
MAX_STREAMS = 64
"""Event streams open at once on one server; one more is told to come back later."""
KEEP_ALIVE = 15.0
COALESCE = 0.05
"""After a write wakes a stream, wait this long for the writes that come with it: one event."""
PAGE_TIMEOUT = 10.0
STATUS_OF_CODE = {"unauthenticated": 401, "permission_denied": 403, "not_found": 404}

Dispatch = Callable[[App, Any, Callable[[Any], Awaitable[None]]], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Gate:
    """What the control layer lends the dashboard: who a token is, and the request context
    variable `dispatch` reads the requester from (so its access rule applies unchanged)."""

    authenticate: Callable[[App, str], Awaitable[Any]]
    principal: contextvars.ContextVar[Any]


class Dashboard:
    def __init__(self, app: App, dispatch: Dispatch, gate: Gate) -> None:
        self.app = app
        self.dispatch = dispatch
        self.gate = gate
        self.assets = Assets()
        self.changes = Changes(app.store, MAX_STREAMS)
        self.infra = InfraCache(self._ask_as_daemon, lambda: self.changes.tell(INFRA))
        self.builders: dict[str, Callable[[pages.Ask, dict[str, str]], Awaitable[pages.Page]]] = {
            "clusters": pages.clusters,
            "cluster": lambda ask, q: pages.cluster(ask, q, app),
            "jobs": pages.jobs,
            "managed-jobs": pages.managed_jobs,
            "services": pages.services,
            "infra": self._infra_page,
            "users": lambda ask, q: pages.users(ask, q, app),
            "logs": pages.logs,
        }

    @staticmethod
    def serves(path: str) -> bool:
        return path == PAGE_PREFIX or path.startswith((PAGE_PREFIX + "/", API_PREFIX))

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        path = request.path
        asset = self.assets.get(path)
        if asset is not None and request.method in ("GET", "HEAD"):
            return self._asset(request, asset)
        if path in (PAGE_PREFIX, PAGE_PREFIX + "/"):
            return self._see_other("/dashboard/clusters")
        if path == "/dashboard/login":
            return await self._login(request)
        if path == "/dashboard/logout" and request.method == "POST":
            return self._logout(request)
        if request.method != "GET":
            return web.Response(status=405, text="the dashboard's pages take GET\n")
        is_api = path.startswith(API_PREFIX)
        name = path[len(API_PREFIX) :] if is_api else path[len(PAGE_PREFIX) + 1 :]
        try:
            principal = await self._principal(request)
        except Unauthenticated as exc:
            if is_api:
                return self._json({"error": exc.message}, 401)
            return self._see_other("/dashboard/login")
        self.infra.freshen()
        if is_api and name == "events":
            return await self._events(request, principal)
        builder = self.builders.get(name)
        if builder is None:
            return self._failure(is_api, 404, f"no dashboard page {name[:60]!r}")
        query = {k: v[:1024] for k, v in request.query.items()}
        try:
            async with asyncio.timeout(PAGE_TIMEOUT):
                page = await builder(lambda req: self._ask(principal, req), query)
        except StixError as exc:
            return self._failure(is_api, STATUS_OF_CODE.get(exc.code, 400), exc.message)
        except TimeoutError:
            return self._failure(is_api, 503, f"stixd took over {PAGE_TIMEOUT:g}s for this page")
        if is_api:
            return self._json(page)
        api = API_PREFIX + name + (f"?{request.query_string}" if request.query_string else "")
        body = html.page_html(page, api, principal.name, principal.role.value, self.assets.urls)
        return self._html(body)

    # -- who asks ------------------------------------------------------------------------------

    async def _principal(self, request: web.BaseRequest) -> Any:
        header = request.headers.get("Authorization", "")
        scheme, _, bearer = header.partition(" ")
        token = bearer.strip() if scheme.lower() == "bearer" else request.cookies.get(COOKIE, "")
        if not token:
            raise Unauthenticated("log in with an API token")
        return await self.gate.authenticate(self.app, token)

    async def _ask(self, principal: Any, req: Any) -> tuple[Any, list[Any]]:
        events: list[Any] = []

        async def emit(event: Any) -> None:
            if len(events) < 1000:
                events.append(event)

        token = self.gate.principal.set(principal)
        try:
            reply = await self.dispatch(self.app, req, emit)
        finally:
            self.gate.principal.reset(token)
        if isinstance(reply, m.ErrorReply):
            raise StixError(reply.message)
        return reply, events

    async def _ask_as_daemon(self, req: Any) -> Any:
        async def ignore(event: Any) -> None:
            pass

        ctx = contextvars.Context()  # the daemon's own (admin) identity, not a page's user
        return await ctx.run(asyncio.ensure_future, self.dispatch(self.app, req, ignore))

    async def _infra_page(self, ask: pages.Ask, query: dict[str, str]) -> pages.Page:
        return pages.infra(self.infra.check, self.infra.gpus, self.infra.error)

    # -- login ---------------------------------------------------------------------------------

    def _same_origin(self, request: web.BaseRequest) -> bool:
        origin = request.headers.get("Origin")
        if origin is None or origin == "null":
            return origin is None
        return urllib.parse.urlsplit(origin).netloc == request.host

    async def _login(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.method == "GET":
            return self._html(html.login_html(self.assets.urls))
        if request.method != "POST":
            return web.Response(status=405, text="log in with GET or POST\n")
        if not self._same_origin(request):
            return self._html(
                html.error_html(self.assets.urls, 403, "cross-site login refused"), 403
            )
        form = await request.post()
        token = str(form.get("token", "")).strip()[:200]
        try:
            await self.gate.authenticate(self.app, token)
        except Unauthenticated as exc:
            return self._html(html.login_html(self.assets.urls, exc.message), 401)
        resp = self._see_other("/dashboard/clusters")
        resp.set_cookie(
            COOKIE,
            token,
            httponly=True,
            samesite="Strict",
            secure=request.secure,
            path="/",
            max_age=7 * 86400,
        )
        return resp

    def _logout(self, request: web.BaseRequest) -> web.StreamResponse:
        if not self._same_origin(request):
            return self._html(
                html.error_html(self.assets.urls, 403, "cross-site logout refused"), 403
            )
        resp = self._see_other("/dashboard/login")
        resp.del_cookie(COOKIE, path="/")
        return resp

    # -- the event stream ----------------------------------------------------------------------

    async def _events(self, request: web.BaseRequest, principal: Any) -> web.StreamResponse:
        listener = self.changes.join()
        if listener is None:
            return self._json({"error": f"{MAX_STREAMS} dashboards are open; retry later"}, 503)
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
            }
        )
        lock = asyncio.Lock()

        async def send(text: str) -> None:
            async with lock, asyncio.timeout(self.app.config.daemon.client_stall_seconds):
                await resp.write(text.encode())

        logs_task: asyncio.Task[None] | None = None
        try:
            await resp.prepare(request)
            await send("retry: 1000\n\n")
            cluster, job = request.query.get("cluster"), request.query.get("job", "")
            if cluster and job.isdigit():
                req = m.Logs(cluster=cluster[:1024], job_id=int(job), tail=pages.LOG_TAIL)
                logs_task = asyncio.create_task(self._logs(principal, req, send))
            await self._changes(listener, send)
        except (ConnectionError, aiohttp.ClientError, TimeoutError, RuntimeError):
            pass  # the page went away (or stopped reading): its stream ends here
        finally:
            self.changes.leave(listener)
            if logs_task is not None:
                logs_task.cancel()
                await asyncio.gather(logs_task, return_exceptions=True)
        return resp

    async def _changes(self, listener: Listener, send: Callable[[str], Awaitable[None]]) -> None:
        while True:
            kinds = await listener.take(KEEP_ALIVE)
            if not kinds:
                await send(": keep-alive\n\n")
                continue
            await asyncio.sleep(COALESCE)
            kinds |= await listener.take(0) if listener.pending else set()
            await send(f"event: change\ndata: {json.dumps(sorted(kinds))}\n\n")

    async def _logs(
        self, principal: Any, req: m.Logs, send: Callable[[str], Awaitable[None]]
    ) -> None:
        async def emit(event: Any) -> None:
            if isinstance(event, m.LogChunk):
                await send(f"event: log\ndata: {json.dumps(event.data)}\n\n")

        token = self.gate.principal.set(principal)
        try:
            end = await self.dispatch(self.app, req, emit)
            status = getattr(end, "status", None) or getattr(end, "message", "")
            await send(f"event: logend\ndata: {json.dumps(status)}\n\n")
        except StixError as exc:
            await send(f"event: logend\ndata: {json.dumps(exc.message)}\n\n")
        finally:
            self.gate.principal.reset(token)

    # -- responses -----------------------------------------------------------------------------

    def _asset(self, request: web.BaseRequest, asset: Any) -> web.StreamResponse:
        headers = {
            "Cache-Control": "public, max-age=31536000, immutable",
            "ETag": asset.etag,
            "Content-Type": asset.content_type,
            "X-Content-Type-Options": "nosniff",
            "Vary": "Accept-Encoding",
        }
        if request.headers.get("If-None-Match") == asset.etag:
            return web.Response(status=304, headers=headers)
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            return web.Response(body=asset.gzipped, headers={**headers, "Content-Encoding": "gzip"})
        return web.Response(body=asset.body, headers=headers)

    def _html(self, body: str, status: int = 200) -> web.Response:
        resp = web.Response(
            text=body,
            status=status,
            content_type="text/html",
            headers={**html.SAFE_HEADERS, "Cache-Control": "no-store"},
        )
        resp.enable_compression()
        return resp

    def _json(self, data: Any, status: int = 200) -> web.Response:
        resp = web.Response(
            body=json.dumps(data, separators=(",", ":")).encode(),
            status=status,
            content_type="application/json",
            headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
        )
        resp.enable_compression()
        return resp

    def _failure(self, is_api: bool, status: int, message: str) -> web.Response:
        if is_api:
            return self._json({"error": message}, status)
        return self._html(html.error_html(self.assets.urls, status, message), status)

    @staticmethod
    def _see_other(location: str) -> web.Response:
        return web.Response(status=303, headers={"Location": location})

    async def close(self) -> None:
        await self.infra.close()
