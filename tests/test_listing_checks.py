"""A listing's records are checked sendable as one list (`quarantine.shown_each`, what
`status` does): a record that cannot be sent is still found alone and shown failed, and one
that cannot be built too, while the others are shown as built."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from stixd.actors import quarantine
from stixd.store.db import Row
from stixproto import messages as m
from tests.app_support import app_on_store

pytestmark = pytest.mark.anyio


def _build(row: Row) -> m.ClusterRecord:
    if row.id == "unbuildable":
        raise KeyError("nodes")
    price = math.inf if row.id == "unsendable" else 1.5
    return m.ClusterRecord(
        name=row.id,
        status="UP",
        infra="local",
        num_nodes=1,
        resources="cpus=1",
        launched_at=row.created_at,
        updated_at=row.updated_at,
        hourly_price=price,
    )


def _failed(row: Row, why: str) -> m.ClusterRecord:
    return m.ClusterRecord(
        name=row.id,
        status="FAILED",
        infra="-",
        num_nodes=0,
        resources="",
        launched_at=0.0,
        updated_at=0.0,
        last_error=why,
    )


async def test_an_unsendable_or_unbuildable_record_fails_alone_in_a_listing(
    tmp_path: Path,
) -> None:
    names = ["a", "unsendable", "b", "unbuildable", "c"]
    rows = [Row("cluster", n, "UP", 1, created_at=1.0, updated_at=2.0) for n in names]
    quarantined = Row("cluster", "held", "UP", 1, quarantined="its spec does not read")
    async with app_on_store(tmp_path) as app:
        shown = quarantine.shown_each(app, [*rows, quarantined], _build, _failed, m.ClusterRecord)
        healthy = quarantine.shown_each(app, [rows[0], rows[2]], _build, _failed, m.ClusterRecord)
    assert [r.name for r in shown] == [*names, "held"]
    by_name = {r.name: r for r in shown}
    for name in ("a", "b", "c"):
        assert by_name[name] == _build(
            Row("cluster", name, "UP", 1, created_at=1.0, updated_at=2.0)
        )
    assert by_name["unsendable"].status == "FAILED"
    assert "a number of it is inf" in (by_name["unsendable"].last_error or "")
    assert by_name["unbuildable"].status == "FAILED"
    assert "KeyError" in (by_name["unbuildable"].last_error or "")
    assert "its spec does not read" in (by_name["held"].last_error or "")
    assert [r.status for r in healthy] == ["UP", "UP"]
