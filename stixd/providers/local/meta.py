"""What the planner knows of ``local``: this machine, $0, no spot, images or tiers."""

from stixd.planner.infra_meta import InfraMeta, Role

META = InfraMeta(
    name="local",
    display="Local",
    role=Role.MACHINE,
    unsupported=frozenset({"spot", "image_id", "docker", "disk_tier", "network_tier"}),
)
