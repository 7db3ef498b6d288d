"""What the planner knows of ``ssh``: pools of hosts the user lists, $0."""

from stixd.planner.infra_meta import InfraMeta, Role
from stixd.providers.ssh.pools import POOLS_FILE

META = InfraMeta(name="ssh", display="SSH", role=Role.POOLS, pools_file=POOLS_FILE)
