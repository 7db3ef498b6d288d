"""COPY mode on the node: download a bucket's objects from signed URLs into a folder.

The daemon lists the bucket and signs one short-lived GET per object, so the node holds no
cloud credentials. Downloads run on a bounded pool of threads; each lands in a temporary file
renamed into place, so a half-fetched object is never seen under its own name. A key that would
leave the folder (``..``, an absolute path) is refused.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .protocol import RequestError

MAX_OBJECTS = 20_000
"""Objects per request (the daemon sends larger buckets in batches)."""
MAX_WORKERS = 16
TIMEOUT_S = 120.0
CHUNK = 1 << 20


def _target(root: Path, key: str) -> Path:
    parts = [p for p in key.split("/") if p]
    if not parts or any(p in (".", "..") for p in parts) or key.startswith("/"):
        raise RequestError("bad_request", f"object key {key[:80]!r} cannot be placed under {root}")
    return root.joinpath(*parts)


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


def _download(path: Path, url: str) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.stix-part")
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as answer, open(partial, "wb") as out:
        shutil.copyfileobj(answer, out, CHUNK)
        size = out.tell()
    os.replace(partial, path)
    return size


async def fetch(request: dict[str, Any]) -> dict[str, Any]:
    root, items, workers = parse_items(request)
    root.mkdir(parents=True, exist_ok=True)
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(max_workers=min(workers, max(len(items), 1))) as pool:
        tasks = [loop.run_in_executor(pool, _download, path, url) for path, url in items]
        results = await asyncio.gather(*tasks, return_exceptions=True)
    failed = [(items[i][0], r) for i, r in enumerate(results) if isinstance(r, BaseException)]
    if failed:
        path, exc = failed[0]
        raise RequestError(
            "fetch_failed", f"{len(failed)} object(s) not fetched; {path.name}: {exc}"
        )
    return {"files": len(items), "bytes": sum(r for r in results if isinstance(r, int))}
