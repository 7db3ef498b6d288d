"""A loopback proxy in front of fake-gcs-server that keeps bucket labels, which the emulator
drops (it answers a bucket without its ``labels``). A fake, and only of that: every request
goes on to the emulator as it came, and the labels the client set on a bucket (create or
patch) are put back into the emulator's bucket answers. Run as
``python -m tests.gcs_labels PORT UPSTREAM_URL``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import aiohttp
from aiohttp import web

LABELS: dict[str, dict[str, str]] = {}
BUCKETS = "/storage/v1/b"
_HOP = {"host", "content-length", "transfer-encoding", "connection"}


def _with_labels(doc: Any) -> Any:
    if isinstance(doc, dict) and doc.get("kind") == "storage#bucket":
        found = LABELS.get(str(doc.get("name")))
        if found:
            doc["labels"] = found
    elif isinstance(doc, dict) and isinstance(doc.get("items"), list):
        doc["items"] = [_with_labels(b) for b in doc["items"]]
    return doc


async def forward(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    path = request.path
    name = path[len(BUCKETS) + 1 :] if path.startswith(BUCKETS + "/") else ""
    bucket_call = path == BUCKETS or (name != "" and "/" not in name)
    session: aiohttp.ClientSession = request.app["session"]
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
    async with session.request(
        request.method, request.app["upstream"] + request.path_qs, data=body, headers=headers
    ) as answer:
        data = await answer.read()
        status = answer.status
        ctype = answer.headers.get("Content-Type", "")
    if bucket_call and status < 300:
        sent = json.loads(body) if body.strip() else {}
        if request.method == "POST" and path == BUCKETS:
            LABELS[str(sent.get("name"))] = dict(sent.get("labels") or {})
        elif request.method == "PATCH" and isinstance(sent.get("labels"), dict):
            LABELS.setdefault(name, {}).update(sent["labels"])
        elif request.method == "DELETE":
            LABELS.pop(name, None)
        if data.strip().startswith(b"{"):
            data = json.dumps(_with_labels(json.loads(data))).encode()
    return web.Response(status=status, body=data, headers={"Content-Type": ctype} if ctype else {})


async def _session(app: web.Application) -> Any:
    app["session"] = aiohttp.ClientSession()
    yield
    await app["session"].close()


def main() -> None:
    port, upstream = int(sys.argv[1]), sys.argv[2].rstrip("/")
    app = web.Application(client_max_size=1 << 30)
    app["upstream"] = upstream
    app.cleanup_ctx.append(_session)
    app.router.add_route("*", "/{tail:.*}", forward)
    web.run_app(app, host="127.0.0.1", port=port, print=None)


if __name__ == "__main__":
    main()
