"""`GET /metrics` on the HTTP API: who may scrape, then `stixd.control.metrics.exposition`.

A scrape carries a token of any role (a viewer's is enough: Prometheus sends it with
`authorization: {credentials_file: ...}`), as every other route of the API does; with
`api.metrics_open_on_loopback`, one from this machine may come without, for a Prometheus beside
the server (SkyPilot's chart scrapes its API server's metrics port without credentials).
"""

from __future__ import annotations

import ipaddress

from aiohttp import web

from stixd.app import App
from stixd.control.identity import authenticate
from stixd.control.metrics import CONTENT_TYPE, exposition
from stixproto.errors import Unauthenticated

METRICS_PATH = "/metrics"


def _loopback(peer: str | None) -> bool:
    try:
        return peer is not None and ipaddress.ip_address(peer).is_loopback
    except ValueError:
        return False


async def serve_metrics(app: App, request: web.BaseRequest, bearer: str | None) -> web.Response:
    """The exposition, or a one-line 401 saying how to send a token."""
    if bearer is not None:
        try:
            await authenticate(app, bearer)
        except Unauthenticated as exc:
            return _refused(exc.message)
    elif not (app.config.api.metrics_open_on_loopback and _loopback(request.remote)):
        return _refused(
            "/metrics needs a token of any role: have Prometheus send one made with "
            "`stixctl tokens create USER` (authorization: credentials_file), or set "
            "api.metrics_open_on_loopback for a Prometheus on this machine"
        )
    body = (await exposition(app)).encode()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


def _refused(why: str) -> web.Response:
    return web.Response(
        status=401,
        text=why + "\n",
        headers={"WWW-Authenticate": "Bearer"},
        content_type="text/plain",
    )
