"""A service (`serve up`): the daemon is SkyServe's controller. The actor keeps the service's
balancer running, decides its replica count in rounds (`stixd.serve.autoscaler.decide`), starts
a replica actor per replica and stops the ones the plan lets go, and pushes the ready set to
the balancer the moment it changes.

A round runs when the autoscaler's next decision is due (every `serve_decision_seconds`, 20 s),
every `serve_round_seconds` to take the balancer's traffic, at once when a replica changes
state, and when the balancer says requests wait with no replica. Its inputs are the replica
rows and the requests the balancer counted; its outputs are written before they are acted on
(the next replica id before the replica's row, the autoscaler's memory in the service's row),
so a daemon restart finds every replica it decided on and launches none twice. The rounds are
in `service_rounds`, going down in `service_down`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

from stixd.actors.replica import ReplicaChanged, Shutdown
from stixd.actors.service_down import all_down, begin_down
from stixd.actors.service_rounds import (
    BalancerFailed,
    BalancerReady,
    Round,
    Start,
    TornDownAll,
    ensure_balancer,
    on_balancer_ready,
    run_round,
)
from stixd.actors.service_rows import (
    REPLICA,
    SERVICE,
    ServiceData,
    ServiceSpec,
    ServiceVersion,
    replica_row_id,
)
from stixd.actors.service_states import SE, SERVICE_TRANSITIONS
from stixd.runtime.actor import Actor
from stixd.runtime.machine import Machine
from stixd.runtime.mailbox import Envelope
from stixd.serve.seams import Balancer, ReadyReplica
from stixproto import messages as m
from stixproto.errors import InvalidRequest
from stixproto.states import ServiceStatus as S
from stixproto.task import Task

if TYPE_CHECKING:
    from stixd.app import App


@dataclass
class Memory:
    """What the actor holds between rounds and may lose on a restart (it is re-learnt)."""

    balancer: Balancer | None = None
    pushed: list[ReadyReplica] | None = None
    arrivals: list[float] = field(default_factory=list)
    round_queued: bool = False


class ServiceActor(Actor):
    kind = SERVICE
    machine = Machine(SERVICE, SERVICE_TRANSITIONS)
    state_type = S
    spec_type = ServiceSpec
    data_type = ServiceData
    spec: ServiceSpec
    data: ServiceData

    def __init__(self, row: Any, app: App) -> None:
        super().__init__(row, app.store, app.log)
        self.app = app
        self.gone = False
        self.mem = Memory()

    @staticmethod
    def is_terminal(state: Any) -> bool:
        return False  # a service that is down leaves no row (`Store.delete`)

    def done(self) -> bool:
        return self.gone

    # -- the stored service --------------------------------------------------------------

    def version_task(self, version: int | None = None) -> Task:
        wanted = self.data.version if version is None else version
        for v in self.spec.versions:
            if v.version == wanted:
                return msgspec.convert(v.task, Task)
        raise InvalidRequest(f"service {self.id} has no version {wanted}")

    # -- lifecycle -----------------------------------------------------------------------

    async def reconcile(self) -> None:
        self.tell(Start())

    async def handle(self, message: Any) -> None:
        if isinstance(message, Envelope):
            message.answer(await self._request(message.payload))
        elif self.gone:
            return
        elif isinstance(message, Start):
            if self.state in (S.SHUTTING_DOWN,):
                await begin_down(self, self.data.purge)
            elif self.state is not S.FAILED_CLEANUP:
                self.start_soon(ensure_balancer, self)
        elif isinstance(message, BalancerReady):
            await on_balancer_ready(self, message)
        elif isinstance(message, BalancerFailed):
            if self.machine.allows(self.state, SE.BALANCER_FAILED):
                await self.transition(SE.BALANCER_FAILED, message.why, failure_reason=message.why)
        elif isinstance(message, Round | ReplicaChanged):
            self.mem.round_queued = False
            await run_round(self)
        elif isinstance(message, TornDownAll):
            await all_down(self)

    def queue_round(self) -> None:
        """A round as soon as the mailbox gets to it (one, however many ask meanwhile)."""
        if not self.mem.round_queued:
            self.mem.round_queued = True
            self.tell(Round())

    async def _request(self, req: Any) -> Any:
        if isinstance(req, m.ServeUpdate):
            return await self._update(req)
        if isinstance(req, m.ServeDown):
            if req.replica_id is not None:
                return await self._down_replica(req.replica_id)
            await begin_down(self, req.purge)
            return m.OkReply(f"service {self.id} is shutting down")
        raise InvalidRequest(f"service actor cannot handle {type(req).__name__}")

    async def _update(self, req: m.ServeUpdate) -> m.ServiceUp:
        if not self.machine.allows(self.state, SE.UPDATE):
            raise InvalidRequest(
                f"service {self.id} is {self.state.value}: it cannot be updated now"
            )
        version = max((v.version for v in self.spec.versions), default=0) + 1
        new = ServiceVersion(
            version=version, task=msgspec.to_builtins(req.task), mode=req.mode, at=time.time()
        )
        spec = msgspec.structs.replace(self.spec, versions=[*self.spec.versions, new])
        await self.save(spec=spec)
        why = f"version {version} ({req.mode.replace('_', '-')}) replaces {self.data.version}"
        await self.transition(
            SE.UPDATE, why, version=version, broken_version=None, failure_reason=None
        )
        self.start_soon(ensure_balancer, self)  # the new version's balancer settings
        self.queue_round()
        return m.ServiceUp(
            name=self.id, version=version, endpoint=self.data.endpoint, status=self.state.value
        )

    async def _down_replica(self, replica_id: int) -> m.OkReply:
        row = await self.store.get(REPLICA, replica_row_id(self.id, replica_id))
        if row is None or row.terminal:
            raise InvalidRequest(f"service {self.id} has no live replica {replica_id}")
        if not self.app.supervisor.tell(REPLICA, row.id, Shutdown()):
            self.app.spawn(row)
            self.app.supervisor.tell(REPLICA, row.id, Shutdown())
        return m.OkReply(f"replica {replica_id} of service {self.id} is shutting down")
