"""Updates on a fake clock: rolling and blue-green step by step, a broken version that stops its
rollout, and max_replicas never exceeded through random traffic, readiness and version bumps."""

from __future__ import annotations

import random

import pytest

from stixd.serve.autoscaler import UpdateMode, decide
from stixd.serve.seams import ReplicaView, ScalerMemory
from stixproto.states import ReplicaStatus
from stixproto.task.service import Scaling
from tests.autoscaler_support import FakeFleet, burst

S = ReplicaStatus
NOW = 50_000.0


def steady(fleet: FakeFleet, count: int) -> None:
    """Bring version 1 up to ``count`` READY replicas."""
    fleet.round(NOW)
    fleet.set(S.READY, fleet.ids())
    assert fleet.ready(1) == count
    fleet.forget_stopped()


def test_rolling_with_headroom_keeps_the_ready_count() -> None:
    fleet = FakeFleet(Scaling(min_replicas=2, max_replicas=4))
    steady(fleet, 2)
    fleet.version = 2
    plan = fleet.round(NOW + 20)
    assert [o.version for o in plan.launch] == [2, 2]  # into the headroom up to max 4
    assert plan.stop == ()
    assert plan.serving_versions == (1,)
    first, second = fleet.ids(version=2)
    old = fleet.ids(version=1)
    fleet.set(S.READY, [first])
    plan = fleet.round(NOW + 40)
    assert len(plan.stop) == 1 and plan.stop[0] in old  # one old leaves
    assert fleet.ready() == 2  # one old and one new serve
    assert plan.serving_versions == (1, 2)  # rolling: both versions in rotation
    fleet.set(S.READY, [second])
    plan = fleet.round(NOW + 60)
    assert len(plan.stop) == 1
    assert fleet.ids(version=1) == []
    assert fleet.ready(2) == 2
    assert plan.serving_versions == (2,)


def test_rolling_without_headroom_replaces_one_at_a_time_within_max() -> None:
    fleet = FakeFleet(Scaling(min_replicas=3, max_replicas=3))  # `replicas: 3`
    steady(fleet, 3)
    fleet.version = 2
    t = NOW
    ready_seen = []
    for k in range(20):
        t += 20
        plan = fleet.round(t)
        assert len(fleet.live()) <= 3
        assert len(plan.launch) <= 1  # one new replica on its way up at a time
        ready_seen.append(fleet.ready())
        if k % 2:  # a new one takes two rounds to come up
            fleet.set(S.READY, fleet.ids(version=2))
        if fleet.ready(2) == 3 and not fleet.ids(version=1):
            break
    assert fleet.ready(2) == 3 and fleet.ids(version=1) == []
    assert min(ready_seen) == 2  # never more than one replica short of the target


def test_rolling_stops_old_not_ready_before_old_ready() -> None:
    fleet = FakeFleet(Scaling(min_replicas=2, max_replicas=4))
    steady(fleet, 2)
    starting = fleet.add(S.STARTING, version=1)  # an old replica still starting
    fleet.version = 2
    plan = fleet.round(NOW + 20)
    assert plan.stop == (starting,)  # 2 old READY are the 2 the new version lacks


def test_blue_green_keeps_old_alone_until_new_has_target_then_all_go() -> None:
    fleet = FakeFleet(Scaling(min_replicas=2, max_replicas=4), mode=UpdateMode.BLUE_GREEN)
    steady(fleet, 2)
    old = fleet.ids(version=1)
    fleet.version = 2
    plan = fleet.round(NOW + 20)
    assert [o.version for o in plan.launch] == [2, 2]
    new = fleet.ids(version=2)
    fleet.set(S.READY, new[:1])
    plan = fleet.round(NOW + 40)
    assert plan.stop == ()  # one of two new READY: old stay
    assert plan.serving_versions == (1,)  # and serve alone
    fleet.set(S.READY, new[1:])
    plan = fleet.round(NOW + 60)
    assert sorted(plan.stop) == old  # all old at once
    assert plan.serving_versions == (2,)


def test_blue_green_without_headroom_stays_within_max() -> None:
    fleet = FakeFleet(Scaling(min_replicas=2, max_replicas=2), mode=UpdateMode.BLUE_GREEN)
    steady(fleet, 2)
    fleet.version = 2
    for k in range(1, 8):
        plan = fleet.round(NOW + 20 * k)
        assert len(fleet.live()) <= 2
        assert len(plan.serving_versions) <= 1
        fleet.set(S.READY, fleet.ids(version=2))
    assert fleet.ready(2) == 2 and fleet.ids(version=1) == []


