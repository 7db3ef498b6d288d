"""Which replica runs which actor, when several stixd share one PostgreSQL database.

Each live actor row has a lease row `(kind, id, owner, epoch, expires_at)`. A replica runs an
actor only while it holds the lease: it takes one when it inserts the row, or claims one that
has expired by the database's clock (never its own: clocks of replicas disagree), which bumps
the epoch. It renews every lease it holds in one UPDATE every third of the lease's time. Every
write of an actor row checks, in its own transaction, that the lease is still this replica's at
the epoch it took (`check`, under a share lock the claim of another replica waits behind): a
replica that was paused, or cut off, past its lease finds its write refused (`LostLease`) and
stands its actor down, on top of the row's version check.

A managed job of a live pool runs where its pool does, a service's replica where its service
does, and a cluster's job where its cluster does: they talk through in-process messages (a job
asks its pool for a worker, the pool tells it which; a replica tells its service it changed; a
cluster's health rounds and launches reach its jobs). So the lease of such a follower is
claimed only by the replica that holds its leader's, after the leader's (`claim_free` takes the
others first, then the followers of what it holds): survivors that split a dead replica's
leases never split a pool from its jobs, a service from its replicas nor a cluster from its
jobs.

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

_LEADER_OF_A = (
    "p.terminal = 0 AND ("
    "(a.kind = 'managed_job' AND p.kind = 'job_pool' AND p.id = json_extract(a.spec, '$.pool'))"
    " OR (a.kind = 'replica' AND p.kind = 'service' AND p.id = a.parent)"
    " OR (a.kind = 'job' AND p.kind = 'cluster' AND p.id = split_part(a.id, '/', 1)))"
)
"""`p` is the live actor `a` follows: a pool job's pool, a service replica's service, a
cluster job's cluster (its id is `cluster/uid/number`; leases exist only on PostgreSQL)."""
_LEADER = f"JOIN actors p ON {_LEADER_OF_A}"


class Leases:
    """The leases this replica (`owner`) holds, by (kind, id), with the epoch it took each at."""

    def __init__(self, backend: Backend, owner: str, seconds: float) -> None:
        self.backend = backend
        self.owner = owner
        self.seconds = seconds
        self.held: dict[Key, int] = {}
        self.fresh: set[Key] = set()
        """Taken since the last renewal began: maybe not committed when its UPDATE looked."""

    def _hold(self, key: Key, epoch: int) -> None:
        self.held[key] = epoch
        self.fresh.add(key)

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
        self._hold((kind, id_), int(found[0]))

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
        replica's from before a restart; True if taken (the epoch bumped). A follower (a job of a
        live pool, a replica of a live service) is taken only by the replica that holds its
        leader's lease (see the module)."""

        if (kind, id_) in self.held:
            return True
        found = await self.backend.fetch(
            "INSERT INTO leases (kind, id, owner, epoch, expires_at) "
            f"SELECT ?, ?, ?, 1, {NOW} + ? WHERE NOT EXISTS ("
            f"SELECT 1 FROM actors a {_LEADER} LEFT JOIN leases lp ON lp.kind = p.kind "
            "AND lp.id = p.id WHERE a.kind = ? AND a.id = ? "
            "AND (lp.owner IS NULL OR lp.owner <> ?)) "
            "ON CONFLICT (kind, id) DO UPDATE SET "
            "owner = EXCLUDED.owner, epoch = leases.epoch + 1, expires_at = EXCLUDED.expires_at "
            f"WHERE leases.expires_at < {NOW} OR leases.owner = EXCLUDED.owner "
            "RETURNING epoch",
            (kind, id_, self.owner, self.seconds, kind, id_, self.owner),
        )
        if not found:
            return False
        self._hold((kind, id_), int(found[0][0]))
        return True

    async def claim_free(self, *, own_too: bool) -> list[Key]:
        """Claim every live row's lease that is missing or expired (and, with `own_too`, at a
        replica's start, those this replica held before): the keys newly taken, whose actors
        this replica is now to run. Two statements: every row but the followers of live leaders,
        then the followers of the leaders this replica holds now (see the module)."""
        ours = " OR l.owner = ?" if own_too else ""
        free = f"(l.kind IS NULL OR l.expires_at < {NOW}{ours})"
        args: list[Any] = [self.owner, self.seconds]
        if own_too:
            args.append(self.owner)
        rows = (
            f"SELECT a.kind, a.id, ?, 1, {NOW} + ? FROM actors a "
            "LEFT JOIN leases l ON l.kind = a.kind AND l.id = a.id "
        )
        alone = (
            f"{rows}WHERE a.terminal = 0 AND {free} AND NOT EXISTS "
            f"(SELECT 1 FROM actors p WHERE {_LEADER_OF_A})"
        )
        followers = (
            f"{rows}{_LEADER} JOIN leases lp ON lp.kind = p.kind AND lp.id = p.id "
            f"AND lp.owner = ? WHERE a.terminal = 0 AND {free}"
        )
        taken: list[Key] = []
        for select, more in ((alone, []), (followers, [self.owner])):
            sql = (
                f"INSERT INTO leases (kind, id, owner, epoch, expires_at) {select} "
                "ON CONFLICT (kind, id) DO UPDATE SET owner = EXCLUDED.owner, "
                "epoch = leases.epoch + 1, expires_at = EXCLUDED.expires_at "
                f"WHERE leases.expires_at < {NOW} OR leases.owner = EXCLUDED.owner "
                "RETURNING kind, id, epoch"
            )
            # the leader's owner comes before the rows' own: the JOIN precedes the WHERE
            values = args[:2] + more + args[2:]
            for r in await self.backend.fetch(sql, values):
                self._hold((str(r[0]), str(r[1])), int(r[2]))
                taken.append((str(r[0]), str(r[1])))
        return taken

    async def renew(self) -> list[Key]:
        """Push back the expiry of every lease this replica holds, in one UPDATE; the keys it
        held and holds no more (taken over while this replica was paused or cut off)."""
        fresh, self.fresh = self.fresh, set()
        found = await self.backend.fetch(
            f"UPDATE leases SET expires_at = {NOW} + ? WHERE owner = ? RETURNING kind, id, epoch",
            (self.seconds, self.owner),
        )
        still = {(str(r[0]), str(r[1])): int(r[2]) for r in found}
        # a lease taken since the last renewal is judged at the next: its transaction (an
        # insert's) may not have committed when this UPDATE looked, and it runs a full term
        lost = [
            key
            for key, epoch in self.held.items()
            if still.get(key) != epoch and key not in fresh and key not in self.fresh
        ]
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
