"""What the planner knows of ``kubernetes``: its contexts are pools, a table row each."""

from stixd.planner.infra_meta import InfraMeta, Role

META = InfraMeta(name="kubernetes", display="Kubernetes", role=Role.POOLS)
