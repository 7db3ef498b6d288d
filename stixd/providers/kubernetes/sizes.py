"""How big a pod is: SkyPilot's Kubernetes defaults for what a task leaves out, and its names
for a size (``4CPU--16GB``, ``8CPU--32GB--A100:2``: SkyPilot's "virtual instance types", so a
plan reads the same in both tools).

Defaults, as SkyPilot 0.14 has them: a CPU pod asks 2 CPUs and 1 GB per CPU; a GPU pod 4 CPUs
per GPU and 4 GB per CPU. A ``+`` on an amount is dropped (a pod gets what it asks, no more),
and a fractional GPU count is rounded up (GPUs are whole devices to Kubernetes).
"""

from __future__ import annotations

import math
import re

from stixd.planner.infra_meta import NodeSize
from stixproto.bounds import MAX_COUNT, MAX_CPUS, MAX_GB

CPUS = 2.0
CPUS_PER_GPU = 4.0
GB_PER_CPU = 1.0
GB_PER_CPU_WITH_GPU = 4.0
_NAME = re.compile(r"(\d+(?:\.\d+)?)CPU--(\d+(?:\.\d+)?)GB(?:--([\w-]+):(\d+))?")


def _number(value: float) -> str:
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


def instance_type(cpus: float, memory_gb: float, accelerator: str | None, count: int) -> str:
    """SkyPilot's name of a pod (or a node) of this size."""
    name = f"{_number(cpus)}CPU--{_number(memory_gb)}GB"
    if accelerator and count:
        name += f"--{accelerator.replace(' ', '_')}:{count}"
    return name


def pod_size(
    cpus: float | None, memory_gb: float | None, accelerator: str | None, count: float
) -> NodeSize:
    """What each pod asks for a task asking ``cpus``/``memory_gb``/``accelerator:count``."""
    gpus = math.ceil(count) if accelerator else 0
    if gpus:
        asked_cpus = cpus if cpus is not None else CPUS_PER_GPU * gpus
        memory = memory_gb if memory_gb is not None else asked_cpus * GB_PER_CPU_WITH_GPU
    else:
        asked_cpus = cpus if cpus is not None else CPUS
        memory = memory_gb if memory_gb is not None else asked_cpus * GB_PER_CPU
    return NodeSize(asked_cpus, memory, gpus, instance_type(asked_cpus, memory, accelerator, gpus))


def parse_instance_type(name: str) -> tuple[float, float, str | None, int] | None:
    """(cpus, GB, accelerator, count) of a SkyPilot Kubernetes name; None for another name or
    one past the bounds."""
    found = _NAME.fullmatch(name.strip()[:128])
    if found is None:
        return None
    cpus, memory = float(found.group(1)), float(found.group(2))
    count = int(found.group(4) or 0)
    if not (0 < cpus <= MAX_CPUS and 0 < memory <= MAX_GB and count <= MAX_COUNT):
        return None
    accelerator = found.group(3) if count else None
    return cpus, memory, accelerator, count
