"""The autoscaler's policy on a fake clock: SkyPilot 0.14.1's request-rate formulas, hysteresis
counted in decision rounds, scale from zero, on-demand fallback and the scale-down order.
(Updates and the max_replicas property: test_autoscaler_updates.py.)"""

from __future__ import annotations

import math

import pytest

from stixd.serve.autoscaler import decide
from stixd.serve.fleet import scale_down_order
from stixd.serve.rate import recent_arrivals
from stixd.serve.seams import ReplicaView, ScalePlan, ScalerMemory
from stixproto.states import ReplicaStatus
from stixproto.task.service import Scaling
from tests.autoscaler_support import FakeFleet, burst

S = ReplicaStatus
NOW = 10_000.0


def quick(**kw: object) -> Scaling:
    """A policy whose target follows the traffic at the first round (no hysteresis)."""
    base: dict[str, object] = {"upscale_delay_seconds": 0.0, "downscale_delay_seconds": 0.0}
    base.update(kw)
    return Scaling(**base)  # type: ignore[arg-type]


# requests in the last 60 s, target_qps_per_replica, min, max, overprovision -> replicas wanted
RATE_TABLE = [
    (0, 1.0, 1, 5, None, 1),  # no traffic: min
    (60, 1.0, 1, 5, None, 1),  # 1 qps / 1 = 1
    (61, 1.0, 1, 5, None, 2),  # ceil(1.0167) = 2
    (180, 1.0, 1, 5, None, 3),
    (180, 0.5, 1, 5, None, 5),  # 3 qps / 0.5 = 6, clipped to max 5
    (6000, 1.0, 2, 4, None, 4),
    (30, 1.0, 2, 4, None, 2),  # 0.5 qps wants 1, clipped up to min 2
    (120, 1.0, 1, 5, 2, 4),  # 2 + overprovision 2
    (6000, 1.0, 1, 3, 2, 5),  # max 3 + overprovision 2
    (0, 1.0, 0, 3, None, 0),  # min 0, no traffic: nothing
    (1, 1.0, 0, 3, None, 1),  # one request in the window: one replica
    (150, 2.5, 0, 9, None, 1),  # 2.5 qps / 2.5 = 1 exactly
    (151, 2.5, 0, 9, None, 2),
]


@pytest.mark.parametrize(("requests", "qps", "low", "high", "extra", "want"), RATE_TABLE)
def test_target_is_ceil_of_qps_over_target_clipped_plus_overprovision(
    requests: int, qps: float, low: int, high: int, extra: int | None, want: int
) -> None:
    scaling = quick(
        min_replicas=low, max_replicas=high, target_qps_per_replica=qps, num_overprovision=extra
    )
    arrivals = burst(requests, NOW - 59.0, NOW)
    # Start from a target of 0 so the first round takes the wanted count whatever it is.
    plan = decide(scaling, [], arrivals, NOW, ScalerMemory(target=0, version=1), version=1)
    assert plan.target == want
    assert len(plan.launch) == want
    assert plan.qps == pytest.approx(requests / 60)
    expected = max(low, min(high, math.ceil(requests / 60 / qps))) + (extra or 0)
    assert plan.target == expected


def test_qps_window_is_the_last_60_seconds() -> None:
    scaling = quick(min_replicas=0, max_replicas=10, target_qps_per_replica=1.0)
    old = burst(600, NOW - 200, NOW - 60.001)  # outside the window
    edge = [NOW - 60.0]  # exactly at the edge counts, as SkyPilot's bisect_left keeps it
    fresh = burst(119, NOW - 30, NOW)
    plan = decide(scaling, [], old + edge + fresh, NOW, ScalerMemory(target=0), version=1)
    assert plan.qps == pytest.approx(120 / 60)
    assert plan.target == 2


def test_recent_arrivals_keeps_the_window_sorted() -> None:
    kept = [NOW - 90, NOW - 61, NOW - 50, NOW - 10]
    fresh = [NOW - 2, NOW - 70, NOW - 5, NOW - 60]  # two balancers' logs, interleaved
    assert recent_arrivals(kept, fresh, NOW) == [NOW - 60, NOW - 50, NOW - 10, NOW - 5, NOW - 2]


def test_fixed_count_ignores_traffic() -> None:
    heavy = burst(100_000, NOW - 60, NOW)
    fixed = Scaling(min_replicas=3, max_replicas=3)  # `replicas: 3`
    no_target = Scaling(min_replicas=1, max_replicas=4)  # a range but no QPS target: keeps min
    assert decide(fixed, [], heavy, NOW, ScalerMemory(), version=1).target == 3
    assert decide(no_target, [], heavy, NOW, ScalerMemory(), version=1).target == 1


def _view(
    rid: int, status: ReplicaStatus, accelerator: str | None, version: int = 1
) -> ReplicaView:
    return ReplicaView(rid, version, status, accelerator=accelerator)


