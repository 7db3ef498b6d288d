"""A FAKE of Cloudflare's API, one endpoint of it: R2 temporary credentials, for tests.

``POST /client/v4/accounts/{account}/r2/temp-access-credentials`` checked as Cloudflare
documents it: ``Authorization: Bearer`` the one known API token (else 401, code 10000), the
one known account (else 403, code 9109), and a JSON body with ``bucket`` (an R2 bucket name),
``parentAccessKeyId`` (the access key id of the R2 keys the token's owner made: the one
configured), ``permission`` (one of Cloudflare's four), ``ttlSeconds`` (1 to 604800) and the
optional ``prefixes`` / ``objects`` lists (else 400). It answers Cloudflare's envelope
(``success``, ``errors``, ``messages``, ``result``) with fresh random keys, and writes each key's
bucket, end and permission to the moto emulator's ``scoped`` file, where ``tests.moto_clock``
refuses the key on any other bucket and after its end: keys it mints really are kept to their
bucket. ``mode`` makes it hostile instead (garbage, JSON nested too deep, a refusal, fields
missing, a huge body, no answer at all).

Run in the test's loop with ``served(fake)``, or as its own process (``python -m
tests.fake_r2_api PORT ACCOUNT TOKEN PARENT SCOPED``, ``r2_api_process``) for a daemon.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
from aiohttp import web

from tests.stores_bed import REPO, Emulator, free_port, running

ACCOUNT = "0123456789abcdef0123456789abcdef"
TOKEN = "fake-cloudflare-api-token"
PERMISSIONS = ("admin-read-write", "admin-read-only", "object-read-write", "object-read-only")
MAX_TTL_S = 604800
BUCKET = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
MODES = ("ok", "garbage", "deep", "refuse", "missing", "huge", "silent")


class FakeR2Api:
    """The one endpoint; ``asked`` holds every accepted body, ``minted`` the key ids given."""

    def __init__(self, parent: str, scoped: Path, account: str = ACCOUNT, token: str = TOKEN):
        self.parent = parent
        self.scoped = scoped
        self.account = account
        self.token = token
        self.mode = "ok"
        self.asked: list[dict[str, Any]] = []
        self.minted: list[str] = []

    def app(self) -> web.Application:
        app = web.Application()
        path = "/client/v4/accounts/{account}/r2/temp-access-credentials"
        app.router.add_post(path, self.temp_credentials)
        return app

    async def temp_credentials(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return _error(401, 10000, "Authentication error")
        if request.match_info["account"] != self.account:
            return _error(403, 9109, "Unauthorized to access requested resource")
        try:
            body = await request.json()
        except ValueError:
            return _error(400, 10001, "the request body is not JSON")
        problem = self.invalid(body)
        if problem is not None:
            return _error(400, 10001, problem)
        self.asked.append(body)
        if self.mode != "ok":
            return await self.hostile(request)
        key = secrets.token_hex(16)
        keys = {
            "accessKeyId": key,
            "secretAccessKey": secrets.token_hex(32),
            "sessionToken": secrets.token_urlsafe(48),
        }
        ends = time.time() + float(body["ttlSeconds"])
        scope = {"bucket": body["bucket"], "expires_at": ends, "permission": body["permission"]}
        self.keep_to(key, scope)
        self.minted.append(key)
        return web.json_response({"success": True, "errors": [], "messages": [], "result": keys})

    def invalid(self, body: Any) -> str | None:
        """What is wrong with a request body, as Cloudflare's schema says it (None: nothing)."""
        if not isinstance(body, dict):
            return "the request body is not an object"
        for field in ("bucket", "parentAccessKeyId", "permission", "ttlSeconds"):
            if field not in body:
                return f"{field} is required"
        if not isinstance(body["bucket"], str) or not BUCKET.fullmatch(body["bucket"]):
            return "bucket is not a valid R2 bucket name"
        if body["parentAccessKeyId"] != self.parent:
            return "parentAccessKeyId is not an access key of this account"
        if body["permission"] not in PERMISSIONS:
            return f"permission must be one of {', '.join(PERMISSIONS)}"
        ttl = body["ttlSeconds"]
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 1 <= ttl <= MAX_TTL_S:
            return f"ttlSeconds must be a number from 1 to {MAX_TTL_S}"
        for field in ("prefixes", "objects"):
            found = body.get(field, [])
            if not isinstance(found, list) or not all(isinstance(x, str) for x in found):
                return f"{field} must be a list of strings"
        return None

    def keep_to(self, key: str, scope: dict[str, Any]) -> None:
        """Tell the emulator ``key`` reaches ``scope["bucket"]`` only (one atomic write)."""
        try:
            scopes = json.loads(self.scoped.read_text() or "{}")
        except (OSError, ValueError):
            scopes = {}
        scopes[key] = scope
        part = self.scoped.with_name(f".{self.scoped.name}.{os.getpid()}")
        part.write_text(json.dumps(scopes))
        part.replace(self.scoped)

    async def hostile(self, request: web.Request) -> web.StreamResponse:
        if self.mode == "silent":
            await anyio.sleep(3600)  # never answers; the client's bound ends the wait
        if self.mode == "garbage":
            return web.Response(text="<html>502 Bad Gateway</html>", content_type="text/html")
        if self.mode == "deep":  # JSON nested past the parser's depth, well inside 64 KiB
            return web.Response(text="[" * 60_000, content_type="application/json")
        if self.mode == "refuse":
            return _error(200, 10042, "R2 temporary credentials\nare not enabled")
        if self.mode == "missing":
            result = {"accessKeyId": "AKIA", "secretAccessKey": ""}
            return web.json_response({"success": True, "errors": [], "result": result})
        answer = web.StreamResponse(headers={"Content-Type": "application/json"})
        await answer.prepare(request)  # "huge": a body that goes on far past any sane answer
        await answer.write(b'{"success": true, "result": {"accessKeyId": "' + b"A" * (1 << 20))
        return answer


def _error(status: int, code: int, message: str) -> web.Response:
    body = {"success": False, "errors": [{"code": code, "message": message}], "messages": []}
    return web.json_response({**body, "result": None}, status=status)


@contextlib.asynccontextmanager
async def served(fake: FakeR2Api) -> AsyncIterator[str]:
    """``fake`` on loopback in this loop: its API base (``.../client/v4``)."""
    runner = web.AppRunner(fake.app(), shutdown_timeout=0.5)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/client/v4"
    finally:
        await runner.cleanup()


@contextlib.contextmanager
def r2_api_process(moto: Emulator, parent: str = "testing") -> Iterator[str]:
    """The fake as its own process, minting keys the moto emulator ``moto`` keeps to their
    bucket: its API base. Gone, with what it wrote, after the block."""
    emu = Emulator("fake-r2-api")
    argv = [sys.executable, "-m", "tests.fake_r2_api", str(emu.port), ACCOUNT, TOKEN, parent]
    argv.append(str(moto.scoped))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    probe = f"/client/v4/accounts/{ACCOUNT}/r2/temp-access-credentials"
    with running(emu, argv, probe, env=env):
        yield f"{emu.url}/client/v4"


def main(argv: list[str]) -> None:
    port, account, token, parent, scoped = argv
    fake = FakeR2Api(parent, Path(scoped), account, token)
    web.run_app(fake.app(), host="127.0.0.1", port=int(port), print=None)


if __name__ == "__main__":
    main(sys.argv[1:])
