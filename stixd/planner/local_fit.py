"""Whether a task fits the `local` infra: this machine's CPUs and memory, no accelerators."""

from __future__ import annotations

import os

from stixd.planner.catalog import Offer
from stixproto.errors import InvalidTask
from stixproto.task import Resources, Task
from stixproto.task.resources import candidates, cpus_amount, memory_amount, placement

LOCAL_NAMES = {"local"}


def machine_memory_gb() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    except (ValueError, OSError):
        return 0.0


def _check_one(r: Resources) -> None:
    cloud = placement(r).cloud
    if cloud is not None and cloud not in LOCAL_NAMES:
        raise InvalidTask(
            f"resources.infra: '{cloud}' is not available in this build; only 'local' and "
            "'ssh/POOL' are (see `stixctl check`)"
        )
    if r.accelerators:
        raise InvalidTask(
            f"resources.accelerators: the local infra has no accelerators "
            f"(asked for {r.accelerators!r})"
        )
    if r.use_spot:
        raise InvalidTask("resources.use_spot: the local infra has no spot capacity")
    cpus = os.cpu_count() or 1
    want_cpus = cpus_amount(r)
    if want_cpus is not None and want_cpus.amount > cpus:
        raise InvalidTask(f"resources.cpus: this machine has {cpus} CPUs, asked for {r.cpus}")
    mem = machine_memory_gb()
    want_mem = memory_amount(r)
    if want_mem is not None and mem and want_mem.amount > mem:
        raise InvalidTask(f"resources.memory: this machine has {mem:.0f} GB, asked for {r.memory}")


def nodes_problem(cloud: str, limit: int, asked: int) -> str:
    return (
        f"{cloud} runs at most {limit} node(s) ({cloud}.max_nodes in the config), "
        f"the task asks for {asked}"
    )


def check_fits_local(task: Task, max_nodes: int | None = None) -> None:
    """Raise a clear InvalidTask when no candidate resource of the task runs on this machine.

    With any_of/ordered the task fits when one alternative does; otherwise the first
    alternative's reason is given. ``max_nodes`` is the config's ``local.max_nodes``.
    """
    if max_nodes is not None and task.num_nodes > max_nodes:
        raise InvalidTask(f"num_nodes: {nodes_problem('local', max_nodes, task.num_nodes)}")
    first: InvalidTask | None = None
    for candidate in candidates(task.resources_or_default()):
        try:
            _check_one(candidate)
            return
        except InvalidTask as exc:
            first = first or exc
    if first is not None:
        raise first


def local_offer() -> Offer:
    """This machine as the planner sees the local infra: its CPUs and memory, $0, no GPUs."""
    return Offer(
        cloud="local",
        instance_type="local",
        accelerator=None,
        accelerator_count=0.0,
        vcpus=float(os.cpu_count() or 1),
        memory_gib=round(machine_memory_gb(), 1),
        price=0.0,
        spot_price=None,
        region="local",
    )
