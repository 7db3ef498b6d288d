"""What moving data out of a cloud costs and takes, as SkyPilot's optimizer estimates it.

SkyPilot charges egress only between different clouds (two regions of one cloud are free to
it) and prices it from the *source* cloud's internet-egress list price:

========  ==========================================================================
aws       first 1 GB free, then $0.09/GB up to 10 TB, $0.085 to 50 TB, $0.07 to 150 TB;
          beyond 150 TB the whole transfer at $0.05/GB
azure     as aws but $0.0875/GB for the first band and $0.083 for the second
gcp       the whole transfer at one band's rate: $0.12/GB up to 1 TB, $0.11 up to 10 TB,
          $0.08 beyond
others    free (nebius, hyperbolic, mithril, lambda, local, ...), as their SkyPilot clouds say
========  ==========================================================================

SkyPilot's own arithmetic for the AWS/Azure bands above 10 TB undercounts (it subtracts the
band twice); here each band is charged at its rate, which agrees with SkyPilot up to 10 TB.
Transfer time is the same across every pair of clouds: 10 Gbit/s, SkyPilot's figure for
sharded object-store copies between clouds.
"""

from __future__ import annotations

__all__ = ["BANDWIDTH_GBPS", "egress_cost", "egress_seconds", "internet_egress_cost"]

BANDWIDTH_GBPS = 10.0
_TB = 1024.0

# cloud -> (free GB, [(band upper bound in GB, $/GB)], flat $/GB beyond the last band)
_TIERED: dict[str, tuple[float, list[tuple[float, float]], float]] = {
    "aws": (1.0, [(10 * _TB, 0.09), (50 * _TB, 0.085), (150 * _TB, 0.07)], 0.05),
    "azure": (1.0, [(10 * _TB, 0.0875), (50 * _TB, 0.083), (150 * _TB, 0.07)], 0.05),
}
# cloud -> [(upper bound in GB, $/GB for the whole transfer)], last band open-ended
_BANDED: dict[str, list[tuple[float, float]]] = {
    "gcp": [(1 * _TB, 0.12), (10 * _TB, 0.11), (float("inf"), 0.08)],
}


def internet_egress_cost(cloud: str, gigabytes: float) -> float:
    """USD to move ``gigabytes`` out of ``cloud`` to the internet (another cloud)."""
    if gigabytes <= 0:
        return 0.0
    if cloud in _BANDED:
        return next(rate for top, rate in _BANDED[cloud] if gigabytes <= top) * gigabytes
    if cloud not in _TIERED:
        return 0.0
    free, bands, beyond = _TIERED[cloud]
    if gigabytes > bands[-1][0]:
        return beyond * gigabytes
    cost, low = 0.0, free
    for top, rate in bands:
        if gigabytes > low:
            cost += (min(gigabytes, top) - low) * rate
        low = top
    return cost


def egress_cost(src: str | None, dst: str | None, gigabytes: float | None) -> float:
    """Cost of handing ``gigabytes`` from a task on ``src`` to one on ``dst`` (0 on one cloud)."""
    if not gigabytes or src is None or dst is None or src == dst:
        return 0.0
    return internet_egress_cost(src, gigabytes)


def egress_seconds(src: str | None, dst: str | None, gigabytes: float | None) -> float:
    """Seconds to copy ``gigabytes`` between two clouds at `BANDWIDTH_GBPS` (0 on one cloud)."""
    if not gigabytes or src is None or dst is None or src == dst:
        return 0.0
    return gigabytes * 8 / BANDWIDTH_GBPS
