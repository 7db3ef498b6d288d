"""Wait until a stored row satisfies a condition, woken by the store's writes (no polling)."""

from __future__ import annotations

from collections.abc import Callable

import anyio

from stixd.store.db import Row, Store


class RowWatch:
    def __init__(self, store: Store, poll: float | None = None) -> None:
        """`poll`: read the row again at least this often (None: only when this process wrote
        it). Set when other replicas write the same database: their writes wake no one here."""
        self._store = store
        self._poll = poll
        self._waiters: dict[tuple[str, str], list[anyio.Event]] = {}
        store.on_write(self._written)

    def _written(self, row: Row) -> None:
        for event in self._waiters.pop((row.kind, row.id), []):
            event.set()

    async def wait_for(
        self, kind: str, id_: str, predicate: Callable[[Row | None], bool]
    ) -> Row | None:
        """Return the row once `predicate(row)` holds; cancel with a scope for a deadline."""
        while True:
            event = anyio.Event()
            self._waiters.setdefault((kind, id_), []).append(event)
            row = await self._store.get(kind, id_)
            if predicate(row):
                waiters = self._waiters.get((kind, id_), [])
                if event in waiters:
                    waiters.remove(event)
                return row
            if self._poll is None:
                await event.wait()
                continue
            with anyio.move_on_after(self._poll):
                await event.wait()
            waiters = self._waiters.get((kind, id_), [])
            if event in waiters:
                waiters.remove(event)
