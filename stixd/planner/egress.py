"""What moving data out of a cloud costs and takes, as SkyPilot's optimizer estimates it.

SkyPilot charges egress only between different clouds (two regions of one cloud are free to
it) and prices it from the *source* cloud's internet-egress list price (`InfraMeta.egress`,
filled in by each provider's ``meta.py``):

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

from stixd.planner.infra_meta import Infras

__all__ = ["BANDWIDTH_GBPS", "egress_cost", "egress_seconds"]

BANDWIDTH_GBPS = 10.0


def egress_cost(infras: Infras, src: str | None, dst: str | None, gigabytes: float | None) -> float:
    """Cost of handing ``gigabytes`` from a task on ``src`` to one on ``dst`` (0 on one cloud)."""
    if not gigabytes or src is None or dst is None or src == dst:
        return 0.0
    return infras.egress_cost(src, gigabytes)


def egress_seconds(src: str | None, dst: str | None, gigabytes: float | None) -> float:
    """Seconds to copy ``gigabytes`` between two clouds at `BANDWIDTH_GBPS` (0 on one cloud)."""
    if not gigabytes or src is None or dst is None or src == dst:
        return 0.0
    return gigabytes * 8 / BANDWIDTH_GBPS
