"""The store's look-ups for listings (`jobs queue`, `status`): filtered, ordered and cut in
SQL over the indexes of migration 3, so a default view reads the rows it shows and not the
whole history.

The partial indexes are used only when a query's WHERE names their kind and flag as the same
literals (a bound parameter cannot prove the index's condition), hence the literal SQL here.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Collection, Sequence

from stixd.store.db import _DAMAGED_FLAG, _SELECT, Row, Store

MANAGED_JOB = "managed_job"
PAGE = 500
"""Records per chunk of a streamed listing, and the most names asked in one query."""
READ_PAGE = 2000
"""Rows read per query of a streamed listing: each query is a trip to a reader's thread, so a
busy daemon answers sooner in fewer of them."""

NUMBER = "CAST(a.id AS INTEGER)"
"""A managed job's number, as the indexes `managed_jobs_by_number` hold it."""
OWNED_CLUSTER = (
    "CASE WHEN json_valid(a.spec) THEN "
    "CASE WHEN json_extract(a.spec, '$.pool') IS NULL "
    "THEN json_extract(a.spec, '$.cluster') ELSE '' END END"
)
"""The cluster a live managed job keeps up, as the index `live_managed_jobs_by_cluster` holds
it: '' for a job on a pool (its pool owns the workers), NULL when the spec does not say (a
row written before jobs stored their cluster, or one that cannot be read)."""


OWNER = "CASE WHEN json_valid(a.spec) THEN json_extract(a.spec, '$.owner') END"
"""A row's owner, as the index `actors_by_owner` holds it: NULL for a row from before owners
were kept (the local owner's)."""
WORKSPACE = "CASE WHEN json_valid(a.spec) THEN json_extract(a.spec, '$.workspace') END"

Where = tuple[str, list[object]]
"""More conditions of a query (`AND ...`, or ''), and their arguments."""
EVERY: Where = ("", [])


def owned(owner: str | None, *, local: bool, hidden: Collection[str], default: str) -> Where:
    """Conditions keeping the rows of `owner` (None: anyone's; `local`: the local owner, who
    also owns the rows that name none) outside the `hidden` workspaces (`default`: the one a
    row naming none is in)."""
    sql, args = "", list[object]()
    if owner is not None:
        sql += f" AND ({OWNER} = ? OR {OWNER} IS NULL)" if local else f" AND {OWNER} = ?"
        args.append(owner)
    if hidden:
        sql += f" AND COALESCE({WORKSPACE}, ?) NOT IN ({','.join('?' * len(hidden))})"
        args += [default, *sorted(hidden)]
    return sql, args


async def live_clusters_by_workspace(store: Store) -> list[tuple[str | None, int]]:
    """(workspace, live clusters in it) for each workspace named (NULL: none named)."""
    sql = (
        f"SELECT {WORKSPACE}, count(*) FROM actors a WHERE a.kind = 'cluster' "
        f"AND a.terminal = 0 GROUP BY {WORKSPACE}"
    )
    found = await store._tuples(sql)
    return [(r[0] if isinstance(r[0], str) else None, int(r[1])) for r in found]


async def live_clusters_of(store: Store, where: Where) -> set[str]:
    """The names of the live clusters `where` keeps (through `actors_by_owner`)."""
    sql = f"SELECT a.id FROM actors a WHERE a.kind = 'cluster' AND a.terminal = 0{where[0]}"
    return {str(r[0]) for r in await store._tuples(sql, where[1])}


def _jobs_where(live_only: bool) -> str:
    return f"a.kind = '{MANAGED_JOB}'" + (" AND a.terminal = 0" if live_only else "")


def _by_number(live_only: bool) -> str:
    """Rows of the jobs in their numbers' order, however few the planner guesses there are
    (without statistics it would sort the kind's rows instead)."""
    index = "live_managed_jobs_by_number" if live_only else "managed_jobs_by_number"
    return _SELECT.replace("FROM actors a", f"FROM actors a INDEXED BY {index}")


async def newest_managed_jobs(
    store: Store,
    *,
    live_only: bool,
    limit: int | None = None,
    below: int | None = None,
    where: Where = EVERY,
) -> list[Row]:
    """Managed jobs by number, newest first: at most `limit`, numbered below `below`."""
    sql = f"{_by_number(live_only)} WHERE {_jobs_where(live_only)}{where[0]}"
    args: list[object] = [*where[1]]
    if below is not None:
        sql += f" AND {NUMBER} < ?"
        args.append(below)
    sql += f" ORDER BY {NUMBER} DESC"
    if limit is not None:
        sql += " LIMIT ?"
        args.append(limit)
    return await store._fetch(sql, args)


async def damaged_managed_jobs(store: Store) -> list[Row]:
    """Managed jobs whose terminal flag is neither 0 nor 1: shown live (the store's rule)."""
    return [r for r in await store._fetch(_DAMAGED_FLAG) if r.kind == MANAGED_JOB]


