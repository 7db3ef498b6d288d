"""What the planner knows of ``aws``, as SkyPilot 0.14's AWS cloud and catalog have it."""

from stixd.planner.infra_meta import Egress, InfraMeta

_TB = 1024.0
_FAMILIES = ("m6i", "m6id", "m7i", "r6i", "r6id", "r7i", "c6i", "c6id", "c7i")


def us_first(regions: list[str]) -> list[str]:
    """SkyPilot tries US regions first, each group cheapest first."""
    return [r for r in regions if r.startswith("us-")] + [
        r for r in regions if not r.startswith("us-")
    ]


META = InfraMeta(
    name="aws",
    display="AWS",
    default_families=tuple(f"{f}." for f in _FAMILIES),
    region_order=us_first,
    # first 1 GB free, then $0.09/GB up to 10 TB, $0.085 to 50 TB, $0.07 to 150 TB; beyond
    # 150 TB the whole transfer at $0.05/GB
    egress=Egress(
        bands=((10 * _TB, 0.09), (50 * _TB, 0.085), (150 * _TB, 0.07)), free_gb=1.0, beyond=0.05
    ),
    zone_ids=True,
    fetch_by_default=True,
)
