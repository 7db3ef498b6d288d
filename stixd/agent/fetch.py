"""COPY mode on the node: download a bucket's objects from signed URLs into a folder.

The daemon lists the bucket and signs one short-lived GET per object, so the node holds no
cloud credentials. Downloads run on a bounded pool of threads; each lands in a temporary file
renamed into place, so a half-fetched object is never seen under its own name. An object whose
download breaks (no connection, a cut body, a 5xx) is tried again a few times; a refusal (403,
404) is not. On final failure its temporary file is removed. A key that would leave the folder
(``..``, an absolute path) is refused.

A request may carry ``bearer``, a token the daemon got kept to the bucket for reading (GCS
without a key to sign with): each GET sends it as ``Authorization: Bearer``, never on a
redirect. It is held in memory for this request only: never written, never logged.
"""

from __future__ import annotations

import asyncio
import http.client
import os
import shutil
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .protocol import RequestError

MAX_OBJECTS = 20_000
"""Objects per request (the daemon sends larger buckets in batches)."""
MAX_WORKERS = 16
MAX_BEARER = 4096
TIMEOUT_S = 120.0
CHUNK = 1 << 20
BACKOFF_S = (0.5, 2.0)
"""The pauses before the second and third try of an object whose download broke."""


def _target(root: Path, key: str) -> Path:
    parts = [p for p in key.split("/") if p]
    if not parts or any(p in (".", "..") for p in parts) or key.startswith("/"):
        raise RequestError("bad_request", f"object key {key[:80]!r} cannot be placed under {root}")
    return root.joinpath(*parts)


def parse_bearer(request: dict[str, Any]) -> str | None:
    bearer = request.get("bearer")
    if bearer is None:
        return None
    if (
        not isinstance(bearer, str)
        or not 0 < len(bearer) <= MAX_BEARER
        or not bearer.isascii()
        or not bearer.isprintable()
        or " " in bearer
    ):
        raise RequestError("bad_request", '"bearer" must be a token of printable ASCII')
    return bearer


def parse_items(request: dict[str, Any]) -> tuple[Path, list[tuple[Path, str]], int]:
    dest = request.get("dest")
    items = request.get("items")
    workers = request.get("workers", 8)
    if not isinstance(dest, str) or not os.path.isabs(dest):
        raise RequestError("bad_request", 'fetch needs "dest", an absolute path')
    if not isinstance(items, list) or len(items) > MAX_OBJECTS:
        raise RequestError("bad_request", f'fetch needs "items", a list of at most {MAX_OBJECTS}')
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= MAX_WORKERS:
        raise RequestError("bad_request", f'"workers" must be 1 to {MAX_WORKERS}')
    root = Path(dest)
    parsed = []
    for item in items:
        if not (
            isinstance(item, list)
            and len(item) == 2
            and all(isinstance(x, str) for x in item)
            and item[1].startswith(("http://", "https://"))
        ):
            raise RequestError("bad_request", "each fetch item is [key, http(s) URL]")
        parsed.append((_target(root, item[0]), item[1]))
    return root, parsed, workers


def _transient(exc: BaseException) -> bool:
    """Whether trying again may help: the store's own failure or a broken connection; not a
    refusal (an expired or wrong URL, a missing object) nor a local disk error."""
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code >= 500 or exc.code == 429
    return isinstance(
        exc, urllib.error.URLError | ConnectionError | TimeoutError | http.client.HTTPException
    )


def _download_once(path: Path, partial: Path, url: str, bearer: str | None) -> int:
    asked = urllib.request.Request(url)
    if bearer is not None:  # not on a redirect: urllib copies only the redirected headers
        asked.add_unredirected_header("Authorization", f"Bearer {bearer}")
    try:
        answer = urllib.request.urlopen(asked, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        exc.close()  # its body is the store's error page: the connection goes now
        raise
    with answer, open(partial, "wb") as out:
        shutil.copyfileobj(answer, out, CHUNK)
        size = out.tell()
        expected = answer.headers.get("Content-Length", "")
        if expected.isdigit() and int(expected) != size:  # read(n) ends quietly on a cut body
            raise http.client.IncompleteRead(b"", int(expected) - size)
    os.replace(partial, path)
    return size


def _download(path: Path, url: str, bearer: str | None) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.stix-part")
    for pause in BACKOFF_S:
        try:
            return _download_once(path, partial, url, bearer)
        except Exception as exc:
            if not _transient(exc):
                partial.unlink(missing_ok=True)
                raise
        time.sleep(pause)
    try:
        return _download_once(path, partial, url, bearer)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


async def fetch(request: dict[str, Any]) -> dict[str, Any]:
    root, items, workers = parse_items(request)
    bearer = parse_bearer(request)
    root.mkdir(parents=True, exist_ok=True)
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(max_workers=min(workers, max(len(items), 1))) as pool:
        tasks = [loop.run_in_executor(pool, _download, path, url, bearer) for path, url in items]
        results = await asyncio.gather(*tasks, return_exceptions=True)
    failed = [(items[i][0], r) for i, r in enumerate(results) if isinstance(r, BaseException)]
    if failed:
        path, exc = failed[0]
        key = path.relative_to(root).as_posix()
        why = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise RequestError("fetch_failed", f"{len(failed)} object(s) not fetched; {key}: {why}")
    return {"files": len(items), "bytes": sum(r for r in results if isinstance(r, int))}
