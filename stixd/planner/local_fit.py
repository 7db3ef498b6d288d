"""Whether a task fits the `local` infra: this machine's CPUs and memory, no accelerators."""

from __future__ import annotations

import os
import re

from proto.errors import InvalidTask
from proto.task import Resources, Task

LOCAL_NAMES = {"local"}
_NUMBER = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(\+?)\s*$")


def machine_memory_gb() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    except (ValueError, OSError):
        return 0.0


def _amount(value: int | float | str, key: str) -> float:
    if isinstance(value, int | float):
        return float(value)
    text = value.strip()
    unit = 1.0
    for suffix, factor in (("TB", 1024.0), ("GB", 1.0), ("MB", 1 / 1024), ("KB", 1 / 1024**2)):
        if text.upper().rstrip("+").endswith(suffix):
            plus = text.endswith("+")
            text = text.upper().rstrip("+")[: -len(suffix)] + ("+" if plus else "")
            unit = factor
            break
    m = _NUMBER.match(text)
    if not m:
        raise InvalidTask(f"resources.{key}: expected a number like 4 or '4+', got {value!r}")
    return float(m.group(1)) * unit


def _infra_of(res: Resources) -> str | None:
    if res.infra:
        return res.infra.split("/")[0].lower()
    if res.cloud:
        return res.cloud.lower()
    return None


def check_fits_local(task: Task) -> None:
    """Raise a clear InvalidTask when the task cannot run on this machine."""
    res = task.resources or Resources()
    alternatives = [res]
    if res.any_of or res.ordered:
        raise InvalidTask(
            "resources.any_of/ordered: alternatives need the optimizer (not in this build)"
        )
    for r in alternatives:
        infra = _infra_of(r)
        if infra is not None and infra not in LOCAL_NAMES:
            raise InvalidTask(
                f"resources.infra: '{infra}' is not available in this build; only 'local' is "
                "(see `stixctl check`)"
            )
        if r.accelerators:
            raise InvalidTask(
                f"resources.accelerators: the local infra has no accelerators "
                f"(asked for {r.accelerators!r})"
            )
        if r.use_spot:
            raise InvalidTask("resources.use_spot: the local infra has no spot capacity")
        cpus = os.cpu_count() or 1
        if r.cpus is not None and _amount(r.cpus, "cpus") > cpus:
            raise InvalidTask(f"resources.cpus: this machine has {cpus} CPUs, asked for {r.cpus}")
        mem = machine_memory_gb()
        if r.memory is not None and mem and _amount(r.memory, "memory") > mem:
            raise InvalidTask(
                f"resources.memory: this machine has {mem:.0f} GB, asked for {r.memory}"
            )