async def count_managed_jobs(store: Store, *, live_only: bool, where: Where = EVERY) -> int:
    sql = f"SELECT count(*) FROM actors a WHERE {_jobs_where(live_only)}{where[0]}"
    found = await store._tuples(sql, where[1])
    return int(found[0][0]) if found else 0


async def managed_job_pages(
    store: Store, *, live_only: bool, where: Where = EVERY
) -> AsyncIterator[list[Row]]:
    """Every managed job, newest first, `READ_PAGE` rows at a time: each page is its own
    query (no read stays open while the caller sends), and a job is never listed twice."""
    below: int | None = None
    while True:
        page = await newest_managed_jobs(
            store, live_only=live_only, limit=READ_PAGE, below=below, where=where
        )
        if page:
            yield page
        numbers = [int(r.id) for r in page if r.id.isdigit()]
        if len(page) < READ_PAGE or not numbers:
            break
        below = min(numbers)
    if live_only:
        damaged = await damaged_managed_jobs(store)
        if damaged:
            yield damaged


async def ended_managed_jobs(store: Store, limit: int, where: Where = EVERY) -> list[Row]:
    """The `limit` newest managed jobs that ended."""
    sql = f"{_by_number(False)} WHERE a.kind = '{MANAGED_JOB}' AND a.terminal = 1{where[0]} "
    return await store._fetch(sql + f"ORDER BY {NUMBER} DESC LIMIT ?", [*where[1], limit])


async def jobs_keeping_up(store: Store, clusters: Sequence[str]) -> list[Row]:
    """The live managed jobs that may own one of `clusters`: those whose spec names it, and
    those whose spec does not say (the caller reads their cluster from the row)."""
    by_cluster = _SELECT.replace(
        "FROM actors a", "FROM actors a INDEXED BY live_managed_jobs_by_cluster"
    )
    live = f"{by_cluster} WHERE a.kind = '{MANAGED_JOB}' AND a.terminal = 0 AND {OWNED_CLUSTER}"
    rows = await store._fetch(f"{live} IS NULL")
    names = list(dict.fromkeys(clusters))
    for start in range(0, len(names), PAGE):
        part = names[start : start + PAGE]
        rows += await store._fetch(f"{live} IN ({','.join('?' * len(part))})", part)
    return rows


async def live_cluster_names(store: Store) -> tuple[list[str], list[str], set[str]]:
    """The live clusters' names, oldest first, in two: those no live managed job names as its
    own, and those one does; and the ids of those jobs. One pass over the listing index, one
    probe of the jobs' index per cluster. Pools' workers are not told apart here: there are
    few pools, and the caller reads their rows."""
    sql = (
        "SELECT c.id, (SELECT a.id FROM actors a WHERE a.kind = 'managed_job' "
        f"AND a.terminal = 0 AND {OWNED_CLUSTER} = +c.id LIMIT 1) "
        "FROM actors c INDEXED BY actors_listing WHERE c.kind = 'cluster' AND c.terminal = 0 "
        "ORDER BY c.created_at, c.id"
    )
    own: list[str] = []
    owned: list[str] = []
    owners: set[str] = set()
    for name, job in await store._tuples(sql):
        if job is None:
            own.append(name)
        else:
            owned.append(name)
            owners.add(job)
    own += [r.id for r in await store._fetch(_DAMAGED_FLAG) if r.kind == "cluster"]
    return own, owned, owners


class ClusterSplit:
    """`live_cluster_names`, kept between `status` calls until a write could change it: a
    cluster that starts or ends, a job that owns one and ends, a new job naming a live
    cluster. Asking it again costs one probe per cluster (tens of ms at 10,000); with
    thousands of managed jobs running and nothing starting or ending, it is not asked."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._kept: tuple[list[str], list[str], set[str]] | None = None
        self._live: set[str] = set()
        self._writes = 0
        store.on_write(self._written)

    def _written(self, row: Row) -> None:
        kept = self._kept
        if kept is None:  # being read: any write that could change it spoils the read
            ends_or_starts = row.terminal or row.version == 1  # a job never lives again
            if row.kind == "cluster" or (row.kind == MANAGED_JOB and ends_or_starts):
                self._writes += 1
            return
        _, _, owners = kept
        if row.kind == "cluster":
            changed = (row.id in self._live) == row.terminal
        elif row.kind == MANAGED_JOB:
            cluster = row.spec.get("cluster") if isinstance(row.spec, dict) else None
            ended = row.terminal and row.id in owners
            changed = ended or (not row.terminal and row.id not in owners and cluster in self._live)
        else:
            return
        if changed:
            self._kept = None
            self._writes += 1

    async def names(self) -> tuple[list[str], list[str]]:
        """(own, owned) as `live_cluster_names` has them."""
        if self._kept is None:
            writes = self._writes
            found = await live_cluster_names(self._store)
            if writes != self._writes:  # a write landed during the read: do not keep it
                return found[0], found[1]
            self._kept, self._live = found, {*found[0], *found[1]}
        own, owned, _ = self._kept
        return list(own), list(owned)


async def clusters_named(store: Store, names: Sequence[str], *, live_only: bool) -> list[Row]:
    """The cluster rows of `names` (those that exist), oldest first."""
    rows: list[Row] = []
    names = list(dict.fromkeys(names))
    for start in range(0, len(names), PAGE):
        part = names[start : start + PAGE]
        sql = f"{_SELECT} WHERE a.kind = 'cluster' AND a.id IN ({','.join('?' * len(part))})"
        rows += await store._fetch(sql, part)
    if live_only:
        rows = [r for r in rows if not r.terminal]
    return sorted(rows, key=lambda r: (r.created_at, r.id))


def _above(prefix: str) -> str:
    """The first text after every one that starts with `prefix`."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


