"""What a service actor does between its start and its end: start its balancer, run rounds.

A round: take the traffic the balancer counted → keep the last minute of arrivals → ask the
autoscaler (`decide`) → start the replicas it orders (the next id written first, on spot or on
demand as it says) and shut down the ones it lets go → store its memory (and a rollout it
stopped) → push the ready set of the versions it serves if that changed → move the service's
state by what its replicas do.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from stixd.actors.replica import ProbeNow, Shutdown
from stixd.actors.service_decisions import replica_port, service_event
from stixd.actors.service_rows import (
    REPLICA,
    ReplicaData,
    ReplicaSpec,
    replica_row_id,
)
from stixd.actors.service_states import SE
from stixd.actors.service_view import (
    Replica,
    memory_for,
    replicas_of,
    rollout_stopped,
    rotation,
    seen,
    views,
    wants_spot,
)
from stixd.actors.specs import encode
from stixd.providers.abilities import SharesHostNetwork
from stixd.serve.autoscaler import UpdateMode, decide
from stixd.serve.rate import recent_arrivals
from stixd.serve.seams import (
    Balancer,
    BalancerSpec,
    LaunchOrder,
    ReadyReplica,
    Traffic,
)
from stixd.store.db import Row, RowExists
from stixproto.errors import InvalidRequest, StixError
from stixproto.states import ReplicaStatus as R
from stixproto.states import ServiceStatus as S
from stixproto.task import Task
from stixproto.task.resources import accelerator_choice, port_ranges
from stixproto.task.service import api_keys, effective_scaling

if TYPE_CHECKING:
    from stixd.actors.service import ServiceActor

DEMAND_GAP_SECONDS = 0.5
"""At most one round per this long for requests waiting at a service with no replica."""
NO_BALANCERS = "serving is not available in this daemon (it has no load balancers)"


class Start:
    """Bring the balancer up (at start and after a restart), or finish going down."""


class Round:
    """Decide now."""


@dataclass(frozen=True)
class BalancerReady:
    balancer: Balancer


@dataclass(frozen=True)
class BalancerFailed:
    why: str


class TornDownAll:
    """Every replica is down (or failed to be), and the balancer is stopped."""


# -- the service's task ------------------------------------------------------------------------


def service_port(task: Task) -> int:
    """The port replicas serve on: `service.ports`, else the one port of `resources.ports`."""
    if task.service is not None and task.service.ports is not None:
        return task.service.ports
    ranges = port_ranges(task.resources_or_default())
    if len(ranges) == 1 and ranges[0][0] == ranges[0][1]:
        return ranges[0][0]
    raise InvalidRequest(
        "a service needs the one port its replicas serve on: set `service.ports` "
        "(or a single port in `resources.ports`)"
    )


def balancer_spec(name: str, task: Task) -> BalancerSpec:
    service = task.service
    assert service is not None
    tls = service.tls or {}
    timeout = (service.load_balancer or {}).get("stream_timeout_seconds")
    return BalancerSpec(
        service=name,
        port=0,
        policy=service.lb_policy,
        stream_timeout_seconds=None if timeout is None else float(timeout),
        tls_keyfile=tls.get("keyfile"),
        tls_certfile=tls.get("certfile"),
        api_keys=api_keys(service),
    )


# -- the balancer ------------------------------------------------------------------------------


async def ensure_balancer(actor: ServiceActor) -> None:
    balancers = actor.app.balancers
    if balancers is None:
        actor.tell(BalancerFailed(NO_BALANCERS))
        return
    try:
        balancer = await balancers.ensure(balancer_spec(actor.id, actor.version_task()))
    except Exception as exc:  # the balancer's own trouble: the service shows it
        actor.log.exception("balancer_failed")
        actor.tell(BalancerFailed(f"its load balancer could not start: {exc}"))
        return
    actor.tell(BalancerReady(balancer))


async def on_balancer_ready(actor: ServiceActor, msg: BalancerReady) -> None:
    fresh = actor.mem.balancer is not msg.balancer
    actor.mem.balancer = msg.balancer
    if fresh:
        actor.mem.pushed = None  # a balancer found again gets the ready set again
    endpoint = msg.balancer.endpoint
    if actor.machine.allows(actor.state, SE.BALANCER_UP):
        await actor.transition(SE.BALANCER_UP, f"load balancer at {endpoint}", endpoint=endpoint)
    elif endpoint != actor.data.endpoint:
        await actor.save(endpoint=endpoint)
    if fresh:
        actor.start_soon(_wake_on_demand, actor, msg.balancer)
    actor.queue_round()


async def _wake_on_demand(actor: ServiceActor, balancer: Balancer) -> None:
    while actor.mem.balancer is balancer:  # a balancer replaced by an update has its own
        try:
            await balancer.wait_for_demand()
        except Exception:
            actor.log.exception("wait_for_demand_failed")
        actor.queue_round()
        await anyio.sleep(DEMAND_GAP_SECONDS)


# -- a round -----------------------------------------------------------------------------------


async def run_round(actor: ServiceActor) -> None:
    balancer = actor.mem.balancer
    if balancer is None or actor.state not in (S.REPLICA_INIT, S.READY, S.NO_REPLICA, S.FAILED):
        return
    now = time.time()
    config = actor.app.config.daemon
    window = config.serve_qps_window_seconds
    replicas = await replicas_of(actor)
    traffic = await _traffic(actor, balancer)
    actor.app.metrics.served(actor.id, len(traffic.arrivals), traffic.waiting)
    actor.mem.arrivals = recent_arrivals(
        actor.mem.arrivals, traffic.arrivals, now, window_seconds=window
    )
    for suspect in dict.fromkeys(traffic.suspects):
        actor.app.supervisor.tell(REPLICA, replica_row_id(actor.id, suspect), ProbeNow())
    task = actor.version_task()
    assert task.service is not None
    version = actor.data.version
    plan = decide(
        effective_scaling(task.service),
        views(replicas, version),
        actor.mem.arrivals,
        now,
        memory_for(actor.data.memory, replicas, version),
        version=version,
        mode=_mode(actor, version),
        use_spot=wants_spot(task),
        waiting=traffic.waiting,
        round_seconds=config.serve_decision_seconds,
        window_seconds=window,
    )
    for order in plan.launch:
        await _launch(actor, order, task, replicas)
    for replica_id in plan.stop:
        _tell_replica(actor, replica_row_id(actor.id, replica_id), Shutdown())
    changes: dict[str, Any] = {}
    if plan.memory != actor.data.memory:
        changes["memory"] = plan.memory
    if plan.rollout_failed and actor.data.broken_version != version:
        why = rollout_stopped(replicas, version)
        changes.update(broken_version=version, failure_reason=why)
        await actor.store.record(actor.kind, actor.id, "rollout_stopped", why)
    if changes:
        await actor.save(**changes)
    replicas = await replicas_of(actor)
    await _push_ready(actor, balancer, rotation(task, replicas, plan))
    await _follow_replicas(actor, replicas, plan.target, plan.rollout_failed)
    # The next decision round is due at `next_round_at`; the traffic is taken sooner (the
    # balancer's ejections are probed at once), and a replica's change or waiting demand
    # wakes the actor before either.
    wait = min(plan.next_round_at - now, config.serve_round_seconds)
    actor.after("round", max(0.0, wait), Round())


def _mode(actor: ServiceActor, version: int) -> UpdateMode:
    mode = next((v.mode for v in actor.spec.versions if v.version == version), "rolling")
    try:
        return UpdateMode(mode)
    except ValueError:
        return UpdateMode.ROLLING


async def _traffic(actor: ServiceActor, balancer: Balancer) -> Traffic:
    try:
        return await balancer.take_traffic()
    except Exception:  # a balancer that does not answer: no traffic seen this round
        actor.log.exception("take_traffic_failed")
        return Traffic()


def _shared_network(actor: ServiceActor, task: Task) -> bool:
    """Whether the replicas' nodes would share this machine's network (local)."""
    try:
        provider, _ = actor.app.target(task)
    except StixError:
        return False
    found = actor.app.providers.get(provider)
    return isinstance(found, SharesHostNetwork) and found.nodes_share_host_network()


async def _launch(
    actor: ServiceActor, order: LaunchOrder, task: Task, replicas: list[Replica]
) -> None:
    replica_id = actor.data.next_replica
    await actor.save(next_replica=replica_id + 1)  # written first: an id is never used twice
    taken = {r.spec.port for r in replicas if not r.status.is_terminal}
    port = replica_port(service_port(task), taken, _shared_network(actor, task))
    spec = ReplicaSpec(
        service=actor.id,
        replica_id=replica_id,
        version=order.version,
        port=port,
        spot=order.spot,
        launched_at=time.time(),
        accelerator=_accelerator(task),
        owner=actor.spec.owner,
        workspace=actor.spec.workspace,
    )
    row = Row(
        kind=REPLICA,
        id=replica_row_id(actor.id, replica_id),
        parent=actor.id,
        state=R.PENDING.value,
        version=0,
        spec=encode(spec),
        data=encode(ReplicaData()),
    )
    try:
        row = await actor.store.insert(
            row, "decided", f"replica {replica_id} of version {order.version}"
        )
    except RowExists:  # an earlier service of the name left it: the id is skipped
        actor.log.warning("replica_row_exists", replica=replica_id)
        return
    actor.app.spawn(row)
    replicas.append(Replica(row, spec, ReplicaData(), R.PENDING))


def _accelerator(task: Task) -> str | None:
    """The one accelerator the task asks for (None: none, or a choice the optimizer makes)."""
    choice = accelerator_choice(task.resources_or_default())
    if choice is None or len(choice.candidates) != 1:
        return None
    return choice.candidates[0].name


def _tell_replica(actor: ServiceActor, row_id: str, message: Any) -> None:
    if not actor.app.supervisor.tell(REPLICA, row_id, message):
        actor.log.warning("replica_not_running", replica=row_id)


async def _push_ready(actor: ServiceActor, balancer: Balancer, ready: list[ReadyReplica]) -> None:
    if ready == actor.mem.pushed:
        return
    try:
        await balancer.set_ready(ready)
    except Exception:  # pushed again next round
        actor.log.exception("set_ready_failed")
        return
    actor.mem.pushed = ready
    ids = ", ".join(str(r.replica_id) for r in ready) or "none"
    actor.log.info("ready_set", replicas=ids)


async def _follow_replicas(
    actor: ServiceActor, replicas: list[Replica], target: int, rollout_failed: bool
) -> None:
    event = service_event(actor.state, seen(replicas), target, rollout_failed)
    if event is None or not actor.machine.allows(actor.state, event):
        return
    extra: dict[str, Any] = {}
    if event is SE.REPLICA_READY:
        why = "a replica is READY"
        if actor.data.uptime_since is None:
            extra["uptime_since"] = time.time()
    elif event is SE.REPLICAS_FAILING:
        why = actor.data.failure_reason or "a replica failed before any was ready"
    elif event is SE.SCALED_TO_ZERO:
        why = "no replica is wanted now"
    else:
        why = "no replica is READY"
    await actor.transition(event, why, **extra)
