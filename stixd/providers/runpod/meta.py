"""What the planner knows of ``runpod``: its display name; every default otherwise."""

from stixd.planner.infra_meta import InfraMeta

META = InfraMeta(name="runpod", display="RunPod")
