"""Blocked resources: what the launcher could not get, taken out of the next plan.

A block matches a launchable when every field it sets is equal (SkyPilot's
``should_be_blocked_by``). A zone on a region-level launchable (on-demand AWS tries a region's
zones in one call) removes that zone from its list; the launchable goes when no zone is left.
SkyPilot leaves such a launchable in place, and its provisioner then retries the blocked zone.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from stixd.planner.candidates import Launchable
from stixd.planner.request import Blocked

__all__ = ["apply_blocked"]


def _blocks(b: Blocked, lc: Launchable) -> bool:
    """Whether ``b`` matches ``lc`` on every field it sets but the zone."""
    return (
        (b.cloud is None or b.cloud == lc.cloud)
        and (b.region is None or b.region == lc.region)
        and (b.instance_type is None or b.instance_type == lc.instance_type)
        and (b.use_spot is None or b.use_spot == lc.use_spot)
    )


def apply_blocked(
    items: Sequence[Launchable], blocked: Sequence[Blocked]
) -> tuple[list[Launchable], list[Blocked]]:
    """The launchables left after ``blocked``, and the blocks that removed something."""
    if not blocked:
        return list(items), []
    kept: list[Launchable] = []
    used: dict[Blocked, None] = {}
    for lc in items:
        zones = list(lc.zones)
        gone = False
        for b in blocked:
            if not _blocks(b, lc):
                continue
            if b.zone is None:
                gone = True
            elif lc.zone is not None:
                gone = b.zone == lc.zone
            elif b.zone in zones:
                zones.remove(b.zone)
                gone = not zones
                used[b] = None
            if gone:
                used[b] = None
                break
        if not gone:
            kept.append(lc if len(zones) == len(lc.zones) else _with_zones(lc, zones))
    return kept, list(used)


def _with_zones(lc: Launchable, zones: list[str]) -> Launchable:
    return msgspec.structs.replace(lc, zones=tuple(zones))
