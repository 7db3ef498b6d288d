"""The HTTP(S) API: the socket's requests for remote clients, one request per connection.

`POST /api/v1/request` carries one request body exactly as `stixproto.edge.request_body`
encodes it, the protocol version in `Stix-Protocol` and a bearer token; the answer streams the
socket's frames (events, then the final reply or an `ErrorReply`) as a chunked body, so logs
and launch progress arrive live. A request refused before it runs (no or bad token, a role
that may not, a bad or oversize body, another protocol) is one `ErrorReply` frame with the
HTTP status that says which. `GET /api/v1/health` answers without a token, nothing secret.

Each connection is handled in its own task (aiohttp's), so a read never waits behind a launch;
a client that disconnects cancels its request, as on the socket. Bounded like the socket:
`daemon.max_connections`, `client_idle_seconds` for the headers and the body,
`client_stall_seconds` for a client that reads none of its replies, `request_timeout_seconds`.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import anyio
from aiohttp import web

from stixd.app import VERSION, App
from stixd.control.identity import PRINCIPAL, Principal, authenticate, authorize
from stixd.control.loglimit import LogBudget
from stixd.control.metrics_http import METRICS_PATH, serve_metrics
from stixd.control.reached import REACHED
from stixd.control.remote_paths import refuse_local_paths
from stixd.control.replica_auth import (
    ON_BEHALF_HEADER,
    REPLICA_HEADER,
    check_forwarded,
    forwarded_principal,
)
from stixd.control.server import ClientGone, _cause
from stixd.control.uploads import user_root
from stixd.dashboard import Dashboard, Gate
from stixd.runtime.actor import error_reply
from stixproto import PROTOCOL_VERSION
from stixproto import messages as m
from stixproto.edge import decode_request
from stixproto.errors import (
    PermissionDenied,
    ProtocolError,
    StixError,
    Unauthenticated,
    VersionMismatch,
)
from stixproto.framing import MAX_FRAME, encode

REQUEST_PATH = "/api/v1/request"
HEALTH_PATH = "/api/v1/health"
PROTOCOL_HEADER = "Stix-Protocol"
FRAMES = "application/x-stix-frames"
"""The body of a request (one msgpack request) and of its answer (length-prefixed frames)."""

Handler = Callable[[App, Any, Callable[[Any], Awaitable[None]]], Awaitable[Any]]

STATUS_OF_CODE = {
    "unauthenticated": 401,
    "permission_denied": 403,
    "protocol": 400,
    "version_mismatch": 400,
    "invalid_request": 400,
    "invalid_task": 400,
    "invalid_config": 400,
}
LOCAL_ONLY = (m.ApiServe, m.ApiStop)


class TooLarge(ProtocolError):
    """A body past the frame limit: HTTP 413."""


class HttpApi:
    """The aiohttp server of one address; `start` binds it, `stop` closes it and its clients."""

    def __init__(self, app: App, dispatch: Handler) -> None:
        self.app = app
        self.dispatch = dispatch
        self.log = app.log.bind(part="http_api")
        self.budget = LogBudget(self.log)
        limits = app.config.daemon
        self.max_connections = limits.max_connections
        self.idle = limits.client_idle_seconds
        self.stall = limits.client_stall_seconds
        self.in_flight = 0
        self._waiting: set[Any] = set()  # connections whose request has not begun
        self.dashboard = Dashboard(app, dispatch, Gate(authenticate, PRINCIPAL))  # /dashboard
        self._web = web.Server(
            self._handle,
            handler_cancellation=True,  # a client that disconnects cancels its request
            keepalive_timeout=self.idle,
            access_log=None,
            max_line_size=8190,
            max_field_size=8190,
            max_headers=64,
        )
        self._listener: asyncio.Server | None = None
        self.url: str | None = None
        self.asked: tuple[str, int] | None = None

    async def start(self, host: str, port: int, tls: ssl.SSLContext | None) -> str:
        """Listen on `host:port` (0: a free port); the URL it serves. `OSError` if it cannot."""
        loop = asyncio.get_running_loop()
        self._listener = await loop.create_server(
            self._protocol, host, port, ssl=tls, reuse_address=True, backlog=128
        )
        bound = self._listener.sockets[0].getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        self.url = f"{'https' if tls else 'http'}://{shown}:{bound}"
        self.asked = (host, port)
        self.log.info("http_api_serving", url=self.url)
        return self.url

    async def stop(self) -> None:
        if self._listener is None:
            return
        self._listener.close()
        self._web.pre_shutdown()
        with anyio.CancelScope(shield=True), anyio.move_on_after(2):
            await self._web.shutdown(1.0)
            await self._listener.wait_closed()
        self.log.info("http_api_stopped", url=self.url)
        self._listener = None
        self.url = None

    # -- connections ---------------------------------------------------------------------------

    def _protocol(self) -> asyncio.BaseProtocol:
        if len(self._web.connections) >= self.max_connections:
            self.budget.warning("http_connection_refused", limit=self.max_connections)
            return _Busy(len(self._web.connections))
        handler = self._web()
        self._waiting.add(handler)
        asyncio.get_running_loop().call_later(self.idle, self._expire, handler)
        return handler

    def _expire(self, handler: Any) -> None:
        """Close a connection whose request has not begun within `client_idle_seconds`."""
        if handler in self._waiting:
            self._waiting.discard(handler)
            if handler.transport is not None:
                self.budget.warning("http_client_idle", seconds=self.idle)
                handler.transport.close()

    # -- requests ------------------------------------------------------------------------------

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        self._waiting.discard(request.protocol)
        if request.path == HEALTH_PATH and request.method == "GET":
            return web.json_response(
                {
                    "status": "healthy",
                    "version": VERSION,
                    "protocol": PROTOCOL_VERSION,
                    "requests": self.in_flight,
                }
            )
        if self.dashboard.serves(request.path):
            return await self.dashboard.handle(request)
        if request.path == METRICS_PATH and request.method == "GET":
            return await serve_metrics(
                self.app, request, _bearer(request.headers.get("Authorization"))
            )
        if request.path != REQUEST_PATH:
            return web.Response(status=404, text=f"no such endpoint {request.path[:80]!r}\n")
        if request.method != "POST":
            return web.Response(status=405, text=f"{REQUEST_PATH} takes POST\n")
        try:
            principal, req = await self._admit(request)
        except StixError as exc:
            return self._refusal(exc)
        except Exception:
            self.budget.exception("http_admit_failed")
            return self._refusal(ProtocolError("stixd failed to read this request"), 500)
        return await self._serve(request, principal, req)

    async def _admit(self, request: web.BaseRequest) -> tuple[Principal, Any]:
        """Who asks, and what: every check before the request runs, cheapest first."""
        theirs = request.headers.get(PROTOCOL_HEADER, "")
        if not theirs.isdigit():
            raise ProtocolError(
                f"expected the {PROTOCOL_HEADER} header with the protocol version; "
                "is this a stixctl client?"
            )
        if int(theirs) != PROTOCOL_VERSION:
            raise VersionMismatch(
                f"stixctl speaks protocol {theirs[:10]} but the API server's stixd {VERSION} "
                f"speaks protocol {PROTOCOL_VERSION}: use a stixctl of version {VERSION}"
            )
        replica = request.headers.get(REPLICA_HEADER)
        if replica is not None:  # another replica's forward: its secret, then who it asks for
            on_behalf = request.headers.get(ON_BEHALF_HEADER, "")
            principal = forwarded_principal(self.app.replica_secret, replica, on_behalf)
            req = decode_request(await self._body(request))
            check_forwarded(self.app, principal, req)
            return principal, req
        bearer = _bearer(request.headers.get("Authorization"))
        if bearer is None:
            raise Unauthenticated(
                "this API server needs a token: log in with `stixctl api login ENDPOINT "
                "--token TOKEN` or set $STIX_API_TOKEN (an admin makes one with `stixctl tokens "
                "create USER`)"
            )
        principal = await authenticate(self.app, bearer)
        req = decode_request(await self._body(request))
        if isinstance(req, LOCAL_ONLY):
            raise PermissionDenied(
                "the HTTP API is started and stopped on the server's machine only "
                "(`stixctl api start|stop` there)"
            )
        authorize(principal, req)
        refuse_local_paths(req, user_root(self.app, principal.name))
        return principal, req

    async def _body(self, request: web.BaseRequest) -> bytes:
        length = request.content_length
        if length is not None and length > MAX_FRAME:
            raise TooLarge(f"request of {length} bytes exceeds the {MAX_FRAME}-byte limit")
        chunks: list[bytes] = []
        size = 0
        with anyio.fail_after(self.idle):
            async for chunk in request.content.iter_any():
                size += len(chunk)
                if size > MAX_FRAME:
                    raise TooLarge(f"request exceeds the {MAX_FRAME}-byte limit")
                chunks.append(chunk)
        return b"".join(chunks)

    def _refusal(self, exc: StixError, status: int | None = None) -> web.Response:
        if status is None:
            status = 413 if isinstance(exc, TooLarge) else STATUS_OF_CODE.get(exc.code, 500)
        self.budget.warning("http_refused", status=status, error=exc.message)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
        resp = web.Response(
            status=status, body=encode(error_reply(exc)), content_type=FRAMES, headers=headers
        )
        resp.force_close()
        return resp

    async def _serve(
        self, request: web.BaseRequest, principal: Principal, req: Any
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": FRAMES, "Stix-Version": VERSION})
        resp.force_close()  # one request per connection, as on the socket
        self.in_flight += 1
        token = PRINCIPAL.set(principal)
        host = REACHED.set(request.url.host)
        try:
            try:
                await resp.prepare(request)
            except (ConnectionError, aiohttp.ClientError) as exc:
                raise ClientGone() from exc
            reply = await self._run(req, resp)
            await self._send(resp, reply)
            if isinstance(req, m.Shutdown):
                self.app.shutdown.set()  # only now: the client has its answer
            await resp.write_eof()
        except (ClientGone, ConnectionError, aiohttp.ClientError):
            pass  # its request was cancelled (or done); there is no one to answer
        finally:
            REACHED.reset(host)
            PRINCIPAL.reset(token)
            self.in_flight -= 1
        return resp

    async def _run(self, req: Any, resp: web.StreamResponse) -> Any:
        async def emit(event: Any) -> None:
            await self._send(resp, event)

        timeout = self.app.config.daemon.request_timeout_seconds
        if isinstance(req, m.Launch) and req.retry_until_up:
            timeout = float("inf")  # until capacity appears; the client's leaving ends it
        try:
            with anyio.fail_after(timeout):
                return await self.dispatch(self.app, req, emit)
        except TimeoutError:
            return m.ErrorReply(code="internal", message=f"request timed out after {timeout:g}s")
        except Exception as exc:
            if _cause(exc) is None:
                raise ClientGone() from exc
            if not isinstance(exc, StixError):
                self.budget.exception("request_failed", request=type(req).__name__)
            return error_reply(exc)

    async def _send(self, resp: web.StreamResponse, msg: Any) -> None:
        with anyio.move_on_after(self.stall) as waited:
            try:
                await resp.write(encode(msg))
            except (ConnectionError, aiohttp.ClientError, RuntimeError) as exc:
                raise ClientGone() from exc
        if waited.cancelled_caught:
            self.budget.warning("client_stalled", seconds=self.stall)
            raise ClientGone(f"took nothing of its replies for {self.stall:g}s")


def _bearer(header: str | None) -> str | None:
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


class _Busy(asyncio.Protocol):
    """A connection past `daemon.max_connections`: told why in one response, then closed.
    The answer waits for the request's first bytes (at most a second): closing with them
    unread would reset the connection, and the client might lose the reason before reading."""

    def __init__(self, open_now: int) -> None:
        self.open_now = open_now
        self.transport: asyncio.WriteTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        self.transport = transport
        asyncio.get_running_loop().call_later(1.0, self._answer)

    def data_received(self, data: bytes) -> None:
        self._answer()

    def _answer(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        body = encode(
            m.ErrorReply(
                code="daemon_unavailable",
                message=f"stixd is serving {self.open_now} HTTP connections, its limit "
                "(daemon.max_connections); try again in a moment, or raise the limit",
            )
        )
        head = (
            f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: {FRAMES}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        self.transport.write(head + body)
        self.transport.close()


def tls_context(certfile: str | None, keyfile: str | None) -> ssl.SSLContext | None:
    """The server's TLS context from `api.certfile`/`api.keyfile`, or None for plain HTTP."""
    if certfile is None and keyfile is None:
        return None
    from stixproto.errors import InvalidConfig

    if certfile is None or keyfile is None:
        raise InvalidConfig("api: set both certfile and keyfile for HTTPS, or neither for HTTP")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(os.path.expanduser(certfile), os.path.expanduser(keyfile))
    except (OSError, ssl.SSLError) as exc:
        raise InvalidConfig(f"api: cannot load the TLS certificate {certfile}: {exc}") from None
    return ctx
