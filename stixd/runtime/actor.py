"""The actor base: one task per object, fed by a mailbox, persisted as one versioned row.

Handling a message: decide the next state from the transition table → write it with a
conditional update → do side effects outside any transaction → feed results back as messages.
"""

from __future__ import annotations

import abc
import dataclasses
import enum
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import anyio
import msgspec
import structlog

from stixd.runtime.clock import Cancellable, Clock, RealClock
from stixd.runtime.helpers import Helpers
from stixd.runtime.machine import Machine
from stixd.runtime.mailbox import Envelope, Mailbox
from stixd.store.db import Row, Store
from stixproto.errors import InternalError, StixError
from stixproto.messages import ErrorReply


class Stop:
    """Put in a mailbox to end an actor without a state change (daemon shutdown, tests)."""


class BadRow(Exception):
    """A stored row this actor kind never writes: the row is quarantined, not run."""

    def __init__(self, problem: str) -> None:
        super().__init__(f"the stored row is not valid: {problem}")
        self.problem = problem


class Actor(abc.ABC):
    kind: ClassVar[str]
    machine: ClassVar[Machine[Any, Any]]
    state_type: ClassVar[type[enum.Enum]]

    spec_type: ClassVar[type[msgspec.Struct] | None] = None
    """What this kind stores in the spec column; None keeps it a plain dict."""
    data_type: ClassVar[type[msgspec.Struct] | None] = None
    """What this kind stores in the data column; None keeps it a plain dict."""
    spec: Any
    """The row's spec, decoded once as `spec_type` (a kind narrows the annotation)."""
    data: Any
    """The row's data, decoded once as `data_type`."""

    def __init__(self, row: Row, store: Store, log: structlog.stdlib.BoundLogger) -> None:
        self.row = row  # decoded here: a row this kind never writes raises BadRow
        self.store = store
        self._log = log
        self._helpers: Helpers | None = None
        self._mailbox: Mailbox | None = None
        self._timers: dict[str, Cancellable] | None = None
        self._clock: Clock = _REAL_CLOCK

    @property
    def log(self) -> structlog.stdlib.BoundLogger:
        """The daemon's logger bound with this actor's kind and id, bound when a line is
        logged: a bound logger kept by each of ten thousands of idle actors is memory spent
        for lines most of them never write."""
        return self._log.bind(kind=self.kind, id=self._row.id)

    @property
    def row(self) -> Row:
        """The row as last read or written. A kind with Structs keeps only those (the row's
        spec and data once as dicts besides would double what an idle actor holds), so its
        spec and data here are encoded from them on each read."""
        row = self._row
        if self.spec_type is None and self.data_type is None:
            return row
        return dataclasses.replace(row, spec=_stored(self.spec), data=_stored(self.data))

    @row.setter
    def row(self, row: Row) -> None:
        """A row read from the store (or written past this actor): decoded again."""
        self.spec, self.data = self.decode_row(row)
        self._row = self._kept(row)

    def _kept(self, row: Row) -> Row:
        """`row` as this actor keeps it: without the columns its Structs hold."""
        spec = _EMPTY if self.spec_type is not None else row.spec
        data = _EMPTY if self.data_type is not None else row.data
        if spec is row.spec and data is row.data:
            return row
        return dataclasses.replace(row, spec=spec, data=data)

    @property
    def id(self) -> str:
        return self._row.id

    @property
    def clock(self) -> Clock:
        """The clock this actor's timers run on (the supervisor's once it runs)."""
        return self._clock

    @property
    def state(self) -> Any:
        return self.state_type(self._row.state)

    @property
    def stored_state(self) -> str:
        """The state as stored, a string: no enum made (`/metrics` reads every actor's)."""
        return self._row.state

    @staticmethod
    @abc.abstractmethod
    def is_terminal(state: Any) -> bool: ...

    @classmethod
    def row_problem(cls, row: Row) -> str | None:
        """What makes `row` one this kind never writes; None if it is sound."""
        try:
            cls.decode_row(row)
        except BadRow as exc:
            return exc.problem
        return None

    @classmethod
    def decode_row(cls, row: Row) -> tuple[Any, Any]:
        """The row's spec and data as this kind's Structs; `BadRow` if the row is not one this
        kind writes (its state, terminal flag or parent, or a spec or data field)."""
        try:
            state = cls.state_type(row.state)
        except ValueError:
            raise BadRow(f"its state {row.state!r} is not a {cls.kind} state") from None
        if cls.is_terminal(state) != row.terminal:
            raise BadRow(
                f"its terminal flag ({int(row.terminal)}) disagrees with its state {row.state}"
            )
        expected = cls.parent_of(row)
        if row.parent != expected:
            raise BadRow(f"its parent is {row.parent!r}, not {expected!r}")
        return cls._decoded(row.spec, cls.spec_type, "spec"), cls._decoded(
            row.data, cls.data_type, "data"
        )

    @classmethod
    def _decoded(
        cls, stored: dict[str, Any], into: type[msgspec.Struct] | None, column: str
    ) -> Any:
        if into is None:
            return stored
        try:
            return msgspec.convert(stored, into)
        except msgspec.ValidationError as exc:
            raise BadRow(f"its {column} is not a {cls.kind} {column}: {exc}") from None

    def _written(self, record: Any, changes: dict[str, Any], column: str) -> tuple[Any, Any]:
        """(what to store, what it decodes to) for `record` with `changes`: encoded and read
        back through this kind's Struct, so a value it would not read is refused here, as the
        request's error, never stored for the next start to quarantine."""
        if not isinstance(record, msgspec.Struct):
            stored = {**record, **changes}
            return stored, stored
        changed = msgspec.structs.replace(record, **changes) if changes else record
        stored = msgspec.to_builtins(changed)
        try:
            return stored, msgspec.convert(stored, type(record))
        except msgspec.ValidationError as exc:
            raise InternalError(
                f"{self.kind} {self.id}: its new {column} is not valid: {exc}"
            ) from None

    async def _write(
        self,
        *,
        event: str,
        spec: Any = None,
        data: dict[str, Any],
        state: enum.Enum | None = None,
        why: str = "",
        record_event: bool = True,
    ) -> None:
        """One write of the row: a new spec and data fields (None and {}: unchanged)."""
        spec_stored, spec_read = (
            (None, self.spec) if spec is None else self._written(spec, {}, "spec")
        )
        data_stored, data_read = (
            (None, self.data) if not data else self._written(self.data, data, "data")
        )
        written = await self.store.update(
            self._row,
            event=event,
            state=None if state is None else state.value,
            terminal=None if state is None else self.is_terminal(state),
            spec=_stored(self.spec) if spec_stored is None else spec_stored,
            data=_stored(self.data) if data_stored is None else data_stored,
            why=why,
            record_event=record_event,
        )
        self._row = self._kept(written)
        self.spec, self.data = spec_read, data_read

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
        new_spec: Any = None,
        **data: Any,
    ) -> Any:
        """Move along the table; the write fails (StaleWrite) if someone else wrote first.
        `new_spec` (a `spec_type`) replaces the spec in the same write (one that forgets a
        secret); `data` names fields of `data_type` to change."""
        new_state = self.machine.next(self.state, event)
        await self._write(event=event.value, spec=new_spec, data=data, state=new_state, why=why)
        self.log.info("transition", on=event.value, to=new_state.value, why=why)
        return new_state

    async def save(self, *, spec: Any = None, **data: Any) -> None:
        """Persist data that is not a state change (no event): a new spec (a `spec_type`),
        and fields of `data_type` to change."""
        await self._write(event="save", spec=spec, data=data, record_event=False)

    # -- lifecycle -----------------------------------------------------------------------

    async def reconcile(self) -> None:  # noqa: B027 - optional hook
        """Look at reality before acting on the stored state (called at every (re)start)."""

    @abc.abstractmethod
    async def handle(self, message: Any) -> None: ...

    async def given_up(self, reason: str) -> None:  # noqa: B027 - optional hook
        """The supervisor stopped restarting this actor: record it where users look."""

    def done(self) -> bool:
        """An actor whose work is over leaves the supervisor; by default at a terminal state."""
        return self._row.terminal

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
        helpers = self._helpers = Helpers()
        try:
            with helpers.host:  # cancelled when a helper fails
                if gate is None:
                    await self.reconcile()
                else:
                    async with gate:
                        await self.reconcile()
                try:
                    while not self.done():
                        message = await mailbox.get()
                        if isinstance(message, Stop):
                            break
                        await self.handle_one(message)
                        # not kept while idle: the last request handled holds its task, its
                        # reply stream and what the handler hung on it, until the next comes
                        del message
                finally:
                    self._cancel_timers()  # none rings for a successor, or after the end
        except BaseException as exc:
            await self._end_helpers()
            helpers.raise_failure(exc)  # and a helper's, if one failed too
            raise
        await self._end_helpers()  # one still running dies with the actor
        helpers.raise_failure()

    async def _end_helpers(self) -> None:
        if self._helpers is not None:
            await self._helpers.close()
            self._helpers = None

    async def handle_one(self, message: Any) -> None:
        """`handle` one message; a request that fails is answered with its error. A
        `StixError` (the caller's mistake or the infra's refusal) ends only the request; any
        other error is re-raised, for the supervisor to restart the actor."""
        try:
            await self.handle(message)
        except StixError as exc:
            if not isinstance(message, Envelope):
                raise
            message.answer(error_reply(exc))
        except Exception as exc:
            if isinstance(message, Envelope):
                message.answer(error_reply(exc))
            raise

    # -- messages and timers -------------------------------------------------------------

    def tell(self, message: Any) -> None:
        assert self._mailbox is not None, "actor is not running"
        self._mailbox.put(message)

    def start_soon(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """A helper task owned by this actor (a watcher, a phase): it dies with the actor, and
        if it fails, the actor ends with its error (for the supervisor to restart it)."""
        assert self._helpers is not None, "actor is not running"
        self._helpers.start_soon(fn, *args)

    _phase: anyio.CancelScope | None = None
    """The phase running now (`run_phase`); a class default, so an actor that never runs one
    holds nothing for it."""

    def run_phase(self, phase: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Run `phase` as this actor's one phase: a helper in a cancel scope of its own, the
        phase before it cancelled first (`stop_phase` cancels it)."""
        self.stop_phase()
        scope = anyio.CancelScope()
        self._phase = scope

        async def go() -> None:
            with scope:
                await phase(*args)

        self.start_soon(go)

    def stop_phase(self) -> None:
        if self._phase is not None:
            self._phase.cancel()
            self._phase = None

    def after(self, name: str, delay: float, message: Any) -> None:
        """Deliver `message` to this actor after `delay` seconds, replacing a timer of that name.
        A callback on the clock, not a task: an idle actor's timers cost next to nothing, and
        the ones left when it ends are cancelled with it."""
        assert self._mailbox is not None, "actor is not running"
        self.cancel_timer(name)
        timers = self._timers
        if timers is None:
            timers = self._timers = {}

        def ring() -> None:
            if timers.get(name) is timer:
                del timers[name]
            self.tell(message)

        timer = timers[name] = self._clock.call_later(delay, ring)

    def cancel_timer(self, name: str) -> None:
        timer = None if self._timers is None else self._timers.pop(name, None)
        if timer is not None:
            timer.cancel()

    def _cancel_timers(self) -> None:
        timers, self._timers = self._timers, None
        for timer in (timers or {}).values():
            timer.cancel()


_EMPTY: dict[str, Any] = {}
"""The spec or data column of a kept row whose actor holds them as Structs (never written)."""
_REAL_CLOCK = RealClock()


def _stored(record: Any) -> Any:
    """What is written for a spec or data: a Struct encoded, a plain dict as it is."""
    return msgspec.to_builtins(record) if isinstance(record, msgspec.Struct) else record


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
