"""The rotation's choices on a fake clock, and the control frames' limits."""

from __future__ import annotations

import msgspec
import pytest

from stixd.balancer import wire
from stixd.balancer.pool import FAILURE_MEMORY, FIRST_BACKOFF, Pool


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def pool(policy: str = "least_load", weights: tuple[float, ...] = (1.0, 1.0)) -> Pool:
    clock = FakeClock()
    p = Pool(policy=policy, clock=clock)
    p.set_ready(
        [
            wire.Replica(i + 1, f"http://127.0.0.1:{9000 + i}", weight=w)
            for i, w in enumerate(weights)
        ]
    )
    return p


def test_least_load_picks_the_replica_with_fewest_in_flight() -> None:
    p = pool()
    p.slots[0].in_flight = 3
    assert all(p.choose() is p.slots[1] for _ in range(5))


def test_a_failed_replica_is_out_for_a_growing_backoff_and_back_on_success() -> None:
    p = pool()
    clock = p.clock
    assert isinstance(clock, FakeClock)
    dead = p.slots[0]
    assert p.failed(dead) == FIRST_BACKOFF
    assert p.failed(dead) is None  # already out: one ejection reported
    assert p.suspects == [1]
    assert all(p.choose() is p.slots[1] for _ in range(5))
    clock.now += FIRST_BACKOFF + 0.01
    p.slots[1].in_flight = 50  # busy, yet the replica that just failed still weighs more
    assert p.choose() is p.slots[1]
    assert p.failed(dead) == 2 * FIRST_BACKOFF  # failed again on its trial: out for longer
    clock.now += FAILURE_MEMORY + 2 * FIRST_BACKOFF
    assert p.choose() is dead  # its failures are old now, and the other is busy
    p.succeeded(dead)
    assert p.failed(dead) == FIRST_BACKOFF


def test_when_every_replica_is_out_new_requests_wait_until_one_is_revived() -> None:
    p = pool()
    p.failed(p.slots[1])  # reset a connection
    p.clock.now += 0.5  # type: ignore[attr-defined]
    assert p.out_of_rotation() == []  # one is still in
    p.failed(p.slots[0], refused=True)
    assert p.out_of_rotation() == p.slots and p.worth_waiting()
    assert p.choose() is None  # a request waits
    woken = p.changed()
    p.revived(p.slots[1])  # accepting says nothing of one that reset: it waits its backoff out
    assert not woken.is_set() and p.out_of_rotation() == p.slots
    p.revived(p.slots[0])
    assert woken.is_set() and p.out_of_rotation() == []
    assert p.choose() is p.slots[0]
    assert p.failed(p.slots[0], refused=True) == 2 * FIRST_BACKOFF  # revived, not forgiven


def test_when_every_replica_is_out_for_resets_the_one_back_soonest_is_tried_and_none_twice() -> (
    None
):
    p = pool()
    p.failed(p.slots[1])
    p.clock.now += 0.5  # type: ignore[attr-defined]
    p.failed(p.slots[0])
    assert not p.worth_waiting()  # accepting and resetting: nothing to wait for
    assert p.choose() is p.slots[1]
    assert p.choose([p.slots[1]]) is p.slots[0]
    assert p.choose(p.slots) is None


def test_round_robin_alternates_and_instance_aware_divides_by_weight() -> None:
    rr = pool("round_robin")
    assert [rr.choose().replica.replica_id for _ in range(4)] in ([1, 2, 1, 2], [2, 1, 2, 1])  # type: ignore[union-attr]
    aware = pool("instance_aware_least_load", weights=(1.0, 4.0))
    aware.slots[0].in_flight, aware.slots[1].in_flight = 1, 3  # 1/1 against 3/4
    assert aware.choose() is aware.slots[1]


def test_a_new_ready_set_keeps_the_state_of_replicas_that_stay() -> None:
    p = pool()
    p.slots[0].in_flight = 2
    p.failed(p.slots[0])
    p.set_ready([p.slots[0].replica, wire.Replica(3, "http://127.0.0.1:9100")])
    assert p.slots[0].in_flight == 2 and p.slots[0].failures == 1
    assert [s.replica.replica_id for s in p.slots] == [1, 3]


@pytest.mark.parametrize(
    "replica",
    [
        {"replica_id": 1, "url": "file:///etc/passwd"},
        {"replica_id": -1, "url": "http://a:1"},
        {"replica_id": 1, "url": "http://a:1", "weight": float("nan")},
        {"replica_id": 1, "url": "http://a:1", "weight": 0},
    ],
)
def test_control_frames_refuse_bad_replicas(replica: dict[str, object]) -> None:
    raw = msgspec.msgpack.encode(
        {"v": wire.VERSION, "body": {"type": "SetReady", "replicas": [replica]}}
    )
    with pytest.raises(wire.ProtocolBroken):
        wire.decode(raw)


def test_control_frames_over_the_limit_are_refused_before_reading() -> None:
    with pytest.raises(wire.ProtocolBroken):
        wire.frame_length(wire.HEADER.pack(wire.MAX_FRAME + 1))
    assert wire.decode(wire.encode(wire.Hello())[wire.HEADER.size :]) == wire.Hello()
