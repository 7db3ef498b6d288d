"""What the planner knows of ``nebius``: no disk tiers; network_tier: best only on InfiniBand
machines (8x H100 or H200)."""

from __future__ import annotations

from stixd.planner.infra_meta import Feature, InfraMeta

_INFINIBAND = {"H100", "H200"}


def gaps(
    disk_tier: str | None, acc: str | None, count: float | None, need: frozenset[Feature]
) -> set[Feature]:
    if "network_tier" in need and not (acc in _INFINIBAND and count == 8):
        return {"network_tier"}
    return set()


META = InfraMeta(
    name="nebius", display="Nebius", unsupported=frozenset({"disk_tier"}), feature_gaps=gaps
)
