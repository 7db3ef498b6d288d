"""One autoscaler round (`stixd.serve.autoscaler.decide`) over 1,000 replicas and 100,000
request arrivals, as a ratio to a trivial loop over the same replicas (one status check each),
both timed in this process's CPU time in the same run, interleaved.

The fleet is mid-rollout (two versions, every start-up state, spot and on-demand) under the
on-demand fallback, so every part of a round runs; the arrivals window is found by bisection,
so their count should barely move the figure (the 1,000-arrival row shows it).

    python -m bench.bench_autoscaler [--rounds 200]
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable, Sequence

from bench.common import median
from stixd.serve.autoscaler import decide
from stixd.serve.seams import ReplicaView, ScalePlan, ScalerMemory
from stixproto.states import ReplicaStatus
from stixproto.task.service import Scaling

NOW = 1_000_000.0
REPLICAS = 1_000
ARRIVALS = 100_000
STATES = [
    ReplicaStatus.READY,
    ReplicaStatus.READY,
    ReplicaStatus.READY,
    ReplicaStatus.STARTING,
    ReplicaStatus.PROVISIONING,
    ReplicaStatus.PENDING,
    ReplicaStatus.NOT_READY,
    ReplicaStatus.PREEMPTED,
    ReplicaStatus.SHUTTING_DOWN,
]


def fleet(rng: random.Random) -> list[ReplicaView]:
    return [
        ReplicaView(
            replica_id=i,
            version=1 if i < REPLICAS * 2 // 3 else 2,
            status=rng.choice(STATES),
            spot=rng.random() < 0.7,
            launched_at=float(i),
        )
        for i in range(1, REPLICAS + 1)
    ]


def arrivals(count: int) -> list[float]:
    span = 120.0  # half of them inside the 60 s window
    return [NOW - span + span * i / count for i in range(count)]


def cpu(fn: Callable[[], object]) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def baseline(replicas: Sequence[ReplicaView]) -> int:
    return sum(r.status is ReplicaStatus.READY for r in replicas)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=200)
    args = p.parse_args()
    rng = random.Random(16)
    replicas = fleet(rng)
    scaling = Scaling(
        min_replicas=100,
        max_replicas=1_200,
        target_qps_per_replica=1.0,
        upscale_delay_seconds=0,
        dynamic_ondemand_fallback=True,
        base_ondemand_fallback_replicas=10,
    )
    memory = ScalerMemory(target=800, version=2, last_round=NOW - 30, ready_version=2)
    cases = {
        f"decide, {REPLICAS} replicas, {ARRIVALS} arrivals": arrivals(ARRIVALS),
        f"decide, {REPLICAS} replicas, 1000 arrivals": arrivals(1_000),
    }

    def round_of(log: list[float]) -> Callable[[], ScalePlan]:
        return lambda: decide(scaling, replicas, log, NOW, memory, version=2)

    plan = round_of(cases[next(iter(cases))])()
    times: dict[str, list[float]] = {label: [] for label in cases}
    base: list[float] = []
    for _ in range(args.rounds):
        base.append(cpu(lambda: baseline(replicas)))
        for label, log in cases.items():
            times[label].append(cpu(round_of(log)))
    floor = median(base)
    print(f"baseline: one status check per replica over {REPLICAS} replicas (CPU, median)")
    for label, xs in times.items():
        print(f"{label:45s} {median(xs) / floor:6.1f} x the baseline")
    print(
        f"(one round: target {plan.target}, {len(plan.launch)} launches, {len(plan.stop)} stops,"
        f" {plan.qps:.0f} qps)"
    )


if __name__ == "__main__":
    main()
