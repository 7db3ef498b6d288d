"""show-gpus and the catalog commands: planner reads in a worker thread, fetches on demand."""

from __future__ import annotations

import functools
import os
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import msgspec

from stixd.app import App
from stixd.catalog_fetch import DEFAULT_BASE_URL, update
from stixd.planner.catalog import (
    Catalog,
    CatalogError,
    CatalogMissing,
    render_show_gpus,
    show_gpus,
)
from stixproto import messages as m
from stixproto.errors import InvalidRequest
from stixproto.reports import CatalogAge

Emit = Callable[[Any], Awaitable[None]]
T = TypeVar("T")
URL_ENV = "STIX_CATALOG_URL"  # a mirror of the public catalog (…/catalogs, holding v8/<cloud>/)


def _base_url() -> str:
    return os.environ.get(URL_ENV) or DEFAULT_BASE_URL


def catalog_of(app: App) -> Catalog:
    """The daemon's catalog, opened once; `catalog update` replaces it."""
    try:
        return app.planner_catalog()
    except CatalogError as exc:
        raise InvalidRequest(str(exc)) from None


async def _fetch(app: App, clouds: list[str] | None, emit: Emit) -> None:
    await emit(
        m.Progress(f"Fetching the {', '.join(clouds) if clouds else 'default'} catalog(s)...")
    )
    try:
        report = await update(app.home, clouds, base_url=_base_url())
    except CatalogError as exc:
        raise InvalidRequest(str(exc)) from None
    app.catalog = None
    if not report.ok:
        failed = [r for r in report.results if not r.ok]
        raise InvalidRequest(
            f"the catalog is missing and could not be fetched ({failed[0].file}: "
            f"{failed[0].message}); set STIX_CATALOG_DIR or retry `stixctl catalog update`"
        )


async def with_catalog(app: App, emit: Emit, query: Callable[[Catalog], T]) -> T:
    """Run `query` on the catalog in a worker thread, fetching what is missing on the way."""
    if not catalog_of(app).clouds():
        await _fetch(app, None, emit)
    for _ in range(3):  # each round may fetch one missing cloud's catalog
        catalog = catalog_of(app)
        try:
            return await anyio.to_thread.run_sync(functools.partial(query, catalog))
        except CatalogMissing as exc:
            await _fetch(app, [exc.cloud], emit)
        except CatalogError as exc:
            raise InvalidRequest(str(exc)) from None
    raise InvalidRequest("the catalog kept changing while it was read; try again")


async def show_gpus_cmd(app: App, req: m.ShowGpus, emit: Emit) -> m.Table:
    rows = await with_catalog(
        app, emit, lambda c: show_gpus(c, req.name, req.count, req.infra, req.all)
    )
    return m.Table(text=render_show_gpus(rows), rows=[msgspec.to_builtins(r) for r in rows])


async def catalog_update(app: App, req: m.CatalogUpdate, emit: Emit) -> m.Table:
    try:
        report = await update(app.home, req.clouds or None, base_url=_base_url())
    except CatalogError as exc:
        raise InvalidRequest(str(exc)) from None
    app.catalog = None
    rows = [msgspec.to_builtins(r) for r in report.results]
    return m.Table(text=report.render(), rows=rows, ok=report.ok)


async def catalog_status(app: App, req: m.CatalogStatus, emit: Emit) -> m.Table:
    catalog = catalog_of(app)
    rows: list[dict[str, Any]] = []
    lines = []
    for cloud in catalog.clouds():
        age = catalog.age(cloud)
        rows.append(msgspec.to_builtins(CatalogAge(cloud=cloud, age_seconds=age)))
        lines.append(f"{cloud:14s} {'-' if age is None else f'{age / 3600:.1f} hours old'}")
    problems = catalog.problems()
    if not rows:
        lines.append("No catalog yet: run `stixctl catalog update` or set STIX_CATALOG_DIR.")
    lines += [f"! {p}" for p in problems]
    return m.Table(text="\n".join(lines), rows=rows, ok=not problems)
