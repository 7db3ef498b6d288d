"""What the planner knows of ``mithril``: no disk tiers, ports or custom images."""

from stixd.planner.infra_meta import InfraMeta

META = InfraMeta(
    name="mithril", display="Mithril", unsupported=frozenset({"disk_tier", "ports", "image_id"})
)