def test_per_accelerator_target_adds_strongest_kind_for_excess() -> None:
    # Capacity of the live replicas: A100 10 + T4 2 (the `T4:1` key matches `T4`) = 12 qps.
    scaling = quick(
        min_replicas=1, max_replicas=10, target_qps_per_replica={"A100": 10.0, "T4:1": 2.0}
    )
    fleet = [_view(1, S.READY, "A100"), _view(2, S.STARTING, "T4")]
    # 30 qps >= 12: 2 live + ceil(18 / 10) = 4.
    arrivals = burst(30 * 60, NOW - 60, NOW)
    memory = ScalerMemory(target=2, version=1, last_round=1.0)
    plan = decide(scaling, fleet, arrivals, NOW, memory, version=1)
    assert plan.target == 4
    assert len(plan.launch) == 2


def test_per_accelerator_target_keeps_fewest_ready_strongest_first() -> None:
    scaling = quick(
        min_replicas=1, max_replicas=10, target_qps_per_replica={"A100": 10.0, "T4": 2.0}
    )
    fleet = [
        _view(1, S.READY, "T4"),
        _view(2, S.READY, "A100"),
        _view(3, S.READY, "T4"),
        _view(4, S.READY, None),  # unknown kind: the smallest target (2)
    ]
    memory = ScalerMemory(target=4, version=1, last_round=1.0)
    # 11 qps < capacity 16: A100 (10) is not > 11, A100 + T4 (12) is: 2 replicas.
    plan = decide(scaling, fleet, burst(11 * 60, NOW - 60, NOW), NOW, memory, version=1)
    assert plan.target == 2
    # 9 qps: the A100 alone carries it.
    plan = decide(scaling, fleet, burst(9 * 60, NOW - 60, NOW), NOW, memory, version=1)
    assert plan.target == 1


def test_per_accelerator_scale_down_stops_the_weakest_first() -> None:
    scaling = quick(
        min_replicas=1, max_replicas=10, target_qps_per_replica={"A100": 10.0, "T4": 2.0}
    )
    fleet = [
        _view(1, S.READY, "T4"),
        _view(2, S.READY, "A100"),
        _view(3, S.READY, "A100"),
        _view(4, S.READY, "T4"),
        _view(5, S.STARTING, "A100"),
    ]
    memory = ScalerMemory(target=5, version=1, last_round=1.0)
    # 15 qps: A100 + A100 (20) carry it, so 3 go: the one still starting, then the T4s.
    plan = decide(scaling, fleet, burst(15 * 60, NOW - 60, NOW), NOW, memory, version=1)
    assert plan.target == 2
    assert plan.stop == (5, 4, 1)


def test_upscale_waits_for_consecutive_rounds() -> None:
    # upscale_delay 60 s = int(60 / 20) = 3 consecutive rounds above the target.
    scaling = Scaling(
        min_replicas=1, max_replicas=5, target_qps_per_replica=1.0, upscale_delay_seconds=60
    )
    fleet = FakeFleet(scaling)
    fleet.round(NOW)  # first round: min
    assert fleet.memory.target == 1
    t = NOW
    targets = []
    for _ in range(3):
        t += 20
        fleet.arrivals = burst(3 * 60, t - 60, t)  # 3 qps
        targets.append(fleet.round(t).target)
    assert targets == [1, 1, 3]
    assert fleet.memory.upscale_rounds == 0


def test_rounds_run_every_20_seconds_not_on_every_call() -> None:
    scaling = Scaling(
        min_replicas=1, max_replicas=5, target_qps_per_replica=1.0, upscale_delay_seconds=60
    )
    fleet = FakeFleet(scaling)
    first = fleet.round(NOW)
    assert first.next_round_at == NOW + 20

    def at(dt: float) -> ScalePlan:
        fleet.arrivals = burst(3 * 60, NOW + dt - 60, NOW + dt)
        return fleet.round(NOW + dt)

    for dt in (1, 5, 10, 19.9):  # calls between rounds do not count as rounds
        plan = at(dt)
        assert plan.memory.upscale_rounds == 0
        assert plan.memory.last_round == NOW
    assert at(20).memory.upscale_rounds == 1
    assert at(30).memory.upscale_rounds == 1
    assert at(40).memory.upscale_rounds == 2
    assert at(60).target == 3


