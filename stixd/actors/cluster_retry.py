"""`launch --retry-until-up`: when every launch choice failed, try the whole list again after a
backoff, until one comes up (SkyPilot's flag; its gap starts at 30 s, here it grows by 1.6x up
to a cap, with jitter so many clusters do not retry in step).

Between rounds the launch stays INIT with its request stored (`pending_launch`: a restarted
daemon goes on retrying) and the last error shown by `status`. The actor is free meanwhile, so
`down` or `stop` of the cluster ends the wait at once; so does the client going away (Ctrl-C),
whose handler tells the actor `StopRetrying`. The client waiting on the launch is answered when
a round brings the cluster up or the wait ends.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio

from stixd.actors.cluster_states import C, E
from stixd.runtime.actor import error_reply
from stixd.runtime.mailbox import Envelope
from stixproto import messages as m
from stixproto import names
from stixproto.errors import ProvisionError
from stixproto.states import ClusterStatus
from stixproto.task import secret_names

if TYPE_CHECKING:
    from stixd.actors.cluster import ClusterActor

TIMER = "retry_launch"
MULTIPLIER = 1.6
JITTER = 0.2


@dataclass(frozen=True)
class RetryLaunch:
    """Time for the next round of a `--retry-until-up` launch: the backoff's timer, or ``early``
    when capacity may have come back (a replica's host freed), which a running round drops."""

    early: bool = False


@dataclass(frozen=True)
class StopRetrying:
    """The client of `request` went away: stop retrying its launch (another launch's is kept)."""

    request: m.Launch
    why: str


def gap_seconds(first: float, cap: float, round_: int) -> float:
    base = min(first * MULTIPLIER ** max(round_ - 1, 0), max(cap, first))
    return base * random.uniform(1 - JITTER, 1 + JITTER)


def is_retrying(cluster: ClusterActor) -> bool:
    pending = cluster.data.pending_launch
    retrying = pending is not None and bool(pending.request.get("retry_until_up"))
    return cluster.state is C.INIT and retrying


def client_gone(env: Envelope) -> bool:
    if env.answered:
        return True
    return env.reply is not None and env.reply.statistics().open_receive_streams == 0


async def wait_and_retry(cluster: ClusterActor, env: Envelope, exc: ProvisionError) -> None:
    """A round failed: note it where users look, then try again after the gap."""
    round_ = (cluster.data.retry_round or 0) + 1
    daemon = cluster.app.config.daemon
    gap = gap_seconds(daemon.retry_until_up_seconds, daemon.retry_until_up_max_seconds, round_)
    note = f"{exc.message}; retrying in {gap:.0f}s (round {round_ + 1}, --retry-until-up)"
    await cluster.save(retry_round=round_, last_error=note)
    await cluster.store.record(cluster.kind, cluster.id, "retry", note)
    env.progress(m.Progress(f"{note}; Ctrl-C or `{names.command('down', cluster.id)}` stops it"))
    cluster.launch_waiter = env
    cluster.after(TIMER, gap, RetryLaunch())


async def stop_retrying(cluster: ClusterActor, msg: StopRetrying) -> None:
    waiter = cluster.launch_waiter
    if waiter is None or waiter.payload is not msg.request or not is_retrying(cluster):
        return  # not waiting, or waiting for another client's launch
    await give_up(cluster, waiter, msg.request, msg.why)


async def give_up(cluster: ClusterActor, waiter: Envelope | None, req: m.Launch, why: str) -> None:
    """No more rounds: the cluster stays INIT with the last error, its stored launch dropped."""
    cluster.cancel_timer(TIMER)
    cluster.launch_waiter = None
    why = f"stopped retrying: {why}"
    last = cluster.data.last_error
    await cluster.transition(
        E.PROVISION_FAILED,
        why,
        pending_launch=None,
        retry_round=None,
        last_error=f"{why}; last error: {last}" if last else why,
    )
    if secret_names(req.task):  # the stored request held them
        with anyio.CancelScope(shield=True):
            await cluster.store.forget_overwritten()
    if waiter is not None:
        waiter.answer(error_reply(ProvisionError(f"launch of {cluster.id!r} {why}")))


def end_wait(cluster: ClusterActor, state: ClusterStatus) -> None:
    """The cluster left INIT another way (down, stop): the launch waits no more."""
    cluster.cancel_timer(TIMER)
    waiter, cluster.launch_waiter = cluster.launch_waiter, None
    if waiter is not None:
        why = (
            f"cluster {cluster.id!r} is {state.value} now; its launch stopped waiting for capacity"
        )
        waiter.answer(error_reply(ProvisionError(why)))
