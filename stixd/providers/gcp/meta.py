"""What the planner knows of ``gcp``, as SkyPilot 0.14's GCP cloud and catalog have it."""

from stixd.planner.infra_meta import Egress, InfraMeta

_TB = 1024.0
_FAMILIES = ("n2-standard", "n2-highmem", "n2-highcpu", "n4-standard", "n4-highcpu", "n4-highmem")

META = InfraMeta(
    name="gcp",
    display="GCP",
    default_families=tuple(f"{f}-" for f in _FAMILIES),
    per_zone=True,
    gpus_attach_to_hosts=True,
    # the whole transfer at one band's rate: $0.12/GB up to 1 TB, $0.11 up to 10 TB, $0.08 beyond
    egress=Egress(bands=((1 * _TB, 0.12), (10 * _TB, 0.11), (float("inf"), 0.08)), whole=True),
    fetch_by_default=True,
)
