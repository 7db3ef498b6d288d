"""An actor's helper tasks (a phase, a watcher): owned by the actor, ended with it, and a
helper that fails ends the actor, for its supervisor to restart it — a task group's contract.

Not an anyio task group: a group and an anyio task cost about 1 KB and 3.5 KB, and the daemon
holds an actor per live row and a helper or two per running job, tens of thousands of them. A
helper here is a bare asyncio task in a cancel scope of its own (about 1.7 KB), and the actor
runs in one cancel scope (its host), cancelled when a helper fails. Helpers are cancelled
through their scopes, never natively, so a shielded part of one (a write, a teardown) still
ends whole.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import anyio


class Helpers:
    __slots__ = ("_failure", "_running", "host")

    def __init__(self) -> None:
        self.host = anyio.CancelScope()
        """Where the actor runs: cancelled when a helper fails."""
        self._running: dict[asyncio.Task[None], anyio.CancelScope] | None = None
        """Made with the first helper: most actors run none while idle."""
        self._failure: BaseException | None = None

    def start_soon(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        scope = anyio.CancelScope()
        if self._failure is not None:
            scope.cancel()  # the actor is ending: its helper starts cancelled, as in a group
        task = asyncio.get_running_loop().create_task(_scoped(scope, fn, args))
        if self._running is None:
            self._running = {}
        self._running[task] = scope
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        running = self._running
        assert running is not None
        del running[task]
        if not running:
            self._running = None
        if task.cancelled():
            return
        failure = task.exception()
        if failure is not None and self._failure is None:
            self._failure = failure
            self.host.cancel()
            self._cancel_all()

    def _cancel_all(self) -> None:
        for scope in (self._running or {}).values():
            scope.cancel()

    async def close(self) -> None:
        """Cancel every helper and wait until each has ended (shielded: the actor may be
        cancelled itself)."""
        with anyio.CancelScope(shield=True):
            while self._running:
                self._cancel_all()
                await asyncio.wait(list(self._running))

    def raise_failure(self, ended_by: BaseException | None = None) -> None:
        """Raise what a helper failed with, if one did; beside `ended_by` (what the actor itself
        raised, if anything) in a group, as a task group raises its tasks' errors."""
        failure = self._failure
        if failure is None or isinstance(ended_by, anyio.get_cancelled_exc_class()):
            return  # the actor is cancelled from outside: that goes on up
        if ended_by is None or ended_by is failure:
            raise failure
        raise BaseExceptionGroup("an actor and its helper failed", [ended_by, failure])


async def _scoped(
    scope: anyio.CancelScope, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]
) -> None:
    with scope:
        await fn(*args)
