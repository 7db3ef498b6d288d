"""The workspaces admins define with `stixctl workspaces create|update|delete`.

They live in the store rather than in a config file so that every replica on one database sees
the same ones the moment a write commits: each replica reads its own config file, and an edit
to one replica's file would leave the others disagreeing about who may see what. Every write
holds the `workspaces` key (`Tx.serialize`), so two admins creating or deleting one name at
once, on one daemon or on two replicas, cannot both pass the check that guards it.
The SQL is portable (no SQLite-only functions but those stixd/store/dialect.py defines).
"""

from __future__ import annotations

from typing import Any

import msgspec

from stixd.store.backend import Tx
from stixd.store.db import Store
from stixd.store.views import WORKSPACE

KEY = "workspaces"
"""The key every write of a workspace holds (`Tx.serialize`)."""
LIVE_KINDS = ("cluster", "managed_job", "job_pool", "service")
"""What keeps a workspace in use: a cluster's jobs and a service's replicas live in those."""
SHOWN_LIVE = 20
"""Live objects named when a change is refused (and how many more there are)."""


class Exists(Exception):
    """`create` of a name already stored."""


class Missing(Exception):
    """`update` or `delete` of a name not stored."""


def _spec(value: dict[str, Any]) -> str:
    return msgspec.json.encode(value).decode()


async def stored(store: Store) -> list[tuple[str, str]]:
    """Every stored workspace: (name, its definition as JSON text), by name."""
    rows = await store.backend.fetch("SELECT name, spec FROM workspaces ORDER BY name")
    return [(str(r[0]), str(r[1])) for r in rows]


async def create(store: Store, name: str, spec: dict[str, Any], now: float) -> None:
    async def work(tx: Tx) -> None:
        await tx.serialize(KEY)
        if await tx.one("SELECT 1 FROM workspaces WHERE name=?", (name,)) is not None:
            raise Exists(name)
        await tx.execute(
            "INSERT INTO workspaces (name, spec, updated_at) VALUES (?,?,?)",
            (name, _spec(spec), now),
        )

    await store.backend.write(work)


async def put(
    store: Store, name: str, spec: dict[str, Any], now: float, *, implied: bool = False
) -> None:
    """Replace the definition of `name`; `Missing` if it is not stored, unless `implied` (a
    workspace that exists without a row, ``default``: the first update stores it)."""

    async def work(tx: Tx) -> None:
        await tx.serialize(KEY)
        changed = await tx.execute(
            "UPDATE workspaces SET spec=?, updated_at=? WHERE name=?", (_spec(spec), now, name)
        )
        if not changed:
            if not implied:
                raise Missing(name)
            await tx.execute(
                "INSERT INTO workspaces (name, spec, updated_at) VALUES (?,?,?)",
                (name, _spec(spec), now),
            )

    await store.backend.write(work)


async def delete(store: Store, name: str) -> None:
    async def work(tx: Tx) -> None:
        await tx.serialize(KEY)
        if not await tx.execute("DELETE FROM workspaces WHERE name=?", (name,)):
            raise Missing(name)

    await store.backend.write(work)


async def live_in(store: Store, name: str, default: str) -> list[tuple[str, str]]:
    """(kind, id) of up to `SHOWN_LIVE` + 1 live clusters, managed jobs and services made in
    workspace `name` (`default`: the one a row naming none is in)."""
    kinds = ",".join(f"'{k}'" for k in LIVE_KINDS)
    rows = await store.backend.fetch(
        f"SELECT a.kind, a.id FROM actors a WHERE a.terminal = 0 AND a.kind IN ({kinds}) "
        f"AND COALESCE({WORKSPACE}, ?) = ? ORDER BY a.kind, a.id LIMIT {SHOWN_LIVE + 1}",
        (default, name),
    )
    return [(str(r[0]), str(r[1])) for r in rows]
