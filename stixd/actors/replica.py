"""One replica of a service: it owns one cluster (``<service>-<id>``), runs the service's
command there as a job, and probes its readiness itself.

The actor drives one phase at a time in a helper task (`replica_phases`: launch, watch and
probe, tear down); each phase tells the actor what it found, and the decisions on a probe's
answer are pure (`service_decisions.on_probe`). Every state change is told to the service,
whose next decision round sees it at once. After a daemon restart the stored state picks
the phase again: a cluster already launched is adopted with the command it runs, a READY
replica is probed again, a teardown is finished.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from stixd.actors.replica_address import AddressWait, Reached, Unreachable
from stixd.actors.replica_phases import (
    Exited,
    LaunchFailed,
    Lost,
    Probed,
    TornDown,
    Up,
    Waiting,
    down_cluster,
    launch,
    stored_version,
    tear_down,
    wake_waiting,
    watch,
)
from stixd.actors.service_decisions import on_probe
from stixd.actors.service_rows import (
    REPLICA,
    SERVICE,
    ReplicaData,
    ReplicaSpec,
    replica_cluster,
)
from stixd.actors.service_states import ENDS, RE, REPLICA_TRANSITIONS, ReplicaEvent
from stixd.actors.specs import spec_or_none
from stixd.providers.abilities import HasPools
from stixd.runtime.actor import Actor
from stixd.runtime.machine import Machine
from stixd.runtime.mailbox import Envelope
from stixproto.errors import InvalidRequest
from stixproto.states import ReplicaStatus as R
from stixproto.task.service import Probe, effective_probe

if TYPE_CHECKING:
    from stixd.app import App


class Advance:
    """Run the phase of the current state (at start, and after a decision)."""


class ProbeNow:
    """The balancer ejected this replica: probe it now, not at the next interval."""


@dataclass(frozen=True)
class Shutdown:
    """The service scales this replica down (or goes down itself)."""

    purge: bool = False
    """Forget the replica even if its cluster cannot be torn down."""


class ReplicaChanged:
    """Told to the service: a replica of it changed state."""


class ReplicaActor(Actor):
    kind = REPLICA
    machine = Machine(REPLICA, REPLICA_TRANSITIONS)
    state_type = R
    spec_type = ReplicaSpec
    data_type = ReplicaData
    spec: ReplicaSpec
    data: ReplicaData

    def __init__(self, row: Any, app: App) -> None:
        super().__init__(row, app.store, app.log)
        self.app = app
        self._gone = False
        self._initial_delay: float | None = None
        self.probe_wanted = anyio.Event()

    @staticmethod
    def is_terminal(state: Any) -> bool:
        return R(state).is_terminal

    @classmethod
    def parent_of(cls, row: Any) -> str | None:
        spec = spec_or_none(row, ReplicaSpec)
        return spec.service if spec is not None else None

    def done(self) -> bool:
        return self._gone or super().done()

    @property
    def cluster(self) -> str:
        return replica_cluster(self.spec.service, self.spec.replica_id)

    # -- lifecycle -----------------------------------------------------------------------

    async def reconcile(self) -> None:
        self.tell(Advance())

    async def given_up(self, reason: str) -> None:
        """The actor keeps crashing: end the replica, its cluster with it."""
        self.row = await self.store.get(self.kind, self.id) or self.row
        if self.machine.allows(self.state, RE.FAILING):
            await self.transition(RE.FAILING, reason, end=RE.FAILED.value, failure_reason=reason)
        if self.state is R.SHUTTING_DOWN:
            problem = await down_cluster(self)
            end = RE.CLEANUP_FAILED if problem else self._end or RE.FAILED
            await self.transition(end, problem or reason)
        self._tell_service()

    async def handle(self, message: Any) -> None:
        if isinstance(message, Envelope):
            raise InvalidRequest(f"replica actor cannot handle {type(message.payload).__name__}")
        if self.done():
            return
        if isinstance(message, Advance):
            await self._advance()
        elif isinstance(message, Up):
            await self._on_up(message)
        elif isinstance(message, Waiting):
            await self._on_waiting(message)
        elif isinstance(message, LaunchFailed):
            await self._fail(RE.FAILED_PROVISION, f"its cluster could not launch: {message.why}")
        elif isinstance(message, Probed):
            await self._on_probe(message)
        elif isinstance(message, AddressWait):
            await self._on_address_wait(message)
        elif isinstance(message, Reached):
            await self._on_reached(message)
        elif isinstance(message, Unreachable):
            await self._fail(RE.FAILED_PROVISION, f"its port cannot be reached: {message.why}")
        elif isinstance(message, Exited):
            await self._fail(RE.FAILED, message.why)
        elif isinstance(message, Lost):
            await self._fail(RE.PREEMPTED, message.why)
        elif isinstance(message, ProbeNow):
            self.probe_wanted.set()
        elif isinstance(message, Shutdown):
            await self._shutdown(message.purge)
        elif isinstance(message, TornDown):
            await self._torn_down(message)

    async def _advance(self) -> None:
        state = self.state
        if state is R.PENDING:
            await self._step(RE.LAUNCH, f"launching cluster {self.cluster}")
            self.run_phase(launch, self)
        elif state is R.PROVISIONING:
            self.run_phase(launch, self)
        elif state in (R.STARTING, R.READY, R.NOT_READY, R.UNKNOWN):
            self.run_phase(watch, self)
        elif state is R.SHUTTING_DOWN:
            self.run_phase(tear_down, self)

    # -- decisions -----------------------------------------------------------------------

    async def _on_up(self, msg: Up) -> None:
        if self.state is not R.PROVISIONING:
            return
        await self._step(
            RE.UP,
            f"{self.cluster} is up on {msg.infra}; its command runs as job {msg.job_id}",
            cluster_uid=msg.uid,
            job_id=msg.job_id,
            url=msg.url,
            infra=msg.infra,
            resources=msg.resources,
            started_at=time.time(),
            failure_reason=msg.pending,
        )
        self.run_phase(watch, self)

    async def _on_address_wait(self, msg: AddressWait) -> None:
        """Its address is still being made: shown (`serve status -v`) until the initial delay,
        counted from its cluster being up, is over; then the replica failed to provision."""
        if self.state is not R.STARTING:
            return
        delay = await self._delay()
        if time.time() - (self.data.started_at or time.time()) > delay:
            why = (
                f"its cluster's load balancer (service {msg.service}) got no address within "
                f"initial_delay_seconds ({delay:g})"
            )
            self.stop_phase()
            await self._step(
                RE.FAILING, why, end=RE.FAILED_PROVISION, failure_reason=why, replaceable=True
            )
        elif self.data.failure_reason != msg.why:
            await self.save(failure_reason=msg.why)

    async def _on_reached(self, msg: Reached) -> None:
        if self.state is R.STARTING and self.data.url != msg.url:
            await self.save(url=msg.url, failure_reason=None)

    async def _on_waiting(self, msg: Waiting) -> None:
        """Shown in `serve status -v` (its FAILURE column) while the replica waits for
        capacity; cleared once its cluster is up."""
        if self.state is R.PROVISIONING:
            await self.save(failure_reason=f"waiting for capacity: {msg.why}")

    async def _on_probe(self, msg: Probed) -> None:
        data = self.data
        outcome = on_probe(
            self.state,
            msg.ok,
            msg.detail,
            now=time.time(),
            started_at=data.started_at or time.time(),
            initial_delay=await self._delay(),
            failures=data.probe_failures,
        )
        if outcome.event is RE.FAILING:
            assert outcome.end is not None
            await self._fail(outcome.end, outcome.why)
        elif outcome.event is RE.PROBE_PASSED:
            await self._step(
                outcome.event, outcome.why, ready_since=time.time(), ever_ready=True,
                probe_failures=0, not_ready_since=None,
            )  # fmt: skip
        elif outcome.event is RE.PROBE_FAILED:
            await self._step(
                outcome.event, outcome.why, probe_failures=1, not_ready_since=time.time()
            )
        elif outcome.failures != data.probe_failures:
            await self.save(probe_failures=outcome.failures)

    async def _delay(self) -> float:
        if self._initial_delay is None:
            loaded = await stored_version(self)
            service = loaded[0].service if loaded is not None else None
            probe = effective_probe(service) if service is not None else Probe()
            self._initial_delay = probe.initial_delay_seconds
        return self._initial_delay

    async def _fail(self, end: ReplicaEvent, why: str) -> None:
        if not self.machine.allows(self.state, RE.FAILING):
            return
        self.stop_phase()
        await self._step(RE.FAILING, why, end=end, failure_reason=why)

    async def _shutdown(self, purge: bool) -> None:
        if purge and not self.data.purge:
            await self.save(purge=True)
        if self.state is R.SHUTTING_DOWN:
            return
        self.stop_phase()
        await self._step(RE.SHUTDOWN, "scaled down" if not purge else "service going down")

    def _held_pool_hosts(self) -> bool:
        """Whether its cluster held hosts of a pool (ssh), which a waiting sibling may take now;
        a cloud's capacity does not come back with one cluster's end."""
        provider = self.app.providers.get((self.data.infra or "").partition("/")[0])
        return isinstance(provider, HasPools)

    async def _torn_down(self, msg: TornDown) -> None:
        if self.state is not R.SHUTTING_DOWN:
            return
        end = self._end
        if msg.problem is None and self._held_pool_hosts():
            await wake_waiting(self)
        if msg.problem is not None and not self.data.purge:
            why = f"its cluster {self.cluster} could not be torn down: {msg.problem}"
            await self.transition(RE.CLEANUP_FAILED, why, failure_reason=why)
        elif end is not None and end in ENDS:
            await self.transition(end, self.data.failure_reason or "cluster torn down")
        else:
            await self.store.delete(self.row, "cluster torn down")
            self._gone = True
            self.log.info("replica_removed")
        self._tell_service()

    @property
    def _end(self) -> ReplicaEvent | None:
        try:
            return ReplicaEvent(self.data.end) if self.data.end else None
        except ValueError:
            return RE.FAILED

    async def _step(
        self, event: ReplicaEvent, why: str, *, end: ReplicaEvent | None = None, **data: Any
    ) -> None:
        if end is not None:
            data["end"] = end.value
        await self.transition(event, why, **data)
        if self.state is R.SHUTTING_DOWN:
            self.run_phase(tear_down, self)
        self._tell_service()

    def _tell_service(self) -> None:
        self.app.supervisor.tell(SERVICE, self.spec.service, ReplicaChanged())
