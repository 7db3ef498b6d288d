"""`stixd.catalog_fetch.update` against a real aiohttp server on 127.0.0.1.

The server serves the shared catalogs under /ok/ and misbehaves under the other prefixes: 404,
500, an HTML page, a CSV with a bad row, and an answer that never comes.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from stixd.catalog_fetch import FileResult, UpdateReport, update
from stixd.planner.catalog import Catalog, CatalogError, open_catalog
from stixd.providers.all import infras
from tests.test_catalog import LAMBDA_HEADER, shared_catalogs

DEFAULTS = infras().fetched_by_default()
"""What the daemon fetches into an empty cache: the registry's big three."""

pytestmark = pytest.mark.anyio
DAY = 86400.0


class CatalogServer:
    """A loopback HTTP server; ``url(mode)`` is a catalog base URL that behaves as ``mode``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.release = asyncio.Event()  # the slow handler answers only at teardown
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        mode, rel = request.match_info["mode"], request.match_info["rel"]
        if mode == "ok":
            path = self.root / rel
            return web.FileResponse(path) if path.is_file() else web.Response(status=404)
        if mode == "missing":
            return web.Response(status=404, text="Not Found")
        if mode == "broken":
            return web.Response(status=500, text="oops")
        if mode == "garbage":
            return web.Response(text="<html><body>rate limited</body></html>")
        if mode == "badrow":
            return web.Response(text=f"{LAMBDA_HEADER}\na,,,4,16,0.2,r,,\nb,,,4,16,free,r,,\n")
        await self.release.wait()  # "slow"
        return web.Response(status=503)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/{mode}/{rel:.*}", self.handle)
        self.runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]

    async def stop(self) -> None:
        self.release.set()
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    def url(self, mode: str) -> str:
        return f"http://127.0.0.1:{self.port}/{mode}"


@pytest.fixture
async def server() -> AsyncIterator[CatalogServer]:
    srv = CatalogServer(shared_catalogs())
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


def result(report: UpdateReport, file: str) -> FileResult:
    (found,) = [r for r in report.results if r.file == file]
    return found


def cache_file(home: Path, rel: str) -> Path:
    return home / "catalogs" / "v8" / rel


def leftovers(home: Path) -> list[str]:
    return [p.name for p in (home / "catalogs").rglob("*") if p.name.endswith((".part", ".tmp"))]


async def test_fetch_into_an_empty_home_then_load_with_the_server_gone(
    server: CatalogServer, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    report = await update(home, ["aws", "gcp", "nebius"], base_url=server.url("ok"))
    assert report.ok, report.render()
    assert [r.file for r in report.results] == [
        "common/accelerators.csv",
        "aws/vms.csv",
        "gcp/vms.csv",
        "nebius/vms.csv",
    ]
    for rel in ("aws/vms.csv", "nebius/vms.csv", "common/accelerators.csv"):
        # byte for byte, CRLF line ends (nebius) included
        assert cache_file(home, rel).read_bytes() == (server.root / "v8" / rel).read_bytes()
        assert (result(report, rel).age_seconds or 0) < 60
    assert result(report, "aws/vms.csv").size == (server.root / "v8/aws/vms.csv").stat().st_size

    await server.stop()
    catalog = open_catalog(home, {})  # no STIX_CATALOG_DIR: the cache alone
    assert catalog.clouds() == ["aws", "gcp", "nebius"]
    assert len(catalog.offers("aws")) == 447
    assert len(catalog.offers("gcp")) == 561
    assert catalog.canonical_accelerator("l40s") == "L40S"
    assert catalog.problems() == []
    assert (catalog.age("nebius") or 0) < 60

    again = await update(home, ["nebius"], base_url=server.url("ok"), file_timeout=5)
    assert not again.ok
    assert "could not fetch" in result(again, "nebius/vms.csv").message
    assert len(open_catalog(home, {}).offers("nebius")) == 61


@pytest.mark.parametrize(
    ("mode", "says"),
    [
        ("missing", "answered HTTP 404; check the cloud name and the catalog URL"),
        ("broken", "answered HTTP 500; try later"),
        ("garbage", "line 1: the header lacks column(s) InstanceType"),
        ("badrow", "line 3, column 'Price': expected a number, got 'free'"),
        ("slow", "did not answer within 0.3 s"),
    ],
)
async def test_a_bad_answer_is_reported_and_leaves_the_cache_intact(
    server: CatalogServer, tmp_path: Path, mode: str, says: str
) -> None:
    home = tmp_path / "home"
    assert (await update(home, ["nebius"], base_url=server.url("ok"))).ok
    before = cache_file(home, "nebius/vms.csv").read_bytes()

    report = await update(home, ["nebius"], base_url=server.url(mode), file_timeout=0.3)
    r = result(report, "nebius/vms.csv")
    assert not r.ok and not report.ok
    assert says in r.message, r.message
    assert r.message.endswith("; the cached copy is unchanged.")
    assert r.age_seconds is not None  # the old copy is still there, and its age is told
    assert cache_file(home, "nebius/vms.csv").read_bytes() == before
    assert leftovers(home) == []
    assert len(open_catalog(home, {}).offers("nebius")) == 61


async def test_a_failed_first_fetch_writes_nothing(server: CatalogServer, tmp_path: Path) -> None:
    home = tmp_path / "home"
    report = await update(home, ["lambda"], base_url=server.url("missing"))
    assert [(r.file, r.ok, r.age_seconds) for r in report.results] == [
        ("common/accelerators.csv", False, None),
        ("lambda/vms.csv", False, None),
    ]
    assert not cache_file(home, "lambda/vms.csv").exists()
    catalog = open_catalog(home, {})
    assert catalog.problems()[0].startswith("No instance catalogs found")


async def test_age_of_the_cache_is_reported_and_judged_stale(
    server: CatalogServer, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    assert (await update(home, ["hyperbolic", "mithril"], base_url=server.url("ok"))).ok
    old = cache_file(home, "mithril/vms.csv")
    now = old.stat().st_mtime
    os.utime(old, (now - 10 * DAY, now - 10 * DAY))

    catalog = Catalog(open_catalog(home, {}).sources, clock=lambda: now)
    assert catalog.age("mithril") == pytest.approx(10 * DAY)
    assert catalog.age("hyperbolic") == pytest.approx(0, abs=5)
    assert catalog.problems() == [
        "The mithril catalog is 10 days old (older than 7); "
        "run `stixctl catalog update mithril` to refresh it."
    ]
    failed = await update(home, ["mithril"], base_url=server.url("broken"))
    assert result(failed, "mithril/vms.csv").age_seconds == pytest.approx(10 * DAY, abs=60)

    refreshed = await update(home, ["mithril"], base_url=server.url("ok"))
    assert (result(refreshed, "mithril/vms.csv").age_seconds or 0) < 60
    assert open_catalog(home, {}).problems() == []


async def test_no_clouds_named_refreshes_the_cached_ones_or_the_big_three(
    server: CatalogServer, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    first = await update(home, None, defaults=DEFAULTS, base_url=server.url("ok"))
    assert [r.file for r in first.results] == [
        "common/accelerators.csv",
        "aws/vms.csv",
        "azure/vms.csv",
        "gcp/vms.csv",
    ]
    assert first.ok
    cache_file(home, "azure/vms.csv").unlink()
    cache_file(home, "gcp/vms.csv").unlink()
    second = await update(home, None, defaults=DEFAULTS, base_url=server.url("ok"))
    assert [r.file for r in second.results] == ["common/accelerators.csv", "aws/vms.csv"]


async def test_an_unknown_cloud_is_refused_before_any_fetch(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match=r"Unknown cloud 'nebuis' \(did you mean 'nebius'\?\)"):
        await update(tmp_path / "home", ["nebuis"], base_url="http://127.0.0.1:9/never")
    assert not (tmp_path / "home").exists()
