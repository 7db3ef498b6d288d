"""Leaks: cloud instances carrying stix's tags for this user that no live cluster owns.

One scan serves both the daemon's periodic reconciler (``watch``) and ``stixctl leaks``
(``leaks_cmd``); the last scan's findings stay on the app for ``stixctl status`` to mention.
Each leak is priced from the catalog (per hour, on-demand or spot as the instance runs).
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
from stixd.providers.aws.leaks import Leak
from stixd.store.db import Row
from stixproto import messages as m
from stixproto.errors import ProvisionError

Emit = Callable[[Any], Awaitable[None]]
INFRA = "aws"


async def _live_clusters(app: App) -> set[str]:
    """Clusters that own their machines; a quarantined one may be on any infra (its row may
    not say), so it owns what carries its name until the user removes it."""
    rows = await app.store.rows("cluster", include_terminal=False)
    return {r.id for r in rows if r.quarantined or _provider(r) == INFRA}


def _provider(row: Row) -> str | None:
    spec = spec_or_none(row, ClusterSpec)
    return spec.provider if spec is not None else None


def _regions(app: App) -> list[str]:
    """Where to look: the default region, those of recorded clusters, the catalog's regions."""
    known = set(app.providers[INFRA].regions())  # type: ignore[attr-defined]
    with contextlib.suppress(CatalogError):
        known |= {o.region for o in app.planner_catalog().offers(INFRA)}
    return sorted(known)


def _record(leak: Leak, prices: Prices) -> m.LeakRecord:
    price = None
    if leak.instance_type:
        price = hourly_price(prices, leak.region, leak.instance_type, leak.spot)
    return m.LeakRecord(
        infra=INFRA,
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


async def scan(app: App, *, terminate: bool, only: Collection[str] = ()) -> m.LeakList:
    """Look in every region stix knows of; with ``terminate``, terminate what was found
    (only the ids in ``only``, when given).

    The findings replace the app's last report (what `status` shows). Raises
    ``ProvisionError`` when AWS cannot be asked.
    """
    provider: Any = app.providers.get(INFRA)
    now = time.time()
    if provider is None:
        return m.LeakList(leaks=[], skipped=[f"{INFRA}: not in this build"], scanned_at=now)
    problem = provider.credentials_problem()
    if problem is not None:
        return m.LeakList(leaks=[], skipped=[f"{INFRA}: {problem}"], scanned_at=now)
    cfg = app.config.aws
    async with app.leak_lock:
        found: list[Leak] = await provider.leaks(
            _regions(app), await _live_clusters(app), cfg.leak_min_age_minutes * 60
        )
        prices = app.prices(INFRA)
        records = [_record(leak, prices) for leak in found]
        for leak in found:
            app.log.warning("aws_leak", **_fields(leak))
        doomed = [leak for leak in found if not only or leak.id in only] if terminate else []
        terminated = [leak.id for leak in doomed]
        if doomed:
            await provider.clean_leaks(doomed)
            app.log.warning("aws_leaks_terminated", count=len(doomed), ids=terminated)
        left = [r for r in records if r.id not in set(terminated)]
        app.leak_report = m.LeakList(leaks=left, scanned_at=now)
        return m.LeakList(leaks=records, terminated=terminated, scanned_at=now)


async def leaks_cmd(app: App, req: m.Leaks, emit: Emit) -> m.LeakList:
    if req.terminate:
        what = f"{len(req.ids)} confirmed" if req.ids else "any"
        await emit(m.Progress(f"Looking for leaked instances; terminating {what} found..."))
    return await scan(app, terminate=req.terminate, only=req.ids)


async def watch(app: App) -> None:
    """The leak reconciler: a scan every ``aws.leak_check_minutes`` (terminating what it finds
    when ``aws.terminate_leaks``). Runs until cancelled; a failed scan is logged and the next
    one tries again."""
    cfg = app.config.aws
    while True:
        await anyio.sleep(cfg.leak_check_minutes * 60)
        try:
            await scan(app, terminate=cfg.terminate_leaks)
        except ProvisionError as exc:
            app.log.warning("aws_leak_check_failed", error=exc.message)


def _fields(leak: Leak) -> dict[str, Any]:
    out = dataclasses.asdict(leak)
    out["leak_id"] = out.pop("id")
    return out
