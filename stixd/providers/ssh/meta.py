"""What the planner knows of ``ssh``: pools of hosts the user lists, $0."""

from stixd.planner.infra_meta import InfraMeta, Role

POOLS_FILE = "ssh_node_pools.yaml"
"""Where, in the stix home, the user lists the pools (SkyPilot's file name and form)."""

META = InfraMeta(name="ssh", display="SSH", role=Role.POOLS, pools_file=POOLS_FILE)
