"""What the planner knows of ``hyperbolic``: single on-demand nodes, nothing more."""

from stixd.planner.infra_meta import InfraMeta

META = InfraMeta(
    name="hyperbolic",
    display="Hyperbolic",
    unsupported=frozenset(
        {"spot", "multi_node", "ports", "image_id", "docker", "disk_tier", "network_tier"}
    ),
)
