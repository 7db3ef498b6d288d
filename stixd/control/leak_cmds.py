"""Leaks: things at a cloud carrying stix's tags for this user that no live cluster owns.

Every provider that finds leaks (``FindsLeaks``) is asked; one scan serves both the daemon's
periodic reconciler (``watch``: one loop per such provider, on its own policy) and
``stixctl leaks`` (``leaks_cmd``); the last findings stay on the app for ``stixctl status`` to
mention. Each leak is priced from the catalog (per hour, on-demand or spot as the instance runs).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Awaitable, Callable, Collection
from typing import Any

import anyio

from stixd.actors.specs import ClusterSpec, spec_or_none
from stixd.app import App
from stixd.planner.catalog import CatalogError
from stixd.planner.pricing import Prices, hourly_price
from stixd.providers.abilities import FindsLeaks, Leak, NeedsCredentials
from stixd.store.db import Row
from stixproto import messages as m
from stixproto.errors import ProvisionError, StixError

Emit = Callable[[Any], Awaitable[None]]


def finders(app: App) -> dict[str, FindsLeaks]:
    """The providers here that can list what they made, by infra name."""
    return {name: p for name, p in app.providers.items() if isinstance(p, FindsLeaks)}


async def _live_clusters(app: App, infra: str) -> set[str]:
    """Clusters that own their machines; a quarantined one may be on any infra (its row may
    not say), so it owns what carries its name until the user removes it."""
    rows = await app.store.rows("cluster", include_terminal=False)
    return {r.id for r in rows if r.quarantined or _provider(r) == infra}


def _provider(row: Row) -> str | None:
    spec = spec_or_none(row, ClusterSpec)
    return spec.provider if spec is not None else None


def _regions(app: App, infra: str, provider: FindsLeaks) -> list[str]:
    """Where to look: where the provider made things, and the catalog's regions."""
    known = set(provider.regions())
    with contextlib.suppress(CatalogError):
        known |= {o.region for o in app.planner_catalog().offers(infra)}
    return sorted(known)


def _record(infra: str, leak: Leak, prices: Prices) -> m.LeakRecord:
    price = None
    if leak.instance_type:
        price = hourly_price(prices, leak.region, leak.instance_type, leak.spot)
    return m.LeakRecord(
        infra=infra,
        kind=leak.kind,
        id=leak.id,
        region=leak.region,
        cluster=leak.cluster,
        age_seconds=leak.age_s,
        instance_type=leak.instance_type,
        state=leak.state,
        spot=leak.spot,
        hourly_price=price,
    )


async def scan(
    app: App, *, terminate: bool, only: Collection[str] = (), infras: Collection[str] = ()
) -> m.LeakList:
    """Look in every region each leak-finding provider (of ``infras``, when given) knows of;
    with ``terminate``, terminate what was found (only the ids in ``only``, when given).

    The findings replace those infras' part of the app's last report (what `status` shows).
    An infra that cannot be asked is skipped, saying why, while the others are scanned; with
    one infra to scan, its ``ProvisionError`` is the answer.
    """
    now = time.time()
    found = {n: p for n, p in finders(app).items() if not infras or n in infras}
    if not infras:  # buckets of this home's that no storage owns (stixd.control.storage_cmds)
        buckets, deleted = await scan_buckets(app, terminate=terminate, only=only)
        if buckets and not found:
            return m.LeakList(leaks=buckets, terminated=deleted, scanned_at=now)
    if not found:
        return m.LeakList(leaks=[], skipped=["no provider here finds leaks"], scanned_at=now)
    records: list[m.LeakRecord] = []
    terminated: list[str] = []
    skipped: list[str] = []
    scanned: set[str] = set()
    async with app.leak_lock:
        for infra, provider in found.items():
            if isinstance(provider, NeedsCredentials):
                problem = provider.credentials_problem()
                if problem is not None:
                    if provider.regions():  # stix may have made something there: say why not
                        skipped.append(f"{infra}: {problem}")
                    continue  # never set up here (no kubeconfig, no AWS account): nothing to say
            try:
                new, gone = await _scan_one(app, infra, provider, terminate, only)
            except ProvisionError as exc:
                if len(found) == 1:
                    raise  # the one infra asked for could not be: the command fails, saying why
                skipped.append(f"{infra}: {exc.message}")  # the others still count
                continue
            records += new
            terminated += gone
            scanned.add(infra)
        before = app.leak_report.leaks if app.leak_report else []
        kept = [r for r in before if r.infra not in scanned]
        left = [r for r in records if r.id not in set(terminated)]
        app.leak_report = m.LeakList(leaks=kept + left, scanned_at=now)
    if not infras:
        records, terminated = buckets + records, deleted + terminated
    return m.LeakList(leaks=records, terminated=terminated, skipped=skipped, scanned_at=now)


