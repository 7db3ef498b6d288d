"""A cluster's long provider calls (provision, start, stop, terminate) run as phases: each in a
task of the actor's own, in a cancel scope, so its mailbox stays free while the call runs.

While a phase runs (or a stop or down written as intent waits to be finished), the actor
answers `status` from what it knows, lets `down` and `stop` interrupt a launch or a start, and
keeps every other message until the phase has ended, then handles them in the order they came.
So the row has one writer at a time: a phase writes it while it runs, the handler only once the
phase is over (an interrupting `down` waits for the phase to unwind before it writes).
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio

from stixd.actors.cluster_retry import is_retrying
from stixd.actors.cluster_states import C
from stixd.runtime.actor import error_reply
from stixd.runtime.mailbox import Envelope
from stixproto import messages as m
from stixproto.errors import Cancelled, ProvisionError, StixError

if TYPE_CHECKING:
    from stixd.actors.cluster import ClusterActor

IN_FLIGHT = (C.STOPPING, C.TERMINATING, C.AUTOSTOPPING)
"""States that are an intent the actor has to finish (after a restart, too)."""


@dataclass(eq=False)
class Phase:
    name: str
    """`launch`, `start`, `stop` or `terminate`."""
    waiters: list[Envelope] = field(default_factory=list)
    """The requests answered when the phase ends (a second `down` joins the first)."""
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    ended: anyio.Event = field(default_factory=anyio.Event)
    interrupted_by: str = ""


@dataclass(frozen=True, eq=False)
class PhaseEnded:
    """Told by a phase as it ends: the messages kept meanwhile may run now."""

    phase: Phase


class FinishIntent:
    """Finish the stop, down or autostop a restart interrupted (the row's state says which)."""


class Phases:
    """The phase a cluster runs, if any, and the messages kept until it ends. The queue of
    kept messages is made when one is kept and dropped once empty: an idle cluster keeps none
    (an empty deque is 760 bytes, and the daemon holds a cluster per managed job)."""

    __slots__ = ("_kept", "current")

    def __init__(self) -> None:
        self.current: Phase | None = None
        self._kept: collections.deque[Any] | None = None

    def keep(self, message: Any) -> None:
        if self._kept is None:
            self._kept = collections.deque()
        self._kept.append(message)

    @property
    def kept(self) -> int:
        """How many messages are kept."""
        return len(self._kept or ())

    def next_kept(self) -> Any:
        """The first message kept (there is one), taken off the queue."""
        assert self._kept is not None, "no message is kept"
        message = self._kept.popleft()
        if not self._kept:
            self._kept = None
        return message


def busy(cluster: ClusterActor) -> bool:
    return cluster.phases.current is not None or cluster.state in IN_FLIGHT


def answers_while_busy(message: Any) -> bool:
    """`status` is answered, `down` and `stop` interrupt; the rest waits for the phase."""
    if isinstance(message, FinishIntent | PhaseEnded):
        return True
    return isinstance(message, Envelope) and isinstance(message.payload, m.Status | m.Down | m.Stop)


def start_phase(
    cluster: ClusterActor,
    name: str,
    body: Callable[[], Awaitable[Any]],
    waiter: Envelope | None = None,
) -> Phase:
    """Run `body` as the cluster's phase; what it returns (unless None: it answered itself)
    answers the waiters, and so does its error (a failed stop or down is in the row too). An
    error that is not a StixError still ends the actor, as it would in the handler, for the
    supervisor to restart it."""
    assert cluster.phases.current is None, f"{cluster.id}: a phase is running already"
    phase = Phase(name, [waiter] if waiter is not None else [])
    cluster.phases.current = phase

    def answer(reply: Any) -> None:
        for env in phase.waiters:
            env.answer(reply)

    async def run() -> None:
        try:
            with phase.scope:
                reply = await body()
                if reply is not None:
                    answer(reply)
            if phase.scope.cancelled_caught:
                answer(error_reply(interrupted(cluster, phase)))
        except StixError as exc:
            cluster.log.warning("phase_failed", phase=name, error=exc.message)
            answer(error_reply(exc))
            if not phase.waiters and name == "launch":
                raise  # a resumed launch's, nobody to tell: as before, it ends the actor
        except Exception as exc:
            answer(error_reply(exc))
            raise
        finally:
            phase.ended.set()
            with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
                cluster.tell(PhaseEnded(phase))  # not once the daemon has closed the mailbox

    cluster.start_soon(run)
    return phase


def interrupted(cluster: ClusterActor, phase: Phase) -> StixError:
    """What the waiters of an interrupted phase hear; a `--retry-until-up` launch, as when it
    is stopped between two rounds (exit 5)."""
    why = phase.interrupted_by or "the daemon is stopping"
    text = f"the {phase.name} of {cluster.id!r} was interrupted: {why}"
    if phase.name == "launch" and is_retrying(cluster):
        return ProvisionError(f"{text}; it stopped waiting for capacity")
    return Cancelled(text)


async def interrupt(cluster: ClusterActor, why: str) -> Phase | None:
    """Cancel the running phase and wait until it has unwound; its waiters hear `why`. The row
    is read again: a write the cancel cut short may have landed all the same."""
    phase = cluster.phases.current
    if phase is None:
        return None
    phase.interrupted_by = why
    phase.scope.cancel()
    await phase.ended.wait()
    cluster.phases.current = None
    cluster.row = await cluster.store.get(cluster.kind, cluster.id) or cluster.row
    cluster.log.info("phase_interrupted", phase=phase.name, why=why)
    return phase


async def phase_ended(cluster: ClusterActor, ended: PhaseEnded) -> None:
    """Handle the kept messages in order, until one starts a phase of its own."""
    if cluster.phases.current is ended.phase:
        cluster.phases.current = None
    phases = cluster.phases
    while phases.kept and not busy(cluster):
        await cluster.handle_one(phases.next_kept())
