"""show-gpus and the catalog commands: planner reads in a worker thread, fetches on demand."""

from __future__ import annotations

import functools
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import msgspec

from stixd.app import App
from stixd.catalog_fetch import ACCELERATORS, DEFAULT_BASE_URL, update
from stixd.planner.catalog import (
    SCHEMA,
    Catalog,
    CatalogError,
    CatalogMissing,
    cache_dir,
    catalog_root,
    render_show_gpus,
    show_gpus,
    show_machine,
)
from stixd.planner.catalog.catalog import ENV_DIR
from stixd.planner.local_fit import local_offer
from stixd.providers.abilities import ShowsGpus
from stixproto import messages as m
from stixproto.errors import InvalidConfig, InvalidRequest, TaskFieldError
from stixproto.reports import CatalogAge
from stixproto.task.parsing import Placement, parse_infra

Emit = Callable[[Any], Awaitable[None]]
T = TypeVar("T")
URL_ENV = "STIX_CATALOG_URL"  # a mirror of the public catalog (…/catalogs, holding v8/<cloud>/)


def _base_url() -> str:
    return os.environ.get(URL_ENV) or DEFAULT_BASE_URL


CATALOG_REQUESTS = (m.Launch, m.JobsLaunch, m.PoolApply, m.PlanRequest, m.ShowGpus, m.CatalogStatus)
"""Requests answered from the catalog: a client's own STIX_CATALOG_DIR must be the daemon's."""


def _root(value: str) -> Path:
    try:
        return catalog_root(value).resolve()
    except CatalogError:
        return Path(value).expanduser().absolute()


def check_client_catalog(app: App, client_dir: str | None) -> None:
    """Refuse, in one sentence saying how to fix it, a client whose ``STIX_CATALOG_DIR`` names
    another catalog than the daemon reads; a client without one takes the daemon's.

    The daemon keeps one catalog rather than taking each client's: it plans again long after
    the client has gone (failover, managed-job recovery, pool workers, cost reports), and all
    of that must price and place from the catalog the user chose, not whichever shell spoke
    last.
    """
    if not client_dir:
        return
    try:
        theirs = catalog_root(client_dir).resolve()
    except CatalogError as exc:
        raise InvalidConfig(str(exc).rstrip(".")) from None
    ours_text = os.environ.get(ENV_DIR)
    ours = _root(ours_text) if ours_text else None
    if ours == theirs:
        return
    reads = (
        f"reads {ours / SCHEMA}"
        if ours is not None
        else f"was started without it and reads {cache_dir(app.home) / SCHEMA}"
    )
    raise InvalidConfig(
        f"this shell's {ENV_DIR} names {theirs / SCHEMA} but the running stixd {reads}; "
        f"run `stixctl daemon stop` and your command again to restart it with yours "
        f"(clusters and jobs keep running), or unset {ENV_DIR} to use the daemon's"
    )


def catalog_of(app: App) -> Catalog:
    """The daemon's catalog, opened once; `catalog update` replaces it."""
    try:
        return app.planner_catalog()
    except CatalogError as exc:
        raise InvalidRequest(str(exc)) from None


async def _fetch(app: App, clouds: list[str] | None, emit: Emit, looked_in: str) -> None:
    """Fetch what is missing; on failure say every place looked in and every URL tried."""
    await emit(
        m.Progress(f"Fetching the {', '.join(clouds) if clouds else 'default'} catalog(s)...")
    )
    try:
        report = await update(
            app.home, clouds, defaults=app.infras.fetched_by_default(), base_url=_base_url()
        )
    except CatalogError as exc:
        raise InvalidRequest(str(exc)) from None
    app.catalog = None
    if not report.ok:
        failed = sorted((r.file == ACCELERATORS, r.message) for r in report.results if not r.ok)
        tried = failed[0][1].removesuffix("; the cached copy is unchanged.")  # each names its URL
        raise InvalidRequest(
            f"the catalog is missing and could not be fetched: looked for {looked_in}, then "
            f"{tried}; set STIX_CATALOG_DIR to a folder holding v8/, STIX_CATALOG_URL to a "
            "mirror, or retry `stixctl catalog update`"
        )


async def with_catalog(
    app: App, emit: Emit, query: Callable[[Catalog], T], only: list[str] | None = None
) -> T:
    """Run `query` on the catalog in a worker thread, fetching what is missing on the way;
    ``only``: the clouds it reads (the catalogs of others are not refreshed first)."""
    await app.refresh_catalogs(only)
    catalog = catalog_of(app)
    if not catalog.clouds():
        await _fetch(app, None, emit, catalog.sources.looked_in("<cloud>/vms.csv"))
    for _ in range(3):  # each round may fetch one missing cloud's catalog
        catalog = catalog_of(app)
        try:
            return await anyio.to_thread.run_sync(functools.partial(query, catalog))
        except CatalogMissing as exc:
            looked_in = catalog.sources.looked_in(f"{exc.cloud}/vms.csv")
            await _fetch(app, [exc.cloud], emit, looked_in)
        except CatalogError as exc:
            raise InvalidRequest(str(exc)) from None
    raise InvalidRequest("the catalog kept changing while it was read; try again")


def _placement(infra: str | None) -> Placement | None:
    """``--infra`` as a task's ``infra`` reads (``k8s/CONTEXT`` too); None for none or one
    the catalog path judges."""
    if not infra:
        return None
    try:
        return parse_infra(infra, "--infra")
    except TaskFieldError:
        return None


async def show_gpus_cmd(app: App, req: m.ShowGpus, emit: Emit) -> m.Table:
    machine = app.default_infra
    place = _placement(req.infra)
    live = app.providers.get(place.cloud or "") if place is not None else None
    if place is not None and isinstance(live, ShowsGpus):  # what exists and is free now
        text, rows = await live.show_gpus(req.name, req.count, place.region)
        return m.Table(text=text, rows=rows)
    if (req.infra or "").strip().partition("/")[0].strip().lower() == machine:
        try:  # this machine, not a catalog: nothing to fetch
            rows = show_machine(local_offer(machine), req.name, req.count, req.all)
        except CatalogError as exc:
            raise InvalidRequest(str(exc)) from None
    else:
        rows = await with_catalog(
            app, emit, lambda c: show_gpus(c, req.name, req.count, req.infra, req.all)
        )
    return m.Table(text=render_show_gpus(rows), rows=[msgspec.to_builtins(r) for r in rows])


async def catalog_update(app: App, req: m.CatalogUpdate, emit: Emit) -> m.Table:
    try:
        report = await update(
            app.home,
            req.clouds or None,
            defaults=app.infras.fetched_by_default(),
            base_url=_base_url(),
        )
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
    lines.append(f"Read from {catalog.sources.looked_in('<cloud>/vms.csv')}.")
    lines += [f"! {p}" for p in problems]
    return m.Table(text="\n".join(lines), rows=rows, ok=not problems)