def test_update_takes_the_wanted_count_at_once() -> None:
    scaling = Scaling(
        min_replicas=1, max_replicas=6, target_qps_per_replica=1.0, upscale_delay_seconds=600
    )
    fleet = FakeFleet(scaling)
    steady(fleet, 1)
    fleet.arrivals = burst(3 * 60, NOW, NOW + 60)
    assert fleet.round(NOW + 60).target == 1  # the upscale delay holds the target
    assert fleet.memory.upscale_rounds == 1
    fleet.version = 2
    plan = fleet.round(NOW + 61)
    assert plan.target == 3  # an update skips the hysteresis, as SkyPilot's update_version
    assert fleet.memory.upscale_rounds == 0


@pytest.mark.parametrize("ending", [S.FAILED_INITIAL_DELAY, S.FAILED, S.FAILED_PROVISION])
def test_broken_new_version_stops_the_rollout_and_old_keeps_serving(
    ending: ReplicaStatus,
) -> None:
    fleet = FakeFleet(Scaling(min_replicas=2, max_replicas=3))
    steady(fleet, 2)
    old = fleet.ids(version=1)
    fleet.version = 2
    fleet.round(NOW + 20)
    broken = fleet.ids(version=2)
    assert broken
    fleet.set(ending, broken[:1])
    plan = fleet.round(NOW + 40)
    assert plan.rollout_failed
    assert plan.launch == () and plan.stop == ()
    assert fleet.ids(S.READY, 1) == old
    assert plan.serving_versions == (1,)
    # It stays stopped after the failed replica's row is gone, and old replicas stay.
    del fleet.replicas[broken[0]]
    for k in range(3, 6):
        plan = fleet.round(NOW + 20 * k)
        assert plan.rollout_failed and not plan.launch and not plan.stop
    assert fleet.ids(S.READY, 1) == old


def test_a_version_once_ready_is_not_broken_by_a_later_failure() -> None:
    fleet = FakeFleet(Scaling(min_replicas=2, max_replicas=2))
    steady(fleet, 2)
    fleet.set(S.FAILED, fleet.ids()[:1])  # the app exits after having served
    plan = fleet.round(NOW + 20)
    assert not plan.rollout_failed
    assert len(plan.launch) == 1


def test_first_version_failing_before_ready_stops_scaling() -> None:
    fleet = FakeFleet(Scaling(min_replicas=2, max_replicas=2))
    fleet.round(NOW)
    fleet.set(S.FAILED_INITIAL_DELAY, fleet.ids()[:1])
    plan = fleet.round(NOW + 20)
    assert plan.rollout_failed and plan.launch == ()
    assert plan.serving_versions == ()


def test_stopped_rollout_resumes_when_a_new_replica_becomes_ready() -> None:
    fleet = FakeFleet(Scaling(min_replicas=2, max_replicas=4))
    steady(fleet, 2)
    fleet.version = 2
    fleet.round(NOW + 20)
    first, second = fleet.ids(version=2)
    fleet.set(S.FAILED, [first])
    assert fleet.round(NOW + 40).rollout_failed
    fleet.set(S.READY, [second])  # the other one comes up after all: the version works
    plan = fleet.round(NOW + 60)
    assert not plan.rollout_failed
    assert [o.version for o in plan.launch] == [2]


def _random_walk(seed: int, scaling: Scaling, mode: UpdateMode) -> None:
    rng = random.Random(seed)
    fleet = FakeFleet(scaling, mode=mode, use_spot=rng.random() < 0.5)
    ceiling = scaling.max_replicas + (scaling.num_overprovision or 0)
    t = NOW
    for _ in range(120):
        t += rng.choice([1.0, 5.0, 20.0, 20.0, 45.0])
        rate = rng.choice([0, 0, 0.5, 2, 5, 20])
        fleet.arrivals = burst(int(rate * 60), t - 60, t)
        if rng.random() < 0.08:
            fleet.version += 1
        for r in fleet.live():
            roll = rng.random()
            if r.status is S.READY and roll < 0.05:
                fleet.set(rng.choice([S.PREEMPTED, S.NOT_READY, S.FAILED_PROBING]), [r.replica_id])
            elif r.status is not S.READY and roll < 0.4:
                fleet.set(S.READY, [r.replica_id])
            elif r.status is S.PENDING and roll < 0.5:
                fleet.set(S.STARTING, [r.replica_id])
            elif r.status is not S.READY and roll < 0.52:
                fleet.set(rng.choice([S.FAILED_PROVISION, S.PREEMPTED]), [r.replica_id])
        if rng.random() < 0.5:
            fleet.forget_stopped()
        plan = fleet.round(t, waiting=rng.choice([0, 0, 0, 3]))
        live = fleet.live()
        allowance = 0
        if scaling.dynamic_ondemand_fallback:  # on-demand stand-ins for spot ones not READY
            spot_ready = sum(r.spot and r.status is S.READY for r in fleet.live(fleet.version))
            allowance = max(0, plan.target - spot_ready)
        assert len(live) <= ceiling + allowance, (seed, t, plan)
        assert all(o.version == fleet.version for o in plan.launch)
        assert len(set(plan.stop)) == len(plan.stop)
        assert scaling.min_replicas <= plan.memory.target <= scaling.max_replicas  # type: ignore[operator]


