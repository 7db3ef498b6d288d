"""Which replica runs which actor, when several stixd share one PostgreSQL database.

Each live actor row has a lease row `(kind, id, owner, epoch, expires_at)`. A replica runs an
actor only while it holds the lease: it takes one when it inserts the row, or claims one that
has expired by the database's clock (never its own: clocks of replicas disagree), which bumps
the epoch. It renews every lease it holds in one UPDATE every third of the lease's time. Every
write of an actor row checks, in its own transaction, that the lease is still this replica's at
the epoch it took (`check`, under a share lock the claim of another replica waits behind): a
replica that was paused, or cut off, past its lease finds its write refused (`LostLease`) and
stands its actor down, on top of the row's version check.

On SQLite (one daemon) none of this exists: the store has no `Leases` and pays nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from stixd.store.backend import Backend, Tx

NOW = "extract(epoch from clock_timestamp())"
"""The database's clock, in seconds: the one clock every replica agrees on."""


class LostLease(Exception):
    """Another replica took this actor over (or its lease is gone): this replica must stop
    running it, and its write was not made."""


Key = tuple[str, str]


class Leases:
    """The leases this replica (`owner`) holds, by (kind, id), with the epoch it took each at."""

    def __init__(self, backend: Backend, owner: str, seconds: float) -> None:
        self.backend = backend
        self.owner = owner
        self.seconds = seconds
        self.held: dict[Key, int] = {}

    def holds(self, kind: str, id_: str) -> bool:
        return (kind, id_) in self.held

    # -- inside a store write -------------------------------------------------------------

    async def take(self, tx: Tx, kind: str, id_: str) -> None:
        """A row this replica inserted is its own: the lease is taken (from whoever held one
        on a row of that key that is gone), in the insert's transaction."""
        found = await tx.one(
            "INSERT INTO leases (kind, id, owner, epoch, expires_at) "
            f"VALUES (?, ?, ?, 1, {NOW} + ?) ON CONFLICT (kind, id) DO UPDATE SET "
            "owner = EXCLUDED.owner, epoch = leases.epoch + 1, expires_at = EXCLUDED.expires_at "
            "RETURNING epoch",
            (kind, id_, self.owner, self.seconds),
        )
        assert found is not None
        self.held[(kind, id_)] = int(found[0])

    async def check(self, tx: Tx, kind: str, id_: str) -> None:
        """Refuse the write (`LostLease`) unless this replica still holds the lease at the
        epoch it took: a share lock on the lease row, so a claim waits for this write."""
        epoch = self.held.get((kind, id_))
        found = await tx.one(
            "SELECT epoch FROM leases WHERE kind = ? AND id = ? AND owner = ? FOR SHARE",
            (kind, id_, self.owner),
        )
        if epoch is None or found is None or int(found[0]) != epoch:
            self.held.pop((kind, id_), None)
            raise LostLease(f"{kind} {id_} is run by another replica now")

    @staticmethod
    async def drop(tx: Tx, kind: str, id_: str) -> None:
        """The row is deleted: so is its lease."""
        await tx.execute("DELETE FROM leases WHERE kind = ? AND id = ?", (kind, id_))

    # -- on their own ---------------------------------------------------------------------

    async def claim(self, kind: str, id_: str) -> bool:
        """Take the lease of an existing row if it has none, it expired, or it is this
        replica's from before a restart; True if taken (the epoch bumped)."""

        if (kind, id_) in self.held:
            return True
        found = await self.backend.fetch(
            "INSERT INTO leases (kind, id, owner, epoch, expires_at) "
            f"VALUES (?, ?, ?, 1, {NOW} + ?) ON CONFLICT (kind, id) DO UPDATE SET "
            "owner = EXCLUDED.owner, epoch = leases.epoch + 1, expires_at = EXCLUDED.expires_at "
            f"WHERE leases.expires_at < {NOW} OR leases.owner = EXCLUDED.owner "
            "RETURNING epoch",
            (kind, id_, self.owner, self.seconds),
        )
        if not found:
            return False
        self.held[(kind, id_)] = int(found[0][0])
        return True

    async def claim_free(self, *, own_too: bool) -> list[Key]:
        """Claim, in one statement, every live row's lease that is missing or expired (and,
        with `own_too`, at a replica's start, those this replica held before): the keys newly
        taken, whose actors this replica is now to run."""
        ours = " OR l.owner = ?" if own_too else ""
        args: list[Any] = [self.owner, self.seconds]
        if own_too:
            args.append(self.owner)
        sql = (
            "INSERT INTO leases (kind, id, owner, epoch, expires_at) "
            f"SELECT a.kind, a.id, ?, 1, {NOW} + ? FROM actors a "
            "LEFT JOIN leases l ON l.kind = a.kind AND l.id = a.id "
            f"WHERE a.terminal = 0 AND (l.kind IS NULL OR l.expires_at < {NOW}{ours}) "
            "ON CONFLICT (kind, id) DO UPDATE SET owner = EXCLUDED.owner, "
            "epoch = leases.epoch + 1, expires_at = EXCLUDED.expires_at "
            f"WHERE leases.expires_at < {NOW} OR leases.owner = EXCLUDED.owner "
            "RETURNING kind, id, epoch"
        )

        taken = [(str(r[0]), str(r[1]), int(r[2])) for r in await self.backend.fetch(sql, args)]
        for kind, id_, epoch in taken:
            self.held[(kind, id_)] = epoch
        return [(kind, id_) for kind, id_, _ in taken]

    async def renew(self) -> list[Key]:
        """Push back the expiry of every lease this replica holds, in one UPDATE; the keys it
        held and holds no more (taken over while this replica was paused or cut off)."""
        found = await self.backend.fetch(
            f"UPDATE leases SET expires_at = {NOW} + ? WHERE owner = ? RETURNING kind, id, epoch",
            (self.seconds, self.owner),
        )
        still = {(str(r[0]), str(r[1])): int(r[2]) for r in found}
        lost = [key for key, epoch in self.held.items() if still.get(key) != epoch]
        for key in lost:
            del self.held[key]
        return lost

    async def release(self, keys: Iterable[Key]) -> None:
        """Give up leases this replica no longer needs (its actors ended)."""
        for kind, id_ in keys:
            if self.held.pop((kind, id_), None) is not None:
                await self.backend.fetch(
                    "DELETE FROM leases WHERE kind = ? AND id = ? AND owner = ? RETURNING 1",
                    (kind, id_, self.owner),
                )

    async def release_all(self) -> None:
        """At a clean stop: every lease handed back, for another replica to claim at once."""
        self.held.clear()
        await self.backend.fetch("DELETE FROM leases WHERE owner = ? RETURNING 1", (self.owner,))

    async def owner_of(self, kind: str, id_: str) -> str | None:
        """The replica whose unexpired lease runs `kind id_`, if any."""
        found = await self.backend.fetch(
            f"SELECT owner FROM leases WHERE kind = ? AND id = ? AND expires_at >= {NOW}",
            (kind, id_),
        )
        return str(found[0][0]) if found else None
