"""A fake fleet for the autoscaler's tests: replicas as plain records that a plan launches and
stops, on a fake clock (plain floats). Nothing here is stix code; it only applies plans."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from stixd.serve.autoscaler import UpdateMode, decide
from stixd.serve.seams import ReplicaView, ScalePlan, ScalerMemory
from stixproto.states import ReplicaStatus
from stixproto.task.service import Scaling

READY = ReplicaStatus.READY


def burst(count: int, start: float, end: float) -> list[float]:
    """``count`` arrival times spread evenly over [start, end)."""
    step = (end - start) / max(count, 1)
    return [start + i * step for i in range(count)]


@dataclass
class FakeFleet:
    scaling: Scaling
    version: int = 1
    mode: UpdateMode = UpdateMode.ROLLING
    use_spot: bool = False
    replicas: dict[int, ReplicaView] = field(default_factory=dict)
    memory: ScalerMemory = field(default_factory=ScalerMemory)
    arrivals: list[float] = field(default_factory=list)
    next_id: int = 1
    plans: list[ScalePlan] = field(default_factory=list)

    def add(self, status: ReplicaStatus, version: int = 1, spot: bool = False) -> int:
        rid = self.next_id
        self.next_id += 1
        self.replicas[rid] = ReplicaView(rid, version, status, spot=spot, launched_at=float(rid))
        return rid

    def set(self, status: ReplicaStatus, ids: Iterable[int]) -> None:
        for rid in ids:
            self.replicas[rid] = replace(self.replicas[rid], status=status)

    def round(self, now: float, *, waiting: int = 0) -> ScalePlan:
        plan = decide(
            self.scaling,
            list(self.replicas.values()),
            self.arrivals,
            now,
            self.memory,
            version=self.version,
            mode=self.mode,
            use_spot=self.use_spot,
            waiting=waiting,
        )
        self.apply(plan)
        return plan

    def apply(self, plan: ScalePlan) -> None:
        self.plans.append(plan)
        self.memory = plan.memory
        for rid in plan.stop:
            assert self.replicas[rid].status not in (ReplicaStatus.SHUTTING_DOWN,), rid
            self.replicas[rid] = replace(self.replicas[rid], status=ReplicaStatus.SHUTTING_DOWN)
        for order in plan.launch:
            self.add(ReplicaStatus.PENDING, order.version, order.spot)

    def forget_stopped(self) -> None:
        self.replicas = {
            k: r for k, r in self.replicas.items() if r.status is not ReplicaStatus.SHUTTING_DOWN
        }

    def live(self, version: int | None = None) -> list[ReplicaView]:
        return [
            r
            for r in self.replicas.values()
            if not r.status.is_terminal
            and r.status is not ReplicaStatus.SHUTTING_DOWN
            and (version is None or r.version == version)
        ]

    def ids(self, status: ReplicaStatus | None = None, version: int | None = None) -> list[int]:
        return sorted(
            r.replica_id for r in self.live(version) if status is None or r.status is status
        )

    def ready(self, version: int | None = None) -> int:
        return len(self.ids(READY, version))


def statuses(replicas: Sequence[ReplicaView]) -> list[tuple[int, int, str]]:
    return [(r.replica_id, r.version, r.status.value) for r in replicas]
