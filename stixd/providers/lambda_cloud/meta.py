"""What the planner knows of ``lambda``: its display name; every default otherwise."""

from stixd.planner.infra_meta import InfraMeta

META = InfraMeta(name="lambda", display="Lambda")
