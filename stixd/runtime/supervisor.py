"""Owns every actor: spawns them in one task group, restarts crashed ones within an intensity.

Restart strategy (written down, as OTP does): one-for-one, transient — an actor that returns
normally is not restarted; one that raises is restarted from its stored row, unless it crashed
more than `max_restarts` times within `within_seconds`, in which case it is marked failed with
the reason (an event on its history) and requests to it get that reason back.

A row that cannot be read or made into an actor, and an actor that failed that way without
ending its row, is quarantined: recorded in the store with the reason (so a restarted daemon
does not run it again), logged once, shown failed, and left for the user to remove. It fails
alone; every other actor starts as usual.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.lowlevel
import structlog
from anyio.abc import TaskGroup

from stixd.runtime.actor import Actor, BadRow, Stop, error_reply
from stixd.runtime.clock import Clock, RealClock
from stixd.runtime.mailbox import Envelope, Mailbox
from stixd.store.db import Row, Store
from stixd.store.leases import Leases, LostLease
from stixproto.messages import ErrorReply

GIVEN_UP_WITHIN_S = 120.0
"""Bound on an actor's last words (`Actor.given_up`), e.g. tearing down what it launched."""

Factory = Callable[[Row], Actor]


@dataclass(frozen=True)
class RestartPolicy:
    max_restarts: int = 5
    within_seconds: float = 60.0
    reconcile_concurrency: int = 32


class Child:
    """One supervised actor: its mailbox (which outlives restarts), the running actor, its
    recent crashes and, once it is held, why. Slotted, and its crash window and `finished`
    event made on first use: the daemon holds one per live row, ten thousands of them."""

    __slots__ = (
        "_crashes", "_finished", "_over", "actor", "failed", "id", "kind", "mailbox", "scope"
    )  # fmt: skip

    def __init__(self, kind: str, id: str) -> None:
        self.kind = kind
        self.id = id
        self.mailbox = Mailbox()
        self.actor: Actor | None = None
        self.failed: str | None = None
        self.scope: anyio.CancelScope | None = None
        """Cancels the running actor (its replica lost the lease: `stand_down`)."""
        self._crashes: deque[float] | None = None
        self._finished: anyio.Event | None = None
        self._over = False

    @property
    def crashes(self) -> deque[float]:
        """When it crashed within the restart-intensity window."""
        if self._crashes is None:
            self._crashes = deque()
        return self._crashes

    @property
    def finished(self) -> anyio.Event:
        """Set once the actor has ended, or its quarantine is recorded."""
        if self._finished is None:
            self._finished = anyio.Event()
            if self._over:
                self._finished.set()
        return self._finished

    def finish(self) -> None:
        self._over = True
        if self._finished is not None:
            self._finished.set()


def _cannot_start(exc: BaseException) -> str:
    if isinstance(exc, BadRow):
        return str(exc)
    return f"its actor cannot start: {_describe(exc)}"


def _describe(exc: BaseException) -> str:
    cause = root_cause(exc)
    return f"{type(cause).__name__}: {cause}"


