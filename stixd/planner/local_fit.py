"""Whether a task fits this machine (the infra of role `Role.MACHINE`): its CPUs and memory,
no accelerators."""

from __future__ import annotations

import os

from stixd.planner.catalog import Offer
from stixd.planner.infra_meta import Infras, Role
from stixproto.errors import InvalidTask
from stixproto.task import Resources, Task
from stixproto.task.resources import candidates, cpus_amount, memory_amount, placement


def machine_memory_gb() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    except (ValueError, OSError):
        return 0.0


def _usable(infras: Infras) -> str:
    """'local' and 'ssh/POOL', as a message names what a task may ask for instead."""
    names = [f"'{n}'" for n in infras.with_role(Role.MACHINE)]
    names += [f"'{n}/POOL'" for n in infras.with_role(Role.POOLS)]
    return " and ".join(names)


def _check_one(r: Resources, infras: Infras) -> None:
    where = placement(r)
    cloud = where.cloud
    if cloud is not None and cloud != infras.machine():
        raise InvalidTask(
            f"resources.infra: '{cloud}' is not available in this build; only {_usable(infras)} "
            "are (see `stixctl check`)"
        )
    if cloud is None and (where.region or where.zone):
        key, value = ("zone", where.zone) if where.zone else ("region", where.region)
        raise InvalidTask(
            f"resources.{key}: {value!r} is a cloud's; this machine (the local infra) has none"
        )
    if r.instance_type:
        raise InvalidTask(
            f"resources.instance_type: {r.instance_type!r} is a cloud's; this machine (the local "
            "infra) has none"
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


def check_fits_local(task: Task, infras: Infras, max_nodes: int | None = None) -> None:
    """Raise a clear InvalidTask when no candidate resource of the task runs on this machine.

    With any_of/ordered the task fits when one alternative does; otherwise the first
    alternative's reason is given. ``max_nodes`` is the machine infra's config ``max_nodes``.
    """
    if max_nodes is not None and task.num_nodes > max_nodes:
        problem = nodes_problem(infras.machine(), max_nodes, task.num_nodes)
        raise InvalidTask(f"num_nodes: {problem}")
    first: InvalidTask | None = None
    for candidate in candidates(task.resources_or_default()):
        try:
            _check_one(candidate, infras)
            return
        except InvalidTask as exc:
            first = first or exc
    if first is not None:
        raise first


def local_offer(name: str) -> Offer:
    """This machine as the planner sees infra ``name``: its CPUs and memory, $0, no GPUs."""
    return Offer(
        cloud=name,
        instance_type=name,
        accelerator=None,
        accelerator_count=0.0,
        vcpus=float(os.cpu_count() or 1),
        memory_gib=round(machine_memory_gb(), 1),
        price=0.0,
        spot_price=None,
        region=name,
    )
