"""Whether and where the daemon serves the HTTP API, the requests that change it, and uploads.

The config's `api:` section says where and whether by default; `stixctl api start|stop`
(`ApiServe`, `ApiStop`) change it and are remembered in ``<home>/api_server.json``, so a restart
serves what the last of them asked. Wraps the request dispatch: the socket and the HTTP API
answer these requests (and a remote client's uploads, `stixd.control.uploads`) here and hand
every other one on.

aiohttp is imported only when the API is served: a daemon that never serves it does not pay
for the import.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio
import msgspec
from anyio.abc import TaskStatus

from stixd.app import VERSION, App
from stixd.control.identity import PRINCIPAL, authorize
from stixd.control.request_timing import timed
from stixd.control.uploads import Uploads
from stixproto import PROTOCOL_VERSION
from stixproto import messages as m
from stixproto.errors import InvalidConfig, InvalidRequest

if TYPE_CHECKING:
    from stixd.control.http_api import HttpApi

STATE_FILE = "api_server.json"
Emit = Callable[[Any], Awaitable[None]]
Handler = Callable[[App, Any, Emit], Awaitable[Any]]
API_REQUESTS = (m.ApiServe, m.ApiStop, m.ApiInfo, m.UploadPlan, m.UploadFiles)


class Serving(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What the last `api start|stop` asked, as remembered in the state file."""

    serving: bool
    host: str
    port: int


class ApiServing:
    def __init__(self, app: App, dispatch: Handler) -> None:
        self.app = app
        self.inner = dispatch
        self.path = app.home / STATE_FILE
        self.api: HttpApi | None = None
        self.lock = anyio.Lock()
        self.uploads = Uploads(app)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve what was last asked (or the config's default) until the daemon stops. A port
        that cannot be bound at start is logged; the daemon serves its socket regardless."""
        wanted = self._remembered()
        try:
            if wanted.serving:
                try:
                    await self._serve(wanted.host, wanted.port)
                except InvalidRequest as exc:
                    self.app.log.error("http_api_not_served", error=exc.message)
            task_status.started()
            while True:  # a quiet minute still reports the lines bad clients had suppressed
                await anyio.sleep(60)
                if self.api is not None:
                    self.api.budget.flush()
        finally:
            with anyio.CancelScope(shield=True):
                await self._close()

    @timed  # every request of the socket and of the HTTP API, once
    async def dispatch(self, app: App, req: Any, emit: Emit) -> Any:
        if not isinstance(req, API_REQUESTS):
            return await self.inner(app, req, emit)
        principal = PRINCIPAL.get()
        authorize(principal, req)  # as `inner` does for every other request
        if isinstance(req, m.UploadPlan | m.UploadFiles):
            return await self.uploads.handle(principal.name, req)
        async with self.lock:  # one start or stop at a time
            if isinstance(req, m.ApiServe):
                last = self._remembered()
                host = req.host or last.host
                port = last.port if req.port is None else req.port
                url = await self._serve(host, port)
                bound = int(url.rsplit(":", 1)[1])  # port 0 is remembered as the one it got
                self._remember(Serving(serving=True, host=host, port=bound))
            elif isinstance(req, m.ApiStop):
                await self._close()
                last = self._remembered()
                self._remember(Serving(serving=False, host=last.host, port=last.port))
        return m.ApiServerInfo(
            version=VERSION,
            protocol=PROTOCOL_VERSION,
            user=principal.name,
            role=principal.role.value,
            serving=self.api.url if self.api else None,
        )

    async def _serve(self, host: str, port: int) -> str:
        if self.api is not None and self.api.url is not None:
            if self.api.asked == (host, port):
                return self.api.url  # already there
            await self._close()
        from stixd.control.http_api import HttpApi, tls_context

        cfg = self.app.config.api
        tls = tls_context(cfg.certfile, cfg.keyfile)
        api = HttpApi(self.app, self.dispatch)
        try:
            url = await api.start(host, port, tls)
        except OSError as exc:
            raise InvalidRequest(
                f"cannot serve the HTTP API on {host}:{port}: {exc.strerror or exc}; "
                "choose another address with `stixctl api start --host H --port P`"
            ) from None
        self.api = api
        return url

    async def _close(self) -> None:
        if self.api is not None:
            await self.api.stop()
            self.api = None

    def _remembered(self) -> Serving:
        cfg = self.app.config.api
        default = Serving(serving=cfg.enabled, host=cfg.host, port=cfg.port)
        try:
            return msgspec.json.decode(self.path.read_bytes(), type=Serving)
        except FileNotFoundError:
            return default
        except (OSError, msgspec.DecodeError) as exc:
            self.app.log.warning("api_state_unreadable", path=str(self.path), error=str(exc))
            return default

    def _remember(self, wanted: Serving) -> None:
        partial = self.path.with_suffix(".partial")
        try:
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(msgspec.json.encode(wanted))
            os.replace(partial, self.path)
        except OSError as exc:
            raise InvalidConfig(
                f"cannot remember the HTTP API's address in {self.path}: {exc.strerror}"
            ) from None
