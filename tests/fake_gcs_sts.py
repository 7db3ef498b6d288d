"""A fake of Google's Security Token Service (``sts.googleapis.com/v1/token``) for downscoping
an access token with a Credential Access Boundary, and a fake of GCS's side of it: a loopback
proxy in front of fake-gcs-server (which reads no credentials) that lets a request through
only with a token the fake STS issued, before it ends, for a bucket its boundary names (or
with a source token, the daemon's own, for anything).

The STS side checks a request as Google documents it: a form with the token-exchange
``grant_type``, access-token ``requested_token_type`` and ``subject_token_type``, a known
``subject_token``, and ``options`` the URL-encoded JSON of ``{"accessBoundary":
{"accessBoundaryRules": [{"availableResource": "//storage.googleapis.com/projects/_/buckets/B",
"availablePermissions": ["inRole:..."]}]}}`` (one to ten rules, as Google allows; a rule's
``availabilityCondition`` is taken and not enforced). It answers ``access_token``,
``issued_token_type``, ``token_type`` and ``expires_in`` (``lifetime``), or Google's
``{"error": ..., "error_description": ...}`` with HTTP 400 or 401.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import unquote

import aiohttp
from aiohttp import web

from tests.stores_bed import free_port

EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
DAEMON = "daemon-token"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"
RESOURCE = re.compile(r"^//storage\.googleapis\.com/projects/_/buckets/([a-z0-9._-]{3,222})$")
BUCKET_PATH = re.compile(r"^/(?:upload/|download/)?storage/v1/b/([^/]+)(?:/|$)")
_HOP = {"host", "content-length", "transfer-encoding", "connection", "authorization"}


class FakeSts:
    """Issued tokens (token -> buckets, end), the requests seen, and the proxy's refusals."""

    def __init__(self, sources: set[str], lifetime: int = 3600) -> None:
        self.sources = sources
        self.lifetime = lifetime
        self.issued: dict[str, tuple[frozenset[str], float]] = {}
        self.roles: dict[str, list[str]] = {}
        """Each issued token's boundary's permissions."""
        self.exchanging = True
        """False: every exchange is refused as Google refuses a caller lacking the right."""
        self.forms: list[dict[str, str]] = []
        self.refused: list[str] = []
        self.upstream = ""

    def app(self, upstream: str | None = None) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/token", self.token)
        app.router.add_post("/oauth2/token", self.oauth)
        if upstream is not None:
            self.upstream = upstream.rstrip("/")
            app.router.add_route("*", "/storage/{tail:.*}", self.forward)
            app.router.add_route("*", "/upload/{tail:.*}", self.forward)
            app.router.add_route("*", "/download/{tail:.*}", self.forward)
        return app

    async def oauth(self, request: web.Request) -> web.Response:
        """Google's OAuth token endpoint for a service-account key's signed assertion or for
        gcloud's user credentials' refresh token (the ``token_uri`` of either): the daemon's
        own token, ``DAEMON``, unchecked."""
        form = await request.post()
        user = form.get("grant_type") == "refresh_token" and form.get("refresh_token")
        if not user and (form.get("grant_type") != JWT_BEARER or not form.get("assertion")):
            return _error(400, "invalid_grant", "not a service-account assertion")
        answer = {"access_token": DAEMON, "expires_in": 3600, "token_type": "Bearer"}
        return web.json_response(answer)

    async def token(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.forms.append(form)
        if form.get("grant_type") != EXCHANGE:
            return _error(400, "unsupported_grant_type", "grant_type is not token-exchange")
        for name in ("requested_token_type", "subject_token_type"):
            if form.get(name) != ACCESS_TOKEN:
                return _error(400, "invalid_request", f"{name} must be an access token")
        if not self.exchanging:
            return _error(403, "access_denied", "The caller does not have permission")
        if form.get("subject_token") not in self.sources:
            return _error(401, "invalid_grant", "The subject_token is invalid or expired")
        try:
            options = json.loads(unquote(form.get("options", "")))
            rules = options["accessBoundary"]["accessBoundaryRules"]
            if not isinstance(rules, list) or not 1 <= len(rules) <= 10:
                raise ValueError("one to ten rules")
            found = [RESOURCE.match(rule["availableResource"]) for rule in rules]
            permissions = [p for rule in rules for p in rule["availablePermissions"]]
        except (ValueError, KeyError, TypeError):
            return _error(400, "invalid_request", "options is not a Credential Access Boundary")
        if (
            not all(found)
            or not all(rule["availablePermissions"] for rule in rules)
            or not all(
                isinstance(p, str) and p.startswith("inRole:roles/storage.") for p in permissions
            )
        ):
            return _error(400, "invalid_request", "the boundary names no bucket or no role")
        token = "ya29.fake-" + secrets.token_urlsafe(24)
        buckets = frozenset(match.group(1) for match in found if match is not None)
        self.issued[token] = (buckets, time.time() + self.lifetime)
        self.roles[token] = [str(p) for p in permissions]
        answer = {
            "access_token": token,
            "issued_token_type": ACCESS_TOKEN,
            "token_type": "Bearer",
            "expires_in": self.lifetime,
        }
        return web.json_response(answer)

    async def forward(self, request: web.Request) -> web.StreamResponse:
        bearer = request.headers.get("Authorization", "").removeprefix("Bearer ")
        buckets, ends = self.issued.get(bearer, (frozenset(), 0.0))
        asked = BUCKET_PATH.match(request.path)
        viewer = self.roles.get(bearer) == ["inRole:roles/storage.objectViewer"]
        if bearer in self.sources:  # the daemon's own token: its project's every bucket
            pass
        elif viewer and request.method != "GET":  # a read-only boundary reads, nothing else
            self.refused.append(f"{request.method} {request.path} {bearer[:16]}")
            return web.json_response({"error": {"code": 403, "message": "read-only"}}, status=403)
        elif ends <= time.time() or asked is None or asked.group(1) not in buckets:
            self.refused.append(f"{request.method} {request.path} {bearer[:16]}")
            return web.json_response({"error": {"code": 401, "message": "denied"}}, status=401)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                request.method,
                self.upstream + request.path_qs,
                data=await request.read(),
                headers=headers,
            ) as answer,
        ):
            body = await answer.read()
            ctype = answer.headers.get("Content-Type", "")
            return web.Response(
                status=answer.status, body=body, headers={"Content-Type": ctype} if ctype else {}
            )


def _error(status: int, error: str, description: str) -> web.Response:
    body: dict[str, Any] = {"error": error, "error_description": description}
    return web.json_response(body, status=status)


@contextlib.asynccontextmanager
async def served(fake: FakeSts, upstream: str | None = None) -> AsyncIterator[str]:
    """``fake`` served on loopback (and GCS through it when ``upstream`` is given): its URL."""
    runner = web.AppRunner(fake.app(upstream))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
