"""Fetching SkyPilot v8 catalogs into the cache of a stix home (`stixctl catalog update`).

This is the only catalog code that touches the network; the planner reads what lands here.
Each file is downloaded whole, checked by the same reader the planner uses, and only then
written into ``<home>/catalogs/v8/...`` atomically (temporary file + rename), so a failed or
garbled download leaves the cached copy as it was. Files are fetched concurrently, each with
its own timeout; every file gets one line in the report, good or bad.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread
import msgspec

from stixd.planner.catalog import (
    SCHEMA,
    CatalogError,
    cache_dir,
    read_accelerator_names,
    read_vms,
)
from stixd.planner.catalog.names import KNOWN_CLOUDS, normalize_cloud
from stixproto.reports import FileResult

if TYPE_CHECKING:
    import aiohttp  # loaded by `update`: a daemon that never fetches a catalog does not pay for it

__all__ = [
    "DEFAULT_BASE_URL",
    "FileResult",
    "UpdateReport",
    "update",
]

# SkyPilot's public catalog repository; files live at <base>/v8/<cloud>/vms.csv.
DEFAULT_BASE_URL = "https://raw.githubusercontent.com/skypilot-org/skypilot-catalog/master/catalogs"
ACCELERATORS = "common/accelerators.csv"
MAX_BYTES = 512 * 1024 * 1024  # far above any real catalog; stops a runaway response
_CONCURRENCY = 8


class UpdateReport(msgspec.Struct, frozen=True):
    results: list[FileResult]

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    def render(self) -> str:
        return "\n".join(f"{'ok ' if r.ok else 'ERR'} {r.file}: {r.message}" for r in self.results)


def cached_clouds(home: Path) -> list[str]:
    base = cache_dir(home) / SCHEMA
    if not base.is_dir():
        return []
    return sorted(p.parent.name for p in base.glob("*/vms.csv"))


def _validate(relative: str, body: bytes, url: str) -> None:
    """Parse the whole download with the planner's reader; raises CatalogError if it is not
    a catalog of the expected layout."""
    text = body.decode("utf-8", errors="strict")
    if relative == ACCELERATORS:
        if not read_accelerator_names(text, url):
            raise CatalogError(f"{url} lists no accelerators.")
    else:
        read_vms(relative.split("/")[0], text, url)


def _write_atomically(dest: Path, body: bytes) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _age(path: Path) -> float | None:
    try:
        return max(0.0, time.time() - path.stat().st_mtime)
    except OSError:
        return None


async def _download(session: aiohttp.ClientSession, url: str) -> bytes:
    async with session.get(url) as resp:
        if resp.status != 200:
            hint = "check the cloud name and the catalog URL" if resp.status == 404 else "try later"
            raise CatalogError(f"{url} answered HTTP {resp.status}; {hint}.")
        body = bytearray()
        async for chunk in resp.content.iter_chunked(1 << 16):
            body += chunk
            if len(body) > MAX_BYTES:
                raise CatalogError(f"{url} sent more than {MAX_BYTES >> 20} MiB; not a catalog.")
        return bytes(body)


async def _fetch_one(
    session: aiohttp.ClientSession,
    limiter: anyio.CapacityLimiter,
    base_url: str,
    dest_root: Path,
    relative: str,
    file_timeout: float,
) -> FileResult:
    import aiohttp  # the session's: loaded already

    url = f"{base_url.rstrip('/')}/{SCHEMA}/{relative}"
    dest = dest_root / relative
    try:
        async with limiter:
            with anyio.fail_after(file_timeout):
                body = await _download(session, url)
            await anyio.to_thread.run_sync(_validate, relative, body, url)
            await anyio.to_thread.run_sync(_write_atomically, dest, body)
    except TimeoutError:
        message = f"{url} did not answer within {file_timeout:g} s; the cached copy is unchanged."
        return FileResult(relative, False, message, age_seconds=_age(dest))
    except UnicodeDecodeError:
        message = f"{url} is not UTF-8 text; the cached copy is unchanged."
        return FileResult(relative, False, message, age_seconds=_age(dest))
    except CatalogError as e:
        message = f"{str(e).rstrip('.')}; the cached copy is unchanged."
        return FileResult(relative, False, message, age_seconds=_age(dest))
    except aiohttp.ClientError as e:
        message = f"could not fetch {url} ({type(e).__name__}: {e}); the cached copy is unchanged."
        return FileResult(relative, False, message, age_seconds=_age(dest))
    except OSError as e:
        message = f"could not write {dest} ({e.strerror}); the cached copy is unchanged."
        return FileResult(relative, False, message, age_seconds=_age(dest))
    return FileResult(relative, True, f"fetched {len(body)} bytes", len(body), _age(dest))


async def update(
    home: Path,
    clouds: Sequence[str] | None = None,
    *,
    defaults: Sequence[str] = (),
    base_url: str = DEFAULT_BASE_URL,
    file_timeout: float = 60.0,
) -> UpdateReport:
    """Fetch ``clouds``' vms.csv (and ``common/accelerators.csv``) into the cache of ``home``.

    ``clouds=None`` refreshes every cloud already cached, or ``defaults`` when the cache is
    empty (the registry's `InfraMeta.fetch_by_default` clouds: aws, azure and gcp), in the
    catalog schema's order. Each file must arrive within ``file_timeout`` seconds (a caller
    wanting a bound on the whole update wraps the call in ``anyio.fail_after``). An unknown
    cloud name raises CatalogError before anything is fetched; a failed file is reported, never
    raised, and leaves its cached copy intact.
    """
    if clouds is None:
        order = {c: i for i, c in enumerate(KNOWN_CLOUDS)}
        names = cached_clouds(home) or sorted(defaults, key=lambda c: order.get(c, len(order)))
    else:
        names = [normalize_cloud(c, cached_clouds(home)) for c in clouds]
    files = [ACCELERATORS, *(f"{c}/vms.csv" for c in dict.fromkeys(names))]
    dest_root = cache_dir(home) / SCHEMA
    results: list[FileResult | None] = [None] * len(files)
    limiter = anyio.CapacityLimiter(_CONCURRENCY)
    headers = {"User-Agent": "stix-catalog-fetch"}
    import aiohttp

    async with aiohttp.ClientSession(headers=headers) as session:

        async def run(i: int, relative: str) -> None:
            results[i] = await _fetch_one(
                session, limiter, base_url, dest_root, relative, file_timeout
            )

        async with anyio.create_task_group() as tg:
            for i, relative in enumerate(files):
                tg.start_soon(run, i, relative)
    return UpdateReport([r for r in results if r is not None])
