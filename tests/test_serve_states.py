"""The service's and replica's transition tables, walked pair by pair, and their pure
decisions (probe answers, ports, the service's state from its replicas)."""

from __future__ import annotations

import itertools

from stixd.actors.service_decisions import (
    ReplicaSeen,
    on_probe,
    replica_port,
    service_event,
)
from stixd.actors.service_states import (
    RE,
    REPLICA_TRANSITIONS,
    SE,
    SERVICE_TRANSITIONS,
    ReplicaEvent,
    ServiceEvent,
)
from stixd.runtime.machine import Machine, TransitionError
from stixproto.states import ReplicaStatus as R
from stixproto.states import ServiceStatus as S

LIVE = ["PENDING", "PROVISIONING", "STARTING", "READY", "NOT_READY", "UNKNOWN"]
EXPECTED_REPLICA = {
    ("PENDING", "launch"): "PROVISIONING",
    ("PROVISIONING", "up"): "STARTING",
    ("STARTING", "probe_passed"): "READY",
    ("NOT_READY", "probe_passed"): "READY",
    ("UNKNOWN", "probe_passed"): "READY",
    ("READY", "probe_failed"): "NOT_READY",
    **{(s, "failing"): "SHUTTING_DOWN" for s in LIVE},
    **{(s, "shutdown"): "SHUTTING_DOWN" for s in LIVE},
    ("SHUTTING_DOWN", "failed"): "FAILED",
    ("SHUTTING_DOWN", "failed_initial_delay"): "FAILED_INITIAL_DELAY",
    ("SHUTTING_DOWN", "failed_probing"): "FAILED_PROBING",
    ("SHUTTING_DOWN", "failed_provision"): "FAILED_PROVISION",
    ("SHUTTING_DOWN", "preempted"): "PREEMPTED",
    ("SHUTTING_DOWN", "cleanup_failed"): "FAILED_CLEANUP",
}
RUNNING = ["REPLICA_INIT", "READY", "NO_REPLICA", "FAILED"]
ROUND = {
    "replica_ready": "READY",
    "none_ready": "REPLICA_INIT",
    "scaled_to_zero": "NO_REPLICA",
    "replicas_failing": "FAILED",
}
EXPECTED_SERVICE = {
    ("CONTROLLER_INIT", "balancer_up"): "REPLICA_INIT",
    ("CONTROLLER_FAILED", "balancer_up"): "REPLICA_INIT",
    ("CONTROLLER_INIT", "balancer_failed"): "CONTROLLER_FAILED",
    **{(s, e): to for s in RUNNING for e, to in ROUND.items() if s != to},
    **{(s, "balancer_failed"): "CONTROLLER_FAILED" for s in RUNNING},
    ("REPLICA_INIT", "update"): "REPLICA_INIT",
    ("READY", "update"): "READY",
    ("NO_REPLICA", "update"): "NO_REPLICA",
    ("FAILED", "update"): "REPLICA_INIT",
    **{
        (s, "down"): "SHUTTING_DOWN"
        for s in [*RUNNING, "CONTROLLER_INIT", "CONTROLLER_FAILED", "FAILED_CLEANUP"]
    },
    ("SHUTTING_DOWN", "cleanup_failed"): "FAILED_CLEANUP",
}


def test_every_replica_state_and_event_pair_moves_exactly_as_the_table_says() -> None:
    machine = Machine("replica", REPLICA_TRANSITIONS)
    for state, event in itertools.product(R, ReplicaEvent):
        want = EXPECTED_REPLICA.get((state.value, event.value))
        if want is None:
            assert not machine.allows(state, event), (state, event)
            try:
                machine.next(state, event)
            except TransitionError:
                continue
            raise AssertionError(f"{state} {event} is allowed")
        assert machine.next(state, event).value == want, (state, event)


def test_every_service_state_and_event_pair_moves_exactly_as_the_table_says() -> None:
    machine = Machine("service", SERVICE_TRANSITIONS)
    for state, event in itertools.product(S, ServiceEvent):
        want = EXPECTED_SERVICE.get((state.value, event.value))
        if want is None:
            assert not machine.allows(state, event), (state, event)
        else:
            assert machine.next(state, event).value == want, (state, event)


def test_an_ended_replica_is_reached_only_through_its_teardown() -> None:
    for (state, _), to in REPLICA_TRANSITIONS.items():
        if to.is_terminal:
            assert state is R.SHUTTING_DOWN


def seen(*replicas: tuple[int, int, R]) -> list[ReplicaSeen]:
    return [ReplicaSeen(i, v, s) for i, v, s in replicas]


def test_the_service_shows_ready_while_any_replica_is_ready_even_with_a_broken_version() -> None:
    replicas = seen((1, 1, R.READY), (2, 2, R.FAILED))
    assert service_event(S.REPLICA_INIT, replicas, 1, failing=True) is SE.REPLICA_READY
    assert service_event(S.READY, replicas, 1, failing=True) is None
    starting = seen((3, 2, R.STARTING))
    assert service_event(S.READY, starting, 1, failing=False) is SE.NONE_READY
    assert service_event(S.REPLICA_INIT, starting, 1, failing=True) is SE.REPLICAS_FAILING
    assert service_event(S.READY, [], 0, failing=False) is SE.SCALED_TO_ZERO
    assert service_event(S.NO_REPLICA, [], 0, failing=False) is None
    assert service_event(S.SHUTTING_DOWN, starting, 1, failing=False) is None


def test_a_probe_answer_moves_a_replica_by_its_state_and_the_initial_delay() -> None:
    def probe(state: R, ok: bool, age: float = 1.0, failures: int = 0) -> tuple[object, ...]:
        o = on_probe(
            state, ok, "x", now=100.0, started_at=100.0 - age, initial_delay=10.0,
            failures=failures,
        )  # fmt: skip
        return o.event, o.end, o.failures

    assert probe(R.STARTING, True) == (RE.PROBE_PASSED, None, 0)
    assert probe(R.STARTING, False, age=5) == (None, None, 1)
    assert probe(R.STARTING, False, age=11) == (RE.FAILING, RE.FAILED_INITIAL_DELAY, 1)
    assert probe(R.READY, True) == (None, None, 0)
    assert probe(R.READY, False) == (RE.PROBE_FAILED, None, 1)
    assert probe(R.NOT_READY, False, failures=1) == (None, None, 2)
    assert probe(R.NOT_READY, False, failures=2) == (RE.FAILING, RE.FAILED_PROBING, 3)
    assert probe(R.NOT_READY, True, failures=2) == (RE.PROBE_PASSED, None, 0)
    assert probe(R.SHUTTING_DOWN, False) == (None, None, 0)


def test_replicas_sharing_this_machines_network_each_get_the_lowest_free_port() -> None:
    assert replica_port(8080, {8080, 8081}, shared_network=False) == 8080
    assert replica_port(8080, set(), shared_network=True) == 8080
    assert replica_port(8080, {8080}, shared_network=True) == 8081
    assert replica_port(8080, {8080, 8082}, shared_network=True) == 8081


def test_a_replica_names_its_accelerator_only_when_its_task_asks_for_one() -> None:
    from stixd.actors.service_rounds import _accelerator
    from stixproto.task import Resources, Task

    assert _accelerator(Task(resources=Resources(accelerators="A100:2"))) == "A100"
    assert _accelerator(Task(resources=Resources(accelerators={"A100": 1, "H100": 1}))) is None
    assert _accelerator(Task()) is None
