"""A fault-injecting proxy in front of a moto server, for the EC2 errors moto cannot produce.

Run as ``python -m tests.awsfault PORT UPSTREAM_URL`` (the test bed starts it). EC2 speaks the
query protocol, so every request is a form (``Action=RunInstances&InstanceType=...``). A rule
matching the ``Action`` and, optionally, exact form values answers with an AWS-style error;
anything else is forwarded to moto unchanged and its answer relayed.

Rules are set over HTTP by the test:
``POST /_fault {"action", "code", "status", "times", "match", "region", "message"}``
(``times`` -1 means forever; ``region`` matches the request's SigV4 scope; a rule with a
``body`` instead of a ``code`` answers that body, by default with 200; one with ``hold``
keeps the request until ``POST /_fault/release``, then forwards it even if its client has
gone; one with ``rewrite`` ``[[old, new], ...]`` forwards it and replaces text in moto's answer,
for states moto never reports, such as a spot interruption's reason), ``GET /_fault``
returns the rules left, the ``Action``s seen (with their regions) and the held requests
``waiting`` / ``forwarded``, ``GET /_fault/forms`` every request's form as seen (what each
call asked for), ``DELETE /_fault`` clears all. A ``match`` value of null matches a form
without that field (a listing's first page has no ``NextToken``). S3 names its operations in the
query instead (``PUT /bucket?tagging``): a rule with ``query`` (and no ``action``) matches a
request carrying that query parameter.
"""

from __future__ import annotations

import asyncio
import re
import sys
import uuid
from typing import Any
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

import aiohttp
from aiohttp import web

ERROR_XML = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    "<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors>"
    "<RequestID>{request_id}</RequestID></Response>"
)
_REGION = re.compile(r"Credential=[^/]+/\d+/([a-z0-9-]+)/")  # SigV4's credential scope
_HOP_HEADERS = {"host", "content-length", "transfer-encoding", "connection"}
SESSION = web.AppKey("session", aiohttp.ClientSession)


def make_app(upstream: str) -> web.Application:
    rules: list[dict[str, Any]] = []
    seen: list[str] = []
    regions: list[str] = []
    forms: list[dict[str, str]] = []
    app = web.Application()

    async def client(app: web.Application) -> Any:
        app[SESSION] = aiohttp.ClientSession()
        yield
        await app[SESSION].close()

    app.cleanup_ctx.append(client)

    async def set_rule(req: web.Request) -> web.Response:
        rule = await req.json()
        rule.setdefault("status", 200 if "body" in rule or "rewrite" in rule else 400)
        rule.setdefault("code", "")
        rule.setdefault("hold", False)
        rule.setdefault("times", -1)
        rule.setdefault("match", {})
        rule.setdefault("message", f"injected {rule['code']}")
        rules.append(rule)
        return web.json_response(rule)

    held = {"waiting": 0, "forwarded": 0}
    release = [asyncio.Event()]

    async def get_rules(req: web.Request) -> web.Response:
        return web.json_response({"rules": rules, "seen": seen, "regions": regions, **held})

    async def get_forms(req: web.Request) -> web.Response:
        return web.json_response(forms)

    async def let_go(req: web.Request) -> web.Response:
        release[0].set()
        return web.json_response(held)

    async def clear(req: web.Request) -> web.Response:
        rules.clear()
        seen.clear()
        regions.clear()
        forms.clear()
        release[0].set()
        release[0] = asyncio.Event()
        held.update(waiting=0, forwarded=0)
        return web.json_response({})

    async def relay(req: web.Request, body: bytes) -> web.Response:
        headers = {k: v for k, v in req.headers.items() if k.lower() not in _HOP_HEADERS}
        session: aiohttp.ClientSession = req.app[SESSION]
        async with session.request(
            req.method, upstream + req.path_qs, data=body, headers=headers
        ) as answer:
            data = await answer.read()
            out = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP_HEADERS}
            return web.Response(status=answer.status, body=data, headers=out)

    async def hold(req: web.Request, body: bytes) -> web.Response:
        """Keep the request until the test lets go, then do it even if its client is gone
        (as EC2 finishes a request whose caller died)."""
        gate = release[0]
        held["waiting"] += 1
        await gate.wait()

        async def finish() -> web.Response:
            answer = await relay(req, body)
            held["forwarded"] += 1
            return answer

        return await asyncio.shield(asyncio.ensure_future(finish()))

    async def rewritten(answer: web.Response, pairs: list[list[str]]) -> web.Response:
        text = answer.text or ""
        for old, new in pairs:
            text = text.replace(old, new)
        return web.Response(status=answer.status, content_type="text/xml", text=text)

    async def forward(req: web.Request) -> web.StreamResponse:
        body = await req.read()
        form = {k: v[0] for k, v in parse_qs(body.decode(errors="replace")).items()}
        action = form.get("Action")
        scope = _REGION.search(req.headers.get("Authorization", ""))
        region = scope.group(1) if scope else ""
        if action:
            seen.append(action)
            regions.append(region)
            forms.append(form)
        for rule in rules:
            if rule.get("action") != action or rule["times"] == 0:
                continue
            if rule.get("query") is not None and rule["query"] not in req.query:
                continue
            if rule.get("region") not in (None, region):
                continue
            if any(form.get(k) != v for k, v in rule["match"].items()):
                continue
            if rule["times"] > 0:
                rule["times"] -= 1
            if rule.get("hold"):
                return await hold(req, body)
            if "rewrite" in rule:
                return await rewritten(await relay(req, body), rule["rewrite"])
            if "body" in rule:  # a canned answer, e.g. an empty listing
                return web.Response(
                    status=rule["status"], content_type="text/xml", text=rule["body"]
                )
            text = ERROR_XML.format(
                code=escape(rule["code"]),
                message=escape(rule["message"]),
                request_id=uuid.uuid4(),
            )
            return web.Response(status=rule["status"], content_type="text/xml", text=text)
        return await relay(req, body)

    app.router.add_post("/_fault", set_rule)
    app.router.add_post("/_fault/release", let_go)
    app.router.add_get("/_fault", get_rules)
    app.router.add_get("/_fault/forms", get_forms)
    app.router.add_delete("/_fault", clear)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


def main() -> None:
    port, upstream = int(sys.argv[1]), sys.argv[2].rstrip("/")
    web.run_app(make_app(upstream), host="127.0.0.1", port=port, print=None)


if __name__ == "__main__":
    main()
