"""The service's and replicas' decisions, as pure functions of what they see (tested alone).

- which state a service shows, from its replicas (whether a version is broken, and so its
  rollout stopped, is the autoscaler's: `stixd.serve.autoscaler.decide`);
- what a readiness probe's answer does to a replica;
- which port a new replica serves on.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from stixd.actors.service_states import RE, SE, ReplicaEvent, ServiceEvent
from stixproto.states import ReplicaStatus as R
from stixproto.states import ServiceStatus as S

PROBE_FAILURES_BEFORE_FAILED = 3
"""Failed probes in a row of a replica that was READY before it is FAILED_PROBING."""


@dataclass(frozen=True)
class ReplicaSeen:
    """One replica as the service's decisions need it."""

    replica_id: int
    version: int
    status: R


def service_event(
    state: S, replicas: Sequence[ReplicaSeen], target: int, failing: bool
) -> ServiceEvent | None:
    """The event that moves the service to what its replicas say now (None: it is there);
    ``failing``: the latest version failed before it was ever READY."""
    if state not in (S.REPLICA_INIT, S.READY, S.NO_REPLICA, S.FAILED):
        return None
    live = [r for r in replicas if not r.status.is_terminal]
    if any(r.status is R.READY for r in live):
        want, event = S.READY, SE.REPLICA_READY
    elif failing:
        want, event = S.FAILED, SE.REPLICAS_FAILING
    elif not live and target == 0:
        want, event = S.NO_REPLICA, SE.SCALED_TO_ZERO
    else:
        want, event = S.REPLICA_INIT, SE.NONE_READY
    return None if state is want else event


@dataclass(frozen=True)
class ProbeOutcome:
    """What a probe's answer does: an event (or none), the end a failing replica takes, the
    failures counted so far, and why."""

    event: ReplicaEvent | None
    end: ReplicaEvent | None = None
    failures: int = 0
    why: str = ""


def on_probe(
    state: R,
    ok: bool,
    detail: str,
    *,
    now: float,
    started_at: float,
    initial_delay: float,
    failures: int,
    threshold: int = PROBE_FAILURES_BEFORE_FAILED,
) -> ProbeOutcome:
    """A probe answered `ok` (or not, `detail` says how) in `state`."""
    if ok:
        passed = RE.PROBE_PASSED if state in (R.STARTING, R.NOT_READY, R.UNKNOWN) else None
        return ProbeOutcome(passed, why="readiness probe passed")
    if state is R.STARTING:
        if now - started_at > initial_delay:
            why = f"no probe passed within initial_delay_seconds ({initial_delay:g}): {detail}"
            return ProbeOutcome(RE.FAILING, RE.FAILED_INITIAL_DELAY, failures + 1, why)
        return ProbeOutcome(None, failures=failures + 1, why=detail)
    if state is R.READY:
        return ProbeOutcome(RE.PROBE_FAILED, failures=1, why=f"readiness probe failed: {detail}")
    if state in (R.NOT_READY, R.UNKNOWN):
        if failures + 1 >= threshold:
            why = f"{failures + 1} readiness probes failed in a row: {detail}"
            return ProbeOutcome(RE.FAILING, RE.FAILED_PROBING, failures + 1, why)
        return ProbeOutcome(None, failures=failures + 1, why=detail)
    return ProbeOutcome(None, failures=failures)


def replica_port(service_port: int, taken: Collection[int], shared_network: bool) -> int:
    """The port a new replica serves on: the service's, unless its nodes share this machine's
    network with other replicas of the service (local without a network per node), where
    each live replica needs a port of its own: the lowest free one from the service's up."""
    if not shared_network:
        return service_port
    port = service_port
    while port in taken and port < 65535:
        port += 1
    return port