async def scan_buckets(
    app: App, *, terminate: bool, only: Collection[str] = ()
) -> tuple[list[m.LeakRecord], list[str]]:
    """The leaked buckets (and those deleted), which replace the buckets of the app's last
    report."""
    from stixd.control.storage_cmds import bucket_leaks

    async with app.leak_lock:
        found, deleted = await bucket_leaks(app, terminate=terminate, only=only)
        for rec in found:
            app.log.warning("leak_found", infra=rec.infra, kind=rec.kind, leak_id=rec.id)
        before = app.leak_report.leaks if app.leak_report else []
        kept = [r for r in before if r.kind != "bucket"]
        left = [r for r in found if r.id not in set(deleted)]
        app.leak_report = m.LeakList(leaks=kept + left, scanned_at=time.time())
    return found, deleted


async def _scan_one(
    app: App, infra: str, provider: FindsLeaks, terminate: bool, only: Collection[str]
) -> tuple[list[m.LeakRecord], list[str]]:
    """What ``provider`` has that no live cluster owns, and the ids terminated."""
    policy = provider.leak_policy()
    found = await provider.leaks(
        _regions(app, infra, provider), await _live_clusters(app, infra), policy.min_age_s
    )
    prices = app.prices(infra)
    for leak in found:
        app.log.warning("leak_found", infra=infra, **_fields(leak))
    doomed = [leak for leak in found if not only or leak.id in only] if terminate else []
    if doomed:
        await provider.clean_leaks(doomed)
        app.log.warning(
            "leaks_terminated", infra=infra, count=len(doomed), ids=[x.id for x in doomed]
        )
    return [_record(infra, leak, prices) for leak in found], [leak.id for leak in doomed]


async def leaks_cmd(app: App, req: m.Leaks, emit: Emit) -> m.LeakList:
    if req.terminate:
        what = f"{len(req.ids)} confirmed" if req.ids else "any"
        await emit(m.Progress(f"Looking for leaked instances; terminating {what} found..."))
    return await scan(app, terminate=req.terminate, only=req.ids)


async def watch(app: App) -> None:
    """The leak reconciler: for each provider that finds leaks, a scan every
    ``check_every_s`` of its policy (terminating what it finds when the policy says so), and
    the object stores' buckets on config ``storage:``'s policy. Runs
    until cancelled; a failed scan is logged and the next one tries again."""
    async with anyio.create_task_group() as tg:
        for infra, provider in finders(app).items():
            tg.start_soon(_watch_one, app, infra, provider)
        tg.start_soon(_watch_buckets, app)


async def _watch_buckets(app: App) -> None:
    """Buckets' leaks, on config ``storage:``'s policy (asking only the stores set up here)."""
    from stixd.actors.storage_use import configured_stores

    policy = app.config.storage
    while True:
        await anyio.sleep(policy.leak_check_minutes * 60)
        if not configured_stores(app):
            continue
        try:
            await scan_buckets(app, terminate=policy.delete_leaks)
        except (StixError, OSError) as exc:
            app.log.warning("leak_check_failed", infra="buckets", error=str(exc))


async def _watch_one(app: App, infra: str, provider: FindsLeaks) -> None:
    while True:
        policy = provider.leak_policy()
        await anyio.sleep(policy.check_every_s)
        try:
            await scan(app, terminate=policy.terminate, infras=[infra])
        except ProvisionError as exc:
            app.log.warning("leak_check_failed", infra=infra, error=exc.message)


def _fields(leak: Leak) -> dict[str, Any]:
    out = dataclasses.asdict(leak)
    out["leak_id"] = out.pop("id")
    return out