POLICIES = [
    Scaling(min_replicas=3, max_replicas=3),
    Scaling(min_replicas=1, max_replicas=4, target_qps_per_replica=2.0, upscale_delay_seconds=0),
    Scaling(
        min_replicas=0,
        max_replicas=5,
        target_qps_per_replica=1.5,
        upscale_delay_seconds=20,
        downscale_delay_seconds=40,
        num_overprovision=1,
    ),
    Scaling(
        min_replicas=2,
        max_replicas=4,
        target_qps_per_replica={"A100": 5.0, "T4": 1.0},
        upscale_delay_seconds=0,
        downscale_delay_seconds=0,
    ),
    Scaling(
        min_replicas=1,
        max_replicas=3,
        target_qps_per_replica=1.0,
        base_ondemand_fallback_replicas=1,
        upscale_delay_seconds=0,
    ),
    Scaling(min_replicas=2, max_replicas=3, dynamic_ondemand_fallback=True),
]


@pytest.mark.parametrize("mode", list(UpdateMode))
@pytest.mark.parametrize("policy", range(len(POLICIES)))
def test_max_replicas_never_exceeded_through_random_rounds(policy: int, mode: UpdateMode) -> None:
    for seed in range(25):
        _random_walk(seed * 31 + policy, POLICIES[policy], mode)


def test_skypilot_would_surge_past_max_where_stix_does_not() -> None:
    # SkyPilot launches the whole target of the new version at once while keeping every old
    # replica (2 x target alive); here the alive count stays at max.
    scaling = Scaling(min_replicas=4, max_replicas=4)
    replicas = [ReplicaView(i, 1, S.READY) for i in range(1, 5)]
    memory = decide(scaling, replicas, [], NOW, ScalerMemory(), version=1).memory
    plan = decide(scaling, replicas, [], NOW + 20, memory, version=2)
    assert len(replicas) - len(plan.stop) + len(plan.launch) == 4
    assert len(plan.launch) == 1


def test_dynamic_fallback_adds_no_stand_in_while_old_ready_replicas_cover() -> None:
    scaling = Scaling(min_replicas=2, max_replicas=3, dynamic_ondemand_fallback=True)
    fleet = FakeFleet(scaling)
    fleet.add(S.READY, version=1, spot=True)
    fleet.add(S.READY, version=1, spot=True)
    fleet.round(NOW)
    fleet.version = 2
    plan = fleet.round(NOW + 20)
    # The two old READY spot replicas serve until new ones are READY: a new spot replica comes
    # up into the room under max, and no on-demand stand-in is launched for it.
    assert [(o.version, o.spot) for o in plan.launch] == [(2, True)]
    assert plan.stop == ()


@pytest.mark.parametrize("mode", [UpdateMode.ROLLING, UpdateMode.BLUE_GREEN])
@pytest.mark.parametrize("count", [1, 3])
def test_a_fixed_count_updates_with_one_replica_of_surge_and_never_fewer_ready(
    mode: UpdateMode, count: int
) -> None:
    from stixproto.task.model import Service
    from stixproto.task.service import effective_scaling

    scaling = effective_scaling(Service(replicas=count))  # no max written: a surge of one
    assert scaling.update_surge == 1
    fleet = FakeFleet(scaling, mode=mode)
    steady(fleet, count)
    fleet.version = 2
    t = NOW
    for _ in range(4 * count + 4):
        t += 20
        fleet.round(t)
        assert len(fleet.live()) <= count + 1
        assert fleet.ready() >= count  # the old version serves until new ones take over
        fleet.set(S.READY, fleet.ids(version=2))  # each new replica comes up by the next round
        fleet.forget_stopped()
    assert fleet.ids(version=1) == []
    assert fleet.ready(2) == count


def test_a_written_max_replicas_allows_no_surge() -> None:
    from stixproto.task.model import ReplicaPolicy, Service
    from stixproto.task.service import effective_scaling

    written = effective_scaling(
        Service(replica_policy=ReplicaPolicy(min_replicas=2, max_replicas=2))
    )
    unwritten = effective_scaling(Service(replica_policy=ReplicaPolicy(min_replicas=2)))
    assert (written.update_surge, unwritten.update_surge) == (0, 1)
