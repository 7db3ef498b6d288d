"""The client side's limits: how long a request's head may take, and how big it may be; and
aiohttp's server with them, which takes WebSocket upgrades over from the front.

A head that cannot be read gets a 400; a request line past `MAX_REQUEST_LINE` gets 414 and a
header past `MAX_HEADER_FIELD` (or more than `MAX_HEADERS` of them) 431 instead, as the client
needs to know what to shorten. aiohttp's parser tells which limit it hit only by the limit's
value, so the two differ.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong

MAX_REQUEST_LINE = 8190
MAX_HEADER_FIELD = 16380
MAX_HEADERS = 128


class _Handler(web.RequestHandler):
    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if isinstance(exc, LineTooLong) and str(MAX_REQUEST_LINE) == str(exc.args[1]):
            return _refuse(414, f"request line over {MAX_REQUEST_LINE} bytes")
        if isinstance(exc, LineTooLong):
            return _refuse(431, f"a header over {MAX_HEADER_FIELD} bytes")
        if isinstance(exc, BadHttpMessage) and "Too many headers" in str(exc):
            return _refuse(431, f"more than {MAX_HEADERS} headers")
        return super().handle_error(request, status, exc, message)


def _refuse(status: int, why: str) -> web.Response:
    response = web.Response(status=status, text=why + "\n")
    response.force_close()
    return response


class Server(web.Server):
    """aiohttp's low-level server with the limits above; ``head_seconds`` bounds both the wait
    for a request's head (a client that never finishes one is dropped) and a keep-alive idle."""

    def __init__(self, handler: Any, head_seconds: float, **kwargs: Any) -> None:
        super().__init__(
            handler,
            keepalive_timeout=head_seconds,
            max_line_size=MAX_REQUEST_LINE,
            max_field_size=MAX_HEADER_FIELD,
            max_headers=MAX_HEADERS,
            **kwargs,
        )

    def __call__(self) -> web.RequestHandler:
        return _Handler(self, loop=self._loop, **self._kwargs)


def hand_off_to(server: Server) -> Callable[[asyncio.Transport, bytes], None]:
    """What gives a connection, and the bytes it sent from the upgrade request on, to
    ``server`` (a `stixd.balancer.front.HandOff`)."""

    def hand_off(transport: asyncio.Transport, data: bytes) -> None:
        handler = server()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        handler.data_received(data)

    return hand_off