async def rows_under_each(store: Store, kind: str, prefixes: Sequence[str]) -> list[Row]:
    """`Store.rows_under` for many prefixes (every cluster's jobs, `name/uid/`) in one query
    per `PAGE` of them, not one per prefix: each prefix is a range of the primary key."""
    rows: list[Row] = []
    wanted = list(dict.fromkeys(p for p in prefixes if p))
    for start in range(0, len(wanted), PAGE):
        part = wanted[start : start + PAGE]
        ranges = " OR ".join(["(a.kind = ? AND a.id >= ? AND a.id < ?)"] * len(part))
        sql = f"{_SELECT} WHERE {ranges} ORDER BY a.created_at, a.id"
        args = [x for p in part for x in (kind, p, _above(p))]
        rows += await store._fetch(sql, args)
    return rows


async def children_of(store: Store, kind: str, parents: Sequence[str]) -> list[Row]:
    """`Store.rows(kind, parent=...)` for many parents (every service's replicas) in one query
    per `PAGE` of them, oldest first."""
    rows: list[Row] = []
    wanted = list(dict.fromkeys(parents))
    for start in range(0, len(wanted), PAGE):
        part = wanted[start : start + PAGE]
        marks = ",".join("?" * len(part))
        sql = f"{_SELECT} WHERE a.kind = ? AND a.parent IN ({marks}) ORDER BY a.created_at, a.id"
        rows += await store._fetch(sql, [kind, *part])
    return rows


async def damaged_rows(store: Store) -> list[Row]:
    """The live rows whose terminal flag is neither 0 nor 1 (the store's `_DAMAGED_FLAG`), for
    a request to read once and hand to each look-up that must list them (`status` asked for
    them four times: its clusters, pools, replicas and rows of no kind)."""
    return await store._fetch(_DAMAGED_FLAG)


async def live_of_kinds(
    store: Store, kinds: Sequence[str], damaged: Sequence[Row]
) -> dict[str, list[Row]]:
    """`Store.rows(kind, include_terminal=False)` of each of `kinds` in one statement, with
    the `damaged` rows of each (as `damaged_rows` read them), each kind's oldest first."""
    marks = ",".join("?" * len(kinds))
    sql = f"{_SELECT} WHERE a.terminal=0 AND a.kind IN ({marks}) ORDER BY a.created_at, a.id"
    found: dict[str, list[Row]] = {kind: [] for kind in kinds}
    for row in [*await store._fetch(sql, list(kinds)), *damaged]:
        if row.kind in found:
            found[row.kind].append(row)
    if damaged:
        for rows in found.values():
            rows.sort(key=lambda r: (r.created_at, r.id))
    return found


async def live_rows_not_of(
    store: Store, kinds: Collection[str], damaged: Sequence[Row] | None = None
) -> list[Row]:
    """`Store.live_rows_not_of` as ranges of the live index between the known kinds: with a
    `NOT IN`, SQLite reads every live row (tens of ms at 10,000 jobs) to find none. `damaged`:
    the rows `damaged_rows` read for this request (read here when not given)."""
    known = sorted(set(kinds))
    between = ["a.kind < ?", *["a.kind > ? AND a.kind < ?"] * (len(known) - 1), "a.kind > ?"]
    args = [known[0], *[k for pair in itertools.pairwise(known) for k in pair], known[-1]]
    ranges = " OR ".join(f"(a.terminal = 0 AND {b})" for b in between)  # one index range each
    sql = f"{_SELECT} WHERE {ranges} ORDER BY a.created_at"
    rows = await store._fetch(sql, args)
    if damaged is None:
        damaged = await damaged_rows(store)
    strays = [r for r in damaged if r.kind not in known]
    return sorted([*rows, *strays], key=lambda r: r.created_at) if strays else rows
