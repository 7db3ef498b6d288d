"""How many replicas of which version a service wants now: a pure function of the spec, the
replicas, the requests seen and the clock (no I/O, no hidden state — `ScalerMemory` carries the
hysteresis and the rollout's progress between rounds).

SkyPilot 0.14.1's request-rate autoscaler with its on-demand fallback and both update modes
(`stixd.serve.rate` has the formulas, `stixd.serve.fleet` the orders), with one rule SkyPilot
lacks: the replicas alive never exceed `max_replicas` (+ `num_overprovision`), during updates
included, where the user wrote `max_replicas`. Where SkyPilot would surge past it, a rollout makes
room by letting one old replica go (not-ready ones first) while no new replica is on its way up.
A service with no written maximum (`replicas: N`) may surge by `Scaling.update_surge` (one
replica) while old versions run, so its ready count never drops during an update. Only dynamic
on-demand stand-ins may go past it: one for each spot replica of the target missing or not
READY, as SkyPilot does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from stixd.serve.fleet import (
    UNRECOVERABLE,
    WAS_READY,
    UpdateMode,
    blue_green_serving,
    first_to_stop,
    live,
    ready_count,
    ready_versions,
    scale_down_order,
)
from stixd.serve.rate import (
    ROUND_SECONDS,
    WINDOW_SECONDS,
    Hysteresis,
    accelerator_qps,
    clip,
    requests_in_window,
    round_interval,
    wanted_replicas,
)
from stixd.serve.seams import LaunchOrder, ReplicaView, ScalePlan, ScalerMemory
from stixproto.states import ReplicaStatus
from stixproto.task.service import Scaling

__all__ = ["UpdateMode", "decide", "live"]


def decide(
    scaling: Scaling,
    replicas: Sequence[ReplicaView],
    arrivals: Sequence[float],
    now: float,
    memory: ScalerMemory,
    *,
    version: int,
    mode: UpdateMode = UpdateMode.ROLLING,
    use_spot: bool = False,
    waiting: int = 0,
    round_seconds: float = ROUND_SECONDS,
    window_seconds: float = WINDOW_SECONDS,
) -> ScalePlan:
    """This round's plan for the service at ``version`` (its latest).

    ``replicas``: every replica the service has, the ended ones of the latest version included
    (a failure before READY stops its rollout). ``arrivals``: request times, sorted ascending,
    at least the last ``window_seconds`` of them. ``waiting``: requests held by the balancer
    right now (they count as arrivals; at zero replicas any demand starts a round at once).
    ``use_spot``: the task's own choice, for launches outside the on-demand fallback.
    ``round_seconds``: the decision period (SkyPilot's 20 s; the one at zero replicas is never
    longer than it). ``window_seconds``: how far back requests count towards the QPS
    (SkyPilot's 60 s). Both are shortened only by tests and benchmarks.
    """
    running = live(replicas)
    demand = requests_in_window(arrivals, now, window_seconds=window_seconds) + max(0, waiting)
    qps = demand / window_seconds
    ready_version = memory.ready_version
    if any(r.version == version and r.status in WAS_READY for r in replicas):
        ready_version = max(ready_version, version)
    if ready_version < version and (
        memory.failed_version == version
        or any(r.version == version and r.status in UNRECOVERABLE for r in replicas)
    ):
        return _stopped_rollout(
            scaling, running, qps, now, memory, version, mode, ready_version, round_seconds
        )

    hysteresis, last_round = _target(
        scaling, running, demand, qps, now, memory, version, round_seconds
    )
    extra = scaling.num_overprovision or 0
    final = hysteresis.target + extra
    cast = _cast(scaling, running, version, mode, hysteresis.target, final, use_spot)
    return ScalePlan(
        launch=cast.launch,
        stop=cast.stop,
        target=final,
        memory=ScalerMemory(
            last_round=last_round,
            target=hysteresis.target,
            upscale_since=_since(hysteresis.up, memory.upscale_rounds, memory.upscale_since, now),
            downscale_since=_since(
                hysteresis.down, memory.downscale_rounds, memory.downscale_since, now
            ),
            version=version,
            upscale_rounds=hysteresis.up,
            downscale_rounds=hysteresis.down,
            ready_version=ready_version,
            failed_version=0 if memory.failed_version == version else memory.failed_version,
        ),
        serving_versions=cast.serving,
        next_round_at=last_round + round_interval(final, round_seconds=round_seconds),
        qps=qps,
    )


def _target(
    scaling: Scaling,
    running: Sequence[ReplicaView],
    demand: int,
    qps: float,
    now: float,
    memory: ScalerMemory,
    version: int,
    round_seconds: float,
) -> tuple[Hysteresis, float]:
    """The target after this call, and when its last decision round ran."""
    start = scaling.min_replicas if memory.target is None else memory.target
    current = Hysteresis(clip(start, scaling), memory.upscale_rounds, memory.downscale_rounds)
    if memory.version and version > memory.version:
        # An update takes the wanted count at once and starts the counters afresh (SkyPilot).
        return Hysteresis(wanted_replicas(scaling, qps, running)), now
    final = current.target + (scaling.num_overprovision or 0)
    due = (
        memory.last_round == 0
        or now < memory.last_round  # the clock went back: do not wait for it to catch up
        or now >= memory.last_round + round_interval(final, round_seconds=round_seconds)
        or (current.target == 0 and demand > 0)  # scale from zero as soon as a request comes
    )
    if not due:
        return current, memory.last_round
    wanted = wanted_replicas(scaling, qps, running)
    return current.step(wanted, scaling, round_seconds=round_seconds), now


@dataclass(frozen=True)
class _Cast:
    launch: tuple[LaunchOrder, ...]
    stop: tuple[int, ...]
    serving: tuple[int, ...]


def _cast(
    scaling: Scaling,
    running: Sequence[ReplicaView],
    version: int,
    mode: UpdateMode,
    target: int,
    final: int,
    use_spot: bool,
) -> _Cast:
    """Launches and stops that move ``running`` towards ``final`` replicas of ``version``."""
    new = [r for r in running if r.version == version]
    old = [r for r in running if r.version != version]
    ready_new = ready_count(new)
    outdated = _outdated(old, ready_new, final, mode)
    gone = {r.replica_id for r in outdated}
    covered = ready_count(r for r in old if r.replica_id not in gone)
    wants = _wants(scaling, new, version, target, final, use_spot, covered)
    gone |= {r.replica_id for r in wants.stop}
    staying = [r for r in running if r.replica_id not in gone]
    ceiling = scaling.max_replicas + (scaling.num_overprovision or 0)
    if old:
        ceiling += scaling.update_surge
    # Stand-ins already up are past the ceiling by right: they take no room from the spot
    # replicas they stand in for (a preempted one is replaced beside its stand-in).
    room = ceiling - (len(staying) - wants.standing)
    freed: list[ReplicaView] = []
    kept_old = [r for r in old if r.replica_id not in gone]
    in_flight = any(r.status is not ReplicaStatus.READY for r in staying if r.version == version)
    if wants.launch and room <= 0 and kept_old and not in_flight:
        # No room to bring a new replica up: let the first old one go to make it.
        freed = first_to_stop(kept_old, 1 - room)
        room += len(freed)
    launch = wants.launch[: max(0, room)]
    if wants.stand_ins:
        # Stand-ins may go past the ceiling, as many as the fallback wants.
        alive = len(staying) - len(freed) + len(launch)
        launch += wants.stand_ins[: max(0, ceiling + wants.covering - alive)]
    stop = [*outdated, *freed, *wants.stop]
    after = [r for r in staying if r not in freed]
    return _Cast(
        launch=launch,
        stop=tuple(r.replica_id for r in stop),
        serving=_serving(after, version, final, mode),
    )


def _outdated(
    old: Sequence[ReplicaView], ready_new: int, final: int, mode: UpdateMode
) -> list[ReplicaView]:
    """Older-version replicas to stop now."""
    if ready_new >= final:
        return scale_down_order(old)
    if mode is UpdateMode.ROLLING:
        # Keep as many old as the new version is short of READY ones (not-ready old go first).
        return first_to_stop(old, len(old) - (final - ready_new))
    serving = blue_green_serving(old)
    if serving is None:
        return []
    return scale_down_order(r for r in old if r.version != serving)


@dataclass(frozen=True)
class _Wants:
    launch: tuple[LaunchOrder, ...]
    """The target's own, in priority order: base on-demand first, then spot."""
    stop: list[ReplicaView]
    stand_ins: tuple[LaunchOrder, ...] = ()
    """On-demand stand-ins to launch for spot replicas missing or not READY (dynamic fallback)."""
    covering: int = 0
    """How many stand-ins the fallback wants in all (launched or not)."""
    standing: int = 0
    """How many of them are up already (on-demand replicas kept beyond the base ones)."""


def _wants(
    scaling: Scaling,
    new: Sequence[ReplicaView],
    version: int,
    target: int,
    final: int,
    use_spot: bool,
    covered: int,
) -> _Wants:
    """What the current version lacks or has too much of; ``covered``: READY older replicas
    still serving, which on-demand stand-ins need not cover again."""
    base = scaling.base_ondemand_fallback_replicas
    dynamic = scaling.dynamic_ondemand_fallback
    if not dynamic and base <= 0:
        launch = _orders(version, use_spot, final - len(new))
        return _Wants(launch, first_to_stop(new, len(new) - final, _replica_qps(scaling)))
    # On-demand fallback (SkyPilot's FallbackRequestRateAutoscaler): `base` replicas always on
    # demand, the rest on spot; with `dynamic`, an on-demand stand-in for each spot replica not
    # READY, never more on demand than the target (overprovision is not covered). Unlike
    # SkyPilot, no stand-in for a spot replica an older READY one still covers in a rollout.
    spot = [r for r in new if r.spot]
    on_demand = [r for r in new if not r.spot]
    spot_wanted = max(0, final - base)
    base_wanted = min(base, target)
    od_wanted = base + (max(0, spot_wanted - ready_count(spot) - covered) if dynamic else 0)
    od_wanted = min(od_wanted, target)
    covering = max(0, od_wanted - base_wanted)
    od_launch = max(0, od_wanted - len(on_demand))
    base_launch = min(od_launch, max(0, base_wanted - len(on_demand)))
    launch = _orders(version, False, base_launch) + _orders(version, True, spot_wanted - len(spot))
    stand_ins = _orders(version, False, od_launch - base_launch)
    stop = [
        *first_to_stop(spot, len(spot) - spot_wanted),
        *first_to_stop(on_demand, len(on_demand) - od_wanted),
    ]
    standing = max(0, min(len(on_demand), od_wanted) - base_wanted)
    return _Wants(launch, stop, stand_ins, covering, standing)


def _replica_qps(scaling: Scaling) -> Callable[[ReplicaView], float] | None:
    """Each replica's own target under the per-accelerator form (None: one target for all)."""
    targets = scaling.target_qps_per_replica
    if not isinstance(targets, Mapping):
        return None
    table = {name: float(value) for name, value in targets.items()}
    return lambda r: accelerator_qps(table, r.accelerator)


def _orders(version: int, spot: bool, count: int) -> tuple[LaunchOrder, ...]:
    return (LaunchOrder(version, spot=spot),) * max(0, count)  # frozen: one object serves all


def _serving(
    staying: Sequence[ReplicaView], version: int, final: int, mode: UpdateMode
) -> tuple[int, ...]:
    if mode is UpdateMode.ROLLING:
        return ready_versions(staying)
    ready_new = ready_count(r for r in staying if r.version == version)
    older = blue_green_serving([r for r in staying if r.version != version])
    if older is None or ready_new >= max(1, final):
        return (version,) if ready_new else ()
    return (older,)


def _stopped_rollout(
    scaling: Scaling,
    running: Sequence[ReplicaView],
    qps: float,
    now: float,
    memory: ScalerMemory,
    version: int,
    mode: UpdateMode,
    ready_version: int,
    round_seconds: float,
) -> ScalePlan:
    """The latest version failed before it was ever READY: launch and stop nothing (SkyPilot
    stops scaling altogether), so the older version keeps serving as it is."""
    target = clip(scaling.min_replicas if memory.target is None else memory.target, scaling)
    final = target + (scaling.num_overprovision or 0)
    old = [r for r in running if r.version != version]
    if mode is UpdateMode.ROLLING:
        serving = ready_versions(running)
    else:
        older = blue_green_serving(old)
        serving = () if older is None else (older,)
    return ScalePlan(
        target=final,
        memory=ScalerMemory(
            last_round=memory.last_round,
            target=memory.target,
            upscale_since=memory.upscale_since,
            downscale_since=memory.downscale_since,
            version=version,
            upscale_rounds=memory.upscale_rounds,
            downscale_rounds=memory.downscale_rounds,
            ready_version=ready_version,
            failed_version=version,
        ),
        rollout_failed=True,
        serving_versions=serving,
        next_round_at=now + round_interval(final, round_seconds=round_seconds),
        qps=qps,
    )


def _since(rounds: int, before: int, since: float | None, now: float) -> float | None:
    if rounds == 0:
        return None
    return since if before > 0 and since is not None else now
