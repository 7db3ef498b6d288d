"""The store on PostgreSQL against the store on SQLite, in one run on one machine: writes per
second from many writers at once (inserts, then conditional updates, as actors make them),
and reads of 10,000 rows (one listing of every live row, and point reads), printed as ratios
of PostgreSQL to SQLite.

PostgreSQL is a throw-away server of its own (tests/pg_server.py) with fsync and synchronous
commits on, as a server in use runs; SQLite is the daemon's file in WAL mode. PostgreSQL's
writes are measured both ways the engine offers: a transaction per write on the pool (the
default) and group commits on one connection (`PgBackend(group=True)`).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import anyio

from stixd.store.chosen import open_postgres
from stixd.store.db import Row, Store, open_store
from tests import pg_server


async def _writes(store: Store, rows: int, writers: int) -> tuple[float, float]:
    """(inserts/s, updates/s) with `writers` writing at once."""
    made: list[Row] = []

    async def insert(w: int) -> None:
        for i in range(w, rows, writers):
            row = Row(kind="cluster", id=f"c{i:06d}", state="INIT", version=0,
                      spec={"name": f"c{i}", "nodes": 1}, data={"uid": i})  # fmt: skip
            made.append(await store.insert(row, "created"))

    async def update(w: int) -> None:
        for row in made[w::writers]:
            await store.update(row, event="up", state="UP", data={"uid": row.id, "up": True})

    rates = []
    for step in (insert, update):
        t0 = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for w in range(writers):
                tg.start_soon(step, w)
        rates.append(rows / (time.perf_counter() - t0))
    return rates[0], rates[1]


async def _reads(store: Store, rows: int, points: int) -> tuple[float, float]:
    """(seconds to list every live row, point reads per second)."""
    t0 = time.perf_counter()
    listed = await store.live_rows()
    whole = time.perf_counter() - t0
    assert len(listed) == rows, len(listed)
    t0 = time.perf_counter()
    for i in range(points):
        assert await store.get("cluster", f"c{(i * 7919) % rows:06d}") is not None
    return whole, points / (time.perf_counter() - t0)


async def _measure(
    opener: Callable[[], AbstractAsyncContextManager[Store]], rows: int, writers: int
) -> dict[str, float]:
    async with opener() as store:
        inserts, updates = await _writes(store, rows, writers)
        listing, points = await _reads(store, rows, 1000)
    return {"inserts/s": inserts, "updates/s": updates, "list s": listing, "gets/s": points}


@asynccontextmanager
async def _in(folder: Path) -> AsyncIterator[Store]:
    async with open_store(folder / "state.db") as store:
        yield store


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=10_000)
    p.add_argument("--writers", type=int, default=64)
    args = p.parse_args()
    found = pg_server.binaries()
    if found is None:
        raise SystemExit("no PostgreSQL here: apt-get install postgresql")
    server = pg_server.start(found, durable=True)
    try:
        with tempfile.TemporaryDirectory(prefix="stxbench") as folder:
            results = {
                "sqlite": anyio.run(_measure, lambda: _in(Path(folder)), args.rows, args.writers),
                "postgresql": anyio.run(
                    _measure, lambda: open_postgres(server.fresh()), args.rows, args.writers
                ),
                "postgresql group": anyio.run(
                    _measure,
                    lambda: open_postgres(server.fresh(), group=True),
                    args.rows,
                    args.writers,
                ),
            }
    finally:
        server.stop()
    base = results["sqlite"]
    print(f"{args.rows} rows, {args.writers} writers at once; ratios to SQLite (>1: more/longer)")
    print(f"{'':18}" + "".join(f"{k:>12}" for k in base))
    for name, got in results.items():
        cells = "".join(f"{got[k]:>12.1f}" if k != "list s" else f"{got[k]:>12.3f}" for k in got)
        print(f"{name:18}{cells}")
        if name != "sqlite":
            print(f"{'  vs sqlite':18}" + "".join(f"{got[k] / base[k]:>11.2f}x" for k in got))


if __name__ == "__main__":
    main()
