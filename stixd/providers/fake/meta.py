"""What the planner knows of ``fake``: a cloud priced from the catalog it writes, launched on
only when a task names it (tests and benchmarks)."""

from stixd.planner.infra_meta import InfraMeta

META = InfraMeta(name="fake", named_only=True)