def test_a_round_at_the_target_resets_the_upscale_count() -> None:
    scaling = Scaling(
        min_replicas=1, max_replicas=5, target_qps_per_replica=1.0, upscale_delay_seconds=60
    )
    fleet = FakeFleet(scaling)
    fleet.round(NOW)
    fleet.arrivals = burst(180, NOW - 40, NOW + 20)  # 3 qps seen at NOW + 20
    assert fleet.round(NOW + 20).memory.upscale_rounds == 1
    assert fleet.memory.upscale_since == NOW + 20
    fleet.arrivals = []  # the burst is over at the next round
    assert fleet.round(NOW + 40).memory.upscale_rounds == 0
    assert fleet.memory.upscale_since is None
    targets = []
    for t in (60, 80, 100):
        fleet.arrivals = burst(180, NOW + t - 60, NOW + t)
        targets.append(fleet.round(NOW + t).target)
    assert targets == [1, 1, 3]


def test_downscale_waits_for_its_own_delay() -> None:
    # downscale_delay 100 s = 5 rounds; upscale at once.
    scaling = Scaling(
        min_replicas=1,
        max_replicas=5,
        target_qps_per_replica=1.0,
        upscale_delay_seconds=0,
        downscale_delay_seconds=100,
    )
    fleet = FakeFleet(scaling)
    fleet.arrivals = burst(4 * 60, NOW - 60, NOW)
    fleet.round(NOW)
    assert fleet.memory.target == 4
    fleet.set(S.READY, fleet.ids())
    fleet.arrivals = []
    targets = [fleet.round(NOW + 20 * k).target for k in range(1, 7)]
    assert targets == [4, 4, 4, 4, 1, 1]
    last = fleet.plans[-2]
    assert len(last.stop) == 3


def test_scale_from_zero_at_once_when_a_request_arrives() -> None:
    scaling = Scaling(
        min_replicas=0, max_replicas=3, target_qps_per_replica=5.0, upscale_delay_seconds=300
    )
    fleet = FakeFleet(scaling)
    idle = fleet.round(NOW)
    assert idle.target == 0 and not idle.launch
    assert idle.next_round_at == NOW + 5  # every 5 s at zero
    fleet.arrivals = [NOW + 1.0]
    plan = fleet.round(NOW + 1.0)  # 1 s later, not waiting for the round nor the upscale delay
    assert plan.target == 1
    assert len(plan.launch) == 1
    assert plan.next_round_at == NOW + 21


def test_requests_waiting_at_the_balancer_wake_the_service() -> None:
    scaling = Scaling(min_replicas=0, max_replicas=2, target_qps_per_replica=5.0)
    memory = decide(scaling, [], [], NOW, ScalerMemory(), version=1).memory
    plan = decide(scaling, [], [], NOW + 0.5, memory, version=1, waiting=3)
    assert plan.target == 1 and len(plan.launch) == 1


def test_a_service_at_zero_without_a_qps_target_wakes_with_one_replica_and_sleeps_again() -> None:
    scaling = Scaling(min_replicas=0, max_replicas=2, downscale_delay_seconds=0)
    fleet = FakeFleet(scaling)
    assert fleet.round(NOW).target == 0
    fleet.arrivals = [NOW + 1.0, NOW + 1.5, NOW + 2.0]
    woken = fleet.round(NOW + 2.0)
    assert woken.target == 1 and len(woken.launch) == 1  # never more: it has no target to scale by
    # a window (60 s) with no request: back to zero
    assert fleet.round(NOW + 2.0 + 20).target == 1
    assert [fleet.round(NOW + 2.0 + 20 * k).target for k in (2, 3, 4)][-1] == 0


def test_launches_follow_the_tasks_spot_choice() -> None:
    scaling = Scaling(min_replicas=2, max_replicas=2)
    spot = decide(scaling, [], [], NOW, ScalerMemory(), version=1, use_spot=True)
    assert [o.spot for o in spot.launch] == [True, True]
    plain = decide(scaling, [], [], NOW, ScalerMemory(), version=1)
    assert [o.spot for o in plain.launch] == [False, False]


def test_base_on_demand_replicas_stay_on_demand() -> None:
    scaling = Scaling(min_replicas=3, max_replicas=3, base_ondemand_fallback_replicas=1)
    fleet = FakeFleet(scaling)
    plan = fleet.round(NOW)
    assert sorted(o.spot for o in plan.launch) == [False, True, True]
    # A spot replica preempted: only spot is replaced, the on-demand base stays as it is.
    fleet.set(S.READY, fleet.ids())
    spot_id = next(r.replica_id for r in fleet.live() if r.spot)
    fleet.set(S.PREEMPTED, [spot_id])
    plan = fleet.round(NOW + 20)
    assert [o.spot for o in plan.launch] == [True]
    assert plan.stop == ()


