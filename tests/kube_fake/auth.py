"""Bearer tokens, as the API server's authenticator reads them: a request carrying a token
other than the fake's own is refused 401 Unauthorized (a `Status`, as a real server answers),
before anything else looks at it. A request with no token at all is let through (as where
anonymous requests are allowed), so clients without credentials, such as the admin knobs and
raw HTTP in tests, keep working."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

TOKEN = "kube-fake-token"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def bearer_tokens(request: web.Request, handler: Handler) -> web.StreamResponse:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip() != TOKEN:
        status = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": "Unauthorized",
            "reason": "Unauthorized",
            "code": 401,
        }
        return web.json_response(status, status=401)
    return await handler(request)