def root_cause(exc: BaseException) -> BaseException:
    """The first real error inside (nested) exception groups: what a person needs to read."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


class Supervisor:
    def __init__(
        self,
        tg: TaskGroup,
        store: Store,
        log: structlog.stdlib.BoundLogger,
        policy: RestartPolicy,
        clock: Clock | None = None,
        leases: Leases | None = None,
    ) -> None:
        """`clock` (real time unless given) measures the restart-intensity window, bounds an
        actor's last words and runs every actor's timers. With `leases` (several replicas on
        one database), an actor runs only once this replica holds its lease, and stands down
        (ends, unrestarted, its requests answered) when the lease is lost."""
        self._tg = tg
        self._store = store
        self._log = log
        self._policy = policy
        self._clock: Clock = clock if clock is not None else RealClock()
        self.leases = leases
        self.children: dict[tuple[str, str], Child] = {}
        self.reconcile_gate = anyio.CapacityLimiter(policy.reconcile_concurrency)
        self._deferred: deque[tuple[Child, Actor, Factory]] = deque()
        self._running: dict[asyncio.Task[None], anyio.CancelScope] = {}
        self._owned = False
        self._closing = False
        self._broken: BaseException | None = None
        self._broke = anyio.Event()

    def get(self, kind: str, id_: str) -> Child | None:
        return self.children.get((kind, id_))

    def spawn(self, row: Row, factory: Factory | None, *, defer: bool = False) -> Child:
        """Start the actor of `row` (or find it running); a row that cannot be run is
        quarantined instead, and the child is returned failed with the reason. A `factory` of
        None means no actor kind is called `row.kind`. With `defer`, the actor is built (a
        bad row is found now) and can be told things, but runs from `start_deferred` on."""
        key = (row.kind, row.id)
        existing = self.children.get(key)
        if existing is not None and (existing.failed is None or row.quarantined is not None):
            return existing  # running, or quarantined and still held: nothing to start
        child = Child(kind=row.kind, id=row.id)
        self.children[key] = child
        if row.quarantined is not None:
            self._quarantine(child, row.quarantined)
        elif factory is None:
            self._quarantine(child, f"no actor kind is called {row.kind!r}")
        else:
            try:
                actor = factory(row)
            except Exception as exc:  # the row's own fault: it fails alone, with the reason
                self._quarantine(child, _cannot_start(exc))
            else:
                if defer:
                    self._deferred.append((child, actor, factory))
                else:
                    self._run(child, actor, factory)
        return child

    def _run(self, child: Child, actor: Actor, factory: Factory) -> None:
        """Supervise `actor` in a bare asyncio task owned by `_own` (the daemon and its tests
        run on asyncio, for aiosqlite), in a cancel scope of its own: an anyio task costs
        3.5 KB where this one costs under half, and the daemon holds one per live row, tens of
        thousands of them. Cancelled through the scope, never natively, so a shielded write
        (`GroupCommit.write`) still ends whole."""
        if not self._owned:
            self._owned = True
            self._tg.start_soon(self._own)
        scope = child.scope = anyio.CancelScope()
        if self._closing:
            scope.cancel()
        task = asyncio.get_running_loop().create_task(self._supervise(scope, child, actor, factory))
        self._running[task] = scope
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        del self._running[task]
        if not task.cancelled() and task.exception() is not None and self._broken is None:
            self._broken = task.exception()  # raised by `_own`, in the task group, as before
            self._broke.set()

    async def _own(self) -> None:
        """The owner of the actors' tasks, in the supervisor's task group: cancelled with it,
        it cancels them and waits until every one has ended; a supervising task that fails
        (a bug, not an actor's crash) fails the task group, as a task of it would."""
        try:
            await self._broke.wait()
        finally:
            self._closing = True
            with anyio.CancelScope(shield=True):
                while self._running:
                    for scope in self._running.values():
                        scope.cancel()
                    await asyncio.wait(list(self._running))
        assert self._broken is not None
        raise self._broken

    async def start_deferred(self, batch: int = 256) -> None:
        """Run the actors spawned with `defer`, `batch` at a time, the other tasks (the
        socket's) running between two batches: a boot with tens of thousands of rows answers
        while its actors start, and what is told to one meanwhile waits in its mailbox."""
        while self._deferred:
            for _ in range(min(batch, len(self._deferred))):
                self._run(*self._deferred.popleft())
            await anyio.lowlevel.checkpoint()

    def forget(self, kind: str, id_: str) -> None:
        """Drop a failed child (its row was removed): the next spawn starts afresh."""
        child = self.children.get((kind, id_))
        if child is not None and child.failed is not None:
            del self.children[(kind, id_)]

    def _quarantine(self, child: Child, reason: str) -> None:
        """Mark the child failed now, log it once, and record it in the store; `finished` is
        set once it is recorded."""
        child.failed = reason
        self._log.error("quarantined", kind=child.kind, id=child.id, reason=reason)
        self._tg.start_soon(self._record_quarantine, child, reason)

    async def _record_quarantine(self, child: Child, reason: str) -> None:
        try:
            await self._store.quarantine(child.kind, child.id, reason)
        except Exception:  # held in memory all the same; the store's trouble is logged
            self._log.exception("quarantine_not_recorded", kind=child.kind, id=child.id)
        finally:
            child.mailbox.close()
            child.finish()

    def tell(self, kind: str, id_: str, message: Any) -> bool:
        child = self.children.get((kind, id_))
        if child is None or child.failed is not None:
            return False
        child.mailbox.put(message)
        return True

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for kind, _ in self.children:
            out[kind] = out.get(kind, 0) + 1
        return out

    def stand_down(self, keys: list[tuple[str, str]]) -> None:
        """End the actors whose leases another replica took: unrestarted, nothing written."""
        for key in keys:
            child = self.children.get(key)
            if child is not None and child.scope is not None:
                self._log.warning("lease_lost", kind=key[0], id=key[1])
                child.scope.cancel()

    async def _lease_refused(self, child: Child) -> bool:
        """True (the actor must not run here) if another replica holds its lease."""
        assert self.leases is not None
        if await self.leases.claim(child.kind, child.id):
            return False
        self._log.info("run_elsewhere", kind=child.kind, id=child.id)
        return True

    async def stop_all(self) -> None:
        for child in list(self.children.values()):
            child.mailbox.put(Stop())

    async def _supervise(
        self, scope: anyio.CancelScope, child: Child, actor: Actor, factory: Factory
    ) -> None:
        """Run `actor` in `scope`, restarting it as the policy says. Its whole life in this
        one coroutine (no wrapper for the scope): a coroutine frame held by every live actor
        is memory held ten thousand times over."""
        with scope:
            quarantine: str | None = None
            try:
                if self.leases is not None and await self._lease_refused(child):
                    return
                while True:
                    child.actor = actor
                    try:
                        await actor.run(child.mailbox, self.reconcile_gate, self._clock)
                        if self.leases is not None and actor.done():
                            await self.leases.release([(child.kind, child.id)])
                        return
                    except Exception as exc:
                        if isinstance(root_cause(exc), LostLease):
                            self._log.warning("lease_lost", kind=child.kind, id=child.id)
                            return
                        reason = _describe(exc)
                        self._log.exception(
                            "actor_crashed", kind=child.kind, id=child.id, reason=reason
                        )
                        if self._too_many(child):
                            child.failed = (
                                f"{child.kind} {child.id} crashed {len(child.crashes)} times in "
                                f"{self._policy.within_seconds:g}s and was stopped; last error: "
                                f"{reason}"
                            )
                            await self._store.record(child.kind, child.id, "failed", child.failed)
                            try:
                                with self._clock.fail_after(GIVEN_UP_WITHIN_S):
                                    await actor.given_up(child.failed)
                            except Exception as hook_exc:
                                self._log.exception(
                                    "given_up_failed",
                                    kind=child.kind,
                                    id=child.id,
                                    reason=str(hook_exc),
                                )
                            self._drain(child, ErrorReply(code="internal", message=child.failed))
                            ended = await self._store.get(child.kind, child.id)
                            if ended is not None and not ended.terminal:
                                quarantine = child.failed  # not ended by its last words: kept aside
                            return
                        await self._store.record(child.kind, child.id, "restarted", reason)
                        current = await self._store.get(child.kind, child.id)
                        if current is None:
                            return
                        if current.quarantined is not None:
                            quarantine = current.quarantined
                            return
                        try:
                            actor = factory(current)
                        except Exception as exc:
                            quarantine = _cannot_start(exc)
                            return
            finally:
                child.actor = None
                if quarantine is not None:
                    self._drain(child, ErrorReply(code="internal", message=quarantine))
                    self._quarantine(child, quarantine)  # closes the mailbox once recorded
                else:
                    if child.failed is None and self.children.get((child.kind, child.id)) is child:
                        del self.children[(child.kind, child.id)]
                        self._drain(child, None)
                    child.mailbox.close()
                    child.finish()

    def _too_many(self, child: Child) -> bool:
        now = self._clock.now()
        child.crashes.append(now)
        while child.crashes and child.crashes[0] < now - self._policy.within_seconds:
            child.crashes.popleft()
        return len(child.crashes) > self._policy.max_restarts

    @staticmethod
    def _drain(child: Child, reply: ErrorReply | None) -> None:
        """Answer requests left in the mailbox of an actor that will not read them."""
        for message in child.mailbox.take_all():
            if isinstance(message, Envelope):
                message.answer(
                    reply
                    or error_reply(
                        RuntimeError(f"{child.kind} {child.id} finished before handling this")
                    )
                )
