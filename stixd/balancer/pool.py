"""The rotation: which replica takes the next request, and which are out of it for a while.

One event loop owns a `Pool`, so nothing here locks. A replica that refuses a connection or
resets one is suspect at once: out of rotation for a backoff that doubles while it keeps failing
(and is forgotten on its first success); its recent failures also weigh on its load, so once
back it is not the least loaded of replicas that work. When every replica is out, one of them
for refusing connections, requests wait (`worth_waiting`) until one is `revived`, a backoff
ends or the set changes, as they do at zero replicas.
"""

from __future__ import annotations

import asyncio
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from stixd.balancer.wire import MAX_ARRIVALS, Replica

FIRST_BACKOFF = 1.0
MAX_BACKOFF = 60.0
FAILURE_MEMORY = 10.0
"""Seconds a failure weighs on a replica's load after it happened."""
FAILURE_LOAD = 1000.0
"""What one recent failure adds to a replica's load: more than any in-flight count, so a
replica that just failed is the last choice while one that did not is left."""


@dataclass(eq=False)  # a slot is itself: `in tried` compares identities
class Slot:
    replica: Replica
    in_flight: int = 0
    failures: int = 0
    last_failure: float = -1e18
    suspect_until: float = 0.0
    backoff: float = FIRST_BACKOFF
    refused: bool = False
    """Its last failure was a connection it did not accept (not one it reset): accepting
    connections again is a sign it is back (`stixd.balancer.revive`)."""

    def load(self, now: float) -> float:
        recent = self.failures if now - self.last_failure < FAILURE_MEMORY else 0
        return (self.in_flight + recent * FAILURE_LOAD) / self.replica.weight


@dataclass
class Pool:
    policy: str = "least_load"
    clock: Callable[[], float] = time.monotonic
    slots: list[Slot] = field(default_factory=list)
    suspects: list[int] = field(default_factory=list)
    """Replica ids ejected since the last `take`, newest last."""
    _turn: int = 0
    _changed: asyncio.Event | None = None

    def set_ready(self, replicas: Sequence[Replica]) -> None:
        """Replace the rotation; a replica that stays keeps its in-flight count and suspicion."""
        kept = {(s.replica.replica_id, s.replica.url): s for s in self.slots}
        slots = []
        for replica in replicas:
            slot = kept.get((replica.replica_id, replica.url))
            if slot is None:
                slot = Slot(replica)
            else:
                slot.replica = replica
            slots.append(slot)
        self.slots = slots
        self.wake()

    def changed(self) -> asyncio.Event:
        """Set at the next `set_ready` or `revived`."""
        if self._changed is None:
            self._changed = asyncio.Event()
        return self._changed

    def wake(self) -> None:
        """Wake the requests waiting on `changed`."""
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    def out_of_rotation(self) -> list[Slot]:
        """Every slot, if every one is out for its backoff (else none)."""
        now = self.clock()
        if all(s.suspect_until > now for s in self.slots):
            return list(self.slots)
        return []

    def worth_waiting(self) -> bool:
        """Every replica is out, and one of them for refusing connections (stopped, perhaps
        restarting): a request waits for it rather than fail. Replicas that all accepted and
        reset are tried again instead (the daemon's probes take them out of the set)."""
        return any(s.refused for s in self.out_of_rotation())

    def revived(self, slot: Slot) -> None:
        """An ejected replica that had refused connections accepts them again: back in
        rotation now (its backoff stays, so failing again keeps it out longer)."""
        if slot in self.slots and slot.refused and slot.suspect_until > self.clock():
            slot.suspect_until = 0.0
            self.wake()

    def choose(self, tried: Sequence[Slot] = ()) -> Slot | None:
        """The slot for the next try of a request (None: every replica was tried, none is
        ready, or it is `worth_waiting`). Suspects are chosen only when nothing else is left,
        earliest back first."""
        now = self.clock()
        fresh = [s for s in self.slots if s not in tried] if tried else self.slots
        if not fresh:
            return None
        healthy = [s for s in fresh if s.suspect_until <= now]
        if not healthy:
            return None if self.worth_waiting() else min(fresh, key=lambda s: s.suspect_until)
        self._turn = (self._turn + 1) % (1 << 30)
        start = self._turn % len(healthy)
        if self.policy == "round_robin":
            return healthy[start]
        turned = healthy[start:] + healthy[:start]  # ties go round, not always to the first
        return min(turned, key=lambda s: s.load(now))

    def failed(self, slot: Slot, refused: bool = False) -> float | None:
        """The replica refused (``refused``) or reset a connection: out of rotation now. The
        seconds it is out for, if this failure ejected it (None: it was out already)."""
        now = self.clock()
        slot.failures += 1
        slot.last_failure = now
        slot.refused = refused
        if slot.suspect_until > now:
            return None
        out_for = slot.backoff
        slot.suspect_until = now + out_for
        slot.backoff = min(slot.backoff * 2, MAX_BACKOFF)
        self.suspects.append(slot.replica.replica_id)
        del self.suspects[:-MAX_ARRIVALS]
        return out_for

    def succeeded(self, slot: Slot) -> None:
        if slot.failures:
            slot.failures = 0
            slot.suspect_until = 0.0
            slot.backoff = FIRST_BACKOFF


@dataclass
class Arrivals:
    """Wall-clock arrival times since the last take, the newest `MAX_ARRIVALS` of them."""

    times: array[float] = field(default_factory=lambda: array("d"))

    def add(self, when: float) -> None:
        self.times.append(when)
        if len(self.times) > 2 * MAX_ARRIVALS:
            del self.times[:-MAX_ARRIVALS]

    def take(self) -> list[float]:
        taken = self.times.tolist()[-MAX_ARRIVALS:]
        self.times = array("d")
        return taken
