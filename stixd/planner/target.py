"""Which provider a launch goes to: an SSH node pool named by `infra: ssh/POOL`, else local."""

from __future__ import annotations

from collections.abc import Mapping

from proto.errors import InvalidTask
from proto.task import Task
from stixd.planner.local_fit import check_fits_local


def choose_target(task: Task, ssh_pools: Mapping[str, int]) -> tuple[str, str | None]:
    """(provider, pool) for the task; `ssh_pools` maps each pool to its number of hosts."""
    for candidate in task.resources_or_default().candidates():
        place = candidate.placement()
        if place.cloud != "ssh":
            continue
        pools = ", ".join(sorted(ssh_pools)) or "none defined in ssh_node_pools.yaml"
        if place.region is None:
            raise InvalidTask(f"resources.infra: name the pool as ssh/POOL (pools: {pools})")
        if place.region not in ssh_pools:
            raise InvalidTask(f"resources.infra: no ssh pool '{place.region}' (pools: {pools})")
        size = ssh_pools[place.region]
        if task.num_nodes > size:
            raise InvalidTask(
                f"num_nodes: ssh pool '{place.region}' has {size} host(s), "
                f"the task asks for {task.num_nodes}"
            )
        return "ssh", place.region
    check_fits_local(task)
    return "local", None
