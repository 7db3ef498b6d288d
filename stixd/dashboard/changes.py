"""What changed since a dashboard page last heard: the store's committed writes, by kind,
fanned out to each open event stream without ever blocking the writer.

A write only adds its kind to each listener's pending set and wakes it; the listener sends one
event for everything that piled up meanwhile. A burst of a thousand writes is one event per
page, and a page that reads slowly holds a set of a few names, never a queue.
"""

from __future__ import annotations

import asyncio

from stixd.store.db import Row, Store

INFRA = "infra"
"""Not a row kind: the dashboard's own cached `check` and `show-gpus` answers were refreshed."""


class Listener:
    """One open event stream: the kinds written since it last took them."""

    def __init__(self) -> None:
        self.pending: set[str] = set()
        self.woken = asyncio.Event()

    def add(self, kind: str) -> None:
        self.pending.add(kind)
        self.woken.set()

    async def take(self, wait: float) -> set[str]:
        """The kinds written since the last call, waiting up to `wait` s for one (an empty
        set when none came: time for a keep-alive)."""
        if not self.pending:
            try:
                await asyncio.wait_for(self.woken.wait(), wait)
            except TimeoutError:
                return set()
        taken, self.pending = self.pending, set()
        self.woken.clear()
        return taken


class Changes:
    """The store's writes, told to every `Listener` registered (at most `limit` at once)."""

    def __init__(self, store: Store, limit: int) -> None:
        self.limit = limit
        self.listeners: set[Listener] = set()
        store.on_write(self._written)

    def _written(self, row: Row) -> None:
        self.tell(row.kind)

    def tell(self, kind: str) -> None:
        for listener in self.listeners:
            listener.add(kind)

    def join(self) -> Listener | None:
        """A new listener, or None when `limit` streams are open already."""
        if len(self.listeners) >= self.limit:
            return None
        listener = Listener()
        self.listeners.add(listener)
        return listener

    def leave(self, listener: Listener) -> None:
        self.listeners.discard(listener)
