"""The actor base: one task per object, fed by a mailbox, persisted as one versioned row.

Handling a message: decide the next state from the transition table → write it with a
conditional update → do side effects outside any transaction → feed results back as messages.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Callable
from typing import Any, ClassVar

import anyio
import structlog
from anyio.abc import TaskGroup

from stixd.runtime.clock import Clock, RealClock
from stixd.runtime.machine import Machine
from stixd.runtime.mailbox import Envelope, Mailbox
from stixd.store.db import Row, Store
from stixproto.errors import InternalError, StixError
from stixproto.messages import ErrorReply


class Stop:
    """Put in a mailbox to end an actor without a state change (daemon shutdown, tests)."""


class BadRow(Exception):
    """A stored row this actor kind never writes: the row is quarantined, not run."""


class Actor(abc.ABC):
    kind: ClassVar[str]
    machine: ClassVar[Machine[Any, Any]]
    state_type: ClassVar[type[enum.Enum]]

    def __init__(self, row: Row, store: Store, log: structlog.stdlib.BoundLogger) -> None:
        problem = self.row_problem(row)
        if problem is not None:
            raise BadRow(f"the stored row is not valid: {problem}")
        self.row = row
        self.store = store
        self.log = log.bind(kind=self.kind, id=row.id)
        self._tg: TaskGroup | None = None
        self._mailbox: Mailbox | None = None
        self._timers: dict[str, anyio.CancelScope] = {}
        self._clock: Clock = RealClock()

    @property
    def id(self) -> str:
        return self.row.id

    @property
    def state(self) -> Any:
        return self.state_type(self.row.state)

    @staticmethod
    @abc.abstractmethod
    def is_terminal(state: Any) -> bool: ...

    @classmethod
    def row_problem(cls, row: Row) -> str | None:
        """What makes `row` one this kind never writes; None if it is sound."""
        try:
            state = cls.state_type(row.state)
        except ValueError:
            return f"its state {row.state!r} is not a {cls.kind} state"
        if cls.is_terminal(state) != row.terminal:
            return f"its terminal flag ({int(row.terminal)}) disagrees with its state {row.state}"
        expected = cls.parent_of(row)
        if row.parent != expected:
            return f"its parent is {row.parent!r}, not {expected!r}"
        return None

    @classmethod
    def parent_of(cls, row: Row) -> str | None:
        """The parent column this kind writes for `row` (none, unless a kind says so)."""
        return None

    # -- state ---------------------------------------------------------------------------

    async def transition(
        self,
        event: enum.Enum,
        why: str = "",
        *,
        new_spec: dict[str, Any] | None = None,
        **data: Any,
    ) -> Any:
        """Move along the table; the write fails (StaleWrite) if someone else wrote first.
        `new_spec` replaces the spec in the same write (one that forgets a secret)."""
        new_state = self.machine.next(self.state, event)
        merged = {**self.row.data, **data}
        self.row = await self.store.update(
            self.row,
            event=event.value,
            state=new_state.value,
            terminal=self.is_terminal(new_state),
            spec=new_spec,
            data=merged,
            why=why,
        )
        self.log.info("transition", on=event.value, to=new_state.value, why=why)
        return new_state

    async def save(self, *, spec: dict[str, Any] | None = None, **data: Any) -> None:
        """Persist data that is not a state change (no event)."""
        self.row = await self.store.update(
            self.row,
            event="save",
            spec=spec,
            data={**self.row.data, **data},
            record_event=False,
        )

    # -- lifecycle -----------------------------------------------------------------------

    async def reconcile(self) -> None:  # noqa: B027 - optional hook
        """Look at reality before acting on the stored state (called at every (re)start)."""

    @abc.abstractmethod
    async def handle(self, message: Any) -> None: ...

    async def given_up(self, reason: str) -> None:  # noqa: B027 - optional hook
        """The supervisor stopped restarting this actor: record it where users look."""

    def done(self) -> bool:
        """An actor whose work is over leaves the supervisor; by default at a terminal state."""
        return self.row.terminal

    async def run(
        self,
        mailbox: Mailbox,
        gate: anyio.CapacityLimiter | None = None,
        clock: Clock | None = None,
    ) -> None:
        """Reconcile (at most `gate` actors at once, so a boot with thousands of rows does not
        hit every provider at the same instant), then handle messages until done; timers run
        on `clock` (the supervisor's)."""
        self._mailbox = mailbox
        if clock is not None:
            self._clock = clock
        async with anyio.create_task_group() as tg:
            self._tg = tg
            if gate is None:
                await self.reconcile()
            else:
                async with gate:
                    await self.reconcile()
            while not self.done():
                message = await mailbox.receive.receive()
                if isinstance(message, Stop):
                    break
                try:
                    await self.handle(message)
                except StixError as exc:
                    # the caller's mistake or the infra's refusal: answer it, the actor is fine
                    if not isinstance(message, Envelope):
                        raise
                    message.answer(error_reply(exc))
                except Exception as exc:
                    if isinstance(message, Envelope):
                        message.answer(error_reply(exc))
                    raise
            tg.cancel_scope.cancel()

    # -- messages and timers -------------------------------------------------------------

    def tell(self, message: Any) -> None:
        assert self._mailbox is not None, "actor is not running"
        self._mailbox.put(message)

    def start_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """A helper task owned by this actor (a watcher, a timer); it dies with the actor."""
        assert self._tg is not None, "actor is not running"
        self._tg.start_soon(fn, *args)

    def after(self, name: str, delay: float, message: Any) -> None:
        """Deliver `message` to this actor after `delay` seconds, replacing a timer of that name."""
        self.cancel_timer(name)
        scope = anyio.CancelScope()
        self._timers[name] = scope
        clock = self._clock
        due = clock.now() + delay  # from now, not from when the timer's task first runs

        async def fire() -> None:
            with scope:
                await clock.sleep(due - clock.now())
                if self._timers.get(name) is scope:
                    del self._timers[name]
                self.tell(message)

        self.start_soon(fire)

    def cancel_timer(self, name: str) -> None:
        scope = self._timers.pop(name, None)
        if scope is not None:
            scope.cancel()


def error_reply(exc: BaseException) -> ErrorReply:
    if isinstance(exc, StixError):
        return ErrorReply(code=exc.code, message=exc.message)
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            if isinstance(inner, StixError):
                return error_reply(inner)
    return ErrorReply(
        code=InternalError.code,
        message=f"internal error ({type(exc).__name__}: {exc}); see `stixctl daemon logs`",
    )