def test_dynamic_fallback_covers_spot_not_ready_then_lets_go() -> None:
    scaling = Scaling(min_replicas=2, max_replicas=2, dynamic_ondemand_fallback=True)
    fleet = FakeFleet(scaling)
    plan = fleet.round(NOW)
    # Two spot replicas and, while they are not READY, two on-demand stand-ins.
    assert sorted(o.spot for o in plan.launch) == [False, False, True, True]
    on_demand = [r.replica_id for r in fleet.live() if not r.spot]
    spots = [r.replica_id for r in fleet.live() if r.spot]
    fleet.set(S.READY, on_demand)
    fleet.set(S.READY, spots[:1])
    plan = fleet.round(NOW + 20)
    assert not plan.launch
    assert len(plan.stop) == 1 and plan.stop[0] in on_demand
    fleet.set(S.READY, spots[1:])
    plan = fleet.round(NOW + 40)
    assert len(plan.stop) == 1 and plan.stop[0] in on_demand
    assert [r.spot for r in fleet.live()] == [True, True]
    # A spot preempted: a spot replacement and an on-demand stand-in for it.
    fleet.set(S.PREEMPTED, spots[:1])
    plan = fleet.round(NOW + 60)
    assert sorted(o.spot for o in plan.launch) == [False, True]


def test_a_spot_replica_preempted_before_ready_is_replaced_beside_its_stand_in() -> None:
    scaling = Scaling(min_replicas=1, max_replicas=1, dynamic_ondemand_fallback=True)
    fleet = FakeFleet(scaling)
    plan = fleet.round(NOW)
    assert sorted(o.spot for o in plan.launch) == [False, True]
    spot = next(r.replica_id for r in fleet.live() if r.spot)
    fleet.set(S.STARTING, fleet.ids())
    fleet.set(S.PREEMPTED, [spot])
    # The stand-in is past max_replicas by right: it leaves room for the spot replacement.
    plan = fleet.round(NOW + 1)
    assert [o.spot for o in plan.launch] == [True]
    assert plan.stop == ()
    assert len(fleet.live()) == 2  # one spot, one stand-in: max 1 plus the one it covers


def test_dynamic_fallback_does_not_cover_overprovision() -> None:
    scaling = Scaling(
        min_replicas=2, max_replicas=2, dynamic_ondemand_fallback=True, num_overprovision=1
    )
    plan = decide(scaling, [], [], NOW, ScalerMemory(), version=1)
    assert sum(o.spot for o in plan.launch) == 3  # target 2 + 1 on spot
    assert sum(not o.spot for o in plan.launch) == 2  # on demand only up to the target, 2


def test_scale_down_order_is_skypilots() -> None:
    replicas = [
        ReplicaView(1, 1, S.READY),
        ReplicaView(2, 2, S.READY),
        ReplicaView(3, 1, S.READY),
        ReplicaView(4, 2, S.STARTING),
        ReplicaView(5, 2, S.PENDING),
        ReplicaView(6, 1, S.NOT_READY),
        ReplicaView(7, 2, S.PROVISIONING),
        ReplicaView(8, 1, S.PROVISIONING),
    ]
    order = [r.replica_id for r in scale_down_order(replicas)]
    # Start-up stage first (PENDING, PROVISIONING, STARTING, NOT_READY, READY), then the older
    # version, then the highest replica id (the newest launched) among equals.
    assert order == [5, 8, 7, 4, 6, 3, 1, 2]


def test_scaling_down_stops_the_first_in_order() -> None:
    scaling = Scaling(min_replicas=2, max_replicas=2)
    replicas = [
        ReplicaView(1, 1, S.READY),
        ReplicaView(2, 1, S.READY),
        ReplicaView(3, 1, S.READY),
        ReplicaView(4, 1, S.STARTING),
    ]
    plan = decide(scaling, replicas, [], NOW, ScalerMemory(), version=1)
    assert plan.stop == (4, 3)


def test_ended_and_leaving_replicas_do_not_count_and_preempted_are_replaced() -> None:
    scaling = Scaling(min_replicas=3, max_replicas=3)
    replicas = [
        ReplicaView(1, 1, S.READY),
        ReplicaView(2, 1, S.PREEMPTED),
        ReplicaView(3, 1, S.SHUTTING_DOWN),
        ReplicaView(4, 1, S.FAILED_PROBING),  # was READY: no rollout stop, just replaced
        ReplicaView(5, 1, S.FAILED_CLEANUP),
    ]
    plan = decide(scaling, replicas, [], NOW, ScalerMemory(), version=1)
    assert len(plan.launch) == 2
    assert plan.stop == ()
    assert not plan.rollout_failed


def test_memory_round_trips_through_msgspec() -> None:
    import msgspec

    fleet = FakeFleet(Scaling(min_replicas=1, max_replicas=4, target_qps_per_replica=1.0))
    fleet.arrivals = burst(240, NOW - 60, NOW)
    fleet.round(NOW)
    fleet.round(NOW + 20)
    raw = msgspec.json.encode(fleet.memory)
    assert msgspec.json.decode(raw, type=ScalerMemory) == fleet.memory
    assert fleet.memory.upscale_rounds == 2
