"""Parsed views of the resource fields a user may write in several shapes.

Each `parse_*` takes the value as written (already of the right YAML type, thanks to the
model) and returns a small frozen view the daemon can use directly, or raises `TaskFieldError`
naming `path`. The model keeps the user's shape; these views are computed on demand.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec

from stixproto import accelerators as accel
from stixproto import bounds
from stixproto.errors import TaskFieldError
from stixproto.task._fields import (
    check_int,
    check_positive,
    choice,
    describe,
    fail,
    join,
    near,
    shown,
    whole,
)
from stixproto.task._fields import number as plain_number
from stixproto.task.model import AutostopConfig

CLOUDS: tuple[str, ...] = (
    "aws",
    "azure",
    "gcp",
    "kubernetes",
    "ssh",
    "lambda",
    "runpod",
    "nebius",
    "oci",
    "ibm",
    "scp",
    "vast",
    "vsphere",
    "cudo",
    "fluidstack",
    "paperspace",
    "primeintellect",
    "do",
    "hyperbolic",
    "seeweb",
    "shadeform",
    "coreweave",
    "slurm",
    "local",
    "fake",
)
"""Infra names accepted in `infra`/`cloud` (SkyPilot's clouds plus stix's `local`)."""

K8S_NAMES = ("k8s", "kubernetes")
RECOVERY_STRATEGIES = ("EAGER_NEXT_REGION", "FAILOVER", "NONE", "DYNAMIC_NODE_SET")
WAIT_FOR = ("jobs_and_ssh", "jobs", "none")
DEFAULT_AUTOSTOP_MINUTES = 5
_MINUTES_PER_UNIT = {"m": 1, "h": 60, "d": 24 * 60, "w": 7 * 24 * 60}
_GB_PER_UNIT = {"k": 1 / 1024**2, "m": 1 / 1024, "g": 1.0, "t": 1024.0, "p": 1024.0**2}


class Placement(msgspec.Struct, frozen=True):
    """Where a resource may run; None is "any" (a `*` or a part left out)."""

    cloud: str | None = None
    region: str | None = None
    zone: str | None = None

    def to_infra(self) -> str | None:
        """The `infra` string for this placement (trailing wildcards dropped)."""
        parts = [self.cloud or "*", self.region or "*", self.zone or "*"]
        if self.cloud == "kubernetes":
            parts = parts[:2]
        while parts and parts[-1] == "*":
            parts.pop()
        return "/".join(parts) or None


class Accelerator(msgspec.Struct, frozen=True):
    name: str
    """Canonical spelling (`A10g` reads as `A10G`; TPUs are lower case)."""
    count: int | float


class AcceleratorChoice(msgspec.Struct, frozen=True):
    """The accelerators a node may have: one candidate, or several to choose among.

    `ordered` is True for a list (try in the order given) and False for a set or map (the
    optimizer picks the cheapest available).
    """

    candidates: tuple[Accelerator, ...]
    ordered: bool = False


class Amount(msgspec.Struct, frozen=True):
    """A cpus/memory request: `4` is exactly 4, `"4+"` is at least 4 (memory in GB)."""

    amount: float
    at_least: bool = False


class Autostop(msgspec.Struct, frozen=True):
    enabled: bool
    idle_minutes: int = DEFAULT_AUTOSTOP_MINUTES
    down: bool = False
    wait_for: str | None = None


class JobRecovery(msgspec.Struct, frozen=True):
    strategy: str = "EAGER_NEXT_REGION"
    max_restarts_on_errors: int = 0
    recover_on_exit_codes: tuple[int, ...] = ()
    extra: dict[str, Any] = msgspec.field(default_factory=dict)
    """Keys plugins register (e.g. `min_nodes` for DYNAMIC_NODE_SET), as written."""


def parse_cloud(name: str, path: str) -> str:
    lowered = name.strip().lower()
    if lowered in K8S_NAMES:
        return "kubernetes"
    if lowered in CLOUDS:
        return lowered
    hint = near(lowered, CLOUDS)
    known = (
        "a cloud such as aws, gcp, azure, kubernetes (k8s), ssh or local"
        if hint
        else ", ".join(CLOUDS)
    )
    fail(path, f"unknown infra {name!r}; expected {known}", hint)


def parse_infra(text: str, path: str) -> Placement:
    """`cloud[/region[/zone]]` with `*` wildcards; `k8s/<context>` keeps `/` and `:` in it."""
    stripped = text.strip().strip("/")
    if not stripped:
        fail(path, "expected cloud[/region[/zone]], e.g. 'aws/us-east-1', got an empty string")
    parts = [p.strip() for p in stripped.split("/")]
    if "" in parts:
        fail(path, f"expected cloud[/region[/zone]] without empty parts, got {text!r}")
    head = parts[0].lower()
    if head in K8S_NAMES or head == "ssh":
        context = "/".join(parts[1:]) or None
        return Placement("kubernetes" if head in K8S_NAMES else "ssh", context, None)
    if len(parts) > 3:
        fail(path, f"expected cloud[/region[/zone]] (at most three parts), got {text!r}")
    cloud = None if head == "*" else parse_cloud(head, path)
    region = parts[1] if len(parts) > 1 and parts[1] != "*" else None
    zone = parts[2] if len(parts) > 2 and parts[2] != "*" else None
    return Placement(cloud, region, zone)


def _count(value: Any, path: str, written: str) -> int | float:
    if isinstance(value, str):
        parsed = plain_number(value)
        if parsed is None:
            fail(path, f"expected a count like 'A100:8' or 'K80:0.5', got {written!r}")
        value = parsed
    if isinstance(value, bool) or not isinstance(value, int | float):
        fail(path, f"expected a number of accelerators, got {describe(value)}")
    if not (value > 0 and math.isfinite(value)):
        fail(path, f"expected an accelerator count > 0, got {shown(float(value))} in {written!r}")
    if value > bounds.MAX_COUNT:
        fail(path, f"expected an accelerator count <= {bounds.MAX_COUNT}, got {written!r}")
    return whole(float(value))


def _accelerator(name: str, path: str) -> str:
    canonical = accel.lookup(name)
    if canonical is None:
        if not name.strip():
            fail(path, "expected an accelerator name like 'A100' or 'A100:8', got ''")
        fail(path, f"unknown accelerator {name.strip()!r}", accel.suggest(name))
    return canonical


def _one(text: str, path: str) -> Accelerator:
    """`NAME` or `NAME:COUNT`."""
    name, sep, count = text.rpartition(":")
    if not sep:
        return Accelerator(_accelerator(text, path), 1)
    return Accelerator(_accelerator(name, path), _count(count, path, text))


def _from_map(items: dict[Any, Any], path: str) -> list[Accelerator]:
    out = []
    for key, count in items.items():
        if not isinstance(key, str):
            fail(path, f"expected accelerator names as keys, got {describe(key)}")
        if count is None:
            out.append(_one(key, path))
        elif ":" in key:
            fail(join(path, key), f"give the count once: '{key}' or '{key.split(':')[0]}: {count}'")
        else:
            out.append(Accelerator(_accelerator(key, path), _count(count, path, f"{key}: {count}")))
    return out


def parse_accelerators(value: Any, path: str) -> AcceleratorChoice:
    """Every shape of `accelerators`: string, map (null count = 1), flow set, list, mixed list."""
    if isinstance(value, str):
        return AcceleratorChoice((_one(value, path),))
    if isinstance(value, dict):
        if not value:
            fail(path, "expected at least one accelerator, got an empty map")
        return AcceleratorChoice(tuple(_from_map(value, path)), ordered=False)
    if isinstance(value, list):
        if not value:
            fail(path, "expected at least one accelerator, got an empty list")
        out: list[Accelerator] = []
        for i, item in enumerate(value):
            if isinstance(item, str):
                out.append(_one(item, join(path, i)))
            elif isinstance(item, dict) and len(item) == 1:
                out += _from_map(item, join(path, i))
            else:
                fail(join(path, i), f"expected 'NAME:COUNT' or a one-key map, got {describe(item)}")
        return AcceleratorChoice(tuple(out), ordered=True)
    fail(path, f"expected a string, a map or a list of accelerators, got {describe(value)}")


def parse_amount(value: int | float | str, path: str, *, memory: bool) -> Amount:
    """cpus (`4`, `"4+"`, `0.5`) or memory (`32`, `"32+"`, `"1024MB"`, `"64GB+"`; GB)."""
    if isinstance(value, bool):
        fail(path, f"expected a number or a string like '4+', got {describe(value)}")
    high = bounds.MAX_GB if memory else bounds.MAX_CPUS
    if isinstance(value, int | float):
        check_positive(float(value), path, limit=high)
        return Amount(float(value))
    text = value.strip()
    at_least = text.endswith("+")
    body = text[:-1].strip() if at_least else text
    factor = 1.0
    if memory:
        lowered = body.lower()
        if lowered.endswith("b") and len(lowered) > 1 and lowered[-2] in _GB_PER_UNIT:
            lowered = lowered[:-1]
        if lowered and lowered[-1] in _GB_PER_UNIT:
            factor = _GB_PER_UNIT[lowered[-1]]
            body = body[: len(lowered) - 1]
    amount = plain_number(body)
    if amount is None:
        example = "'32', '32+', '64GB' or '1024MB+'" if memory else "'4' or '4+'"
        fail(path, f"expected a number or a string like {example}, got {value!r}")
    check_positive(amount * factor, path, limit=high)
    return Amount(amount * factor, at_least)


def parse_disk_size(value: int | str, path: str) -> float:
    """Disk size in GB from `256` or `"1024GB"`/`"1TB"`."""
    if isinstance(value, int) and not isinstance(value, bool):
        check_int(value, path, 1, limit=bounds.MAX_GB)
        return float(value)
    amount = None
    if isinstance(value, str) and not value.strip().endswith("+"):
        try:
            amount = parse_amount(value, path, memory=True).amount
        except TaskFieldError:
            amount = None
    if amount is None:
        fail(
            path,
            f"expected a size in GB like 256 or with a unit like '1TB', got {describe(value)}",
        )
    return amount


def _port(value: Any, path: str) -> int:
    digits = isinstance(value, str) and value.strip().isascii() and value.strip().isdigit()
    port = int(value) if digits else value
    if isinstance(port, bool) or not isinstance(port, int):
        fail(path, f"expected a port number or a range like '10052-10100', got {describe(value)}")
    if not 1 <= port <= 65535:
        fail(path, f"expected a port between 1 and 65535, got {port}")
    return port


def _port_range(value: Any, path: str) -> tuple[int, int]:
    if isinstance(value, str) and "-" in value:
        low, _, high = value.partition("-")
        start, end = _port(low.strip(), path), _port(high.strip(), path)
        if start > end:
            fail(path, f"expected a range low-high, got {value!r}")
        return start, end
    port = _port(value, path)
    return port, port


def parse_ports(value: int | str | list[int | str] | None, path: str) -> list[tuple[int, int]]:
    """Ports as inclusive (start, end) ranges; a single port is (p, p)."""
    if value is None:
        return []
    if isinstance(value, list):
        return [_port_range(item, join(path, i)) for i, item in enumerate(value)]
    return [_port_range(value, path)]


def parse_minutes(value: int | str, path: str) -> int:
    """Idle minutes from `10` or `"10m"`, `"2h"`, `"1d"`, `"1w"`."""
    if isinstance(value, int) and not isinstance(value, bool):
        check_int(value, path, 0, limit=bounds.MAX_IDLE_MINUTES)
        return value
    text = str(value).strip().lower()
    unit = text[-1:] if text[-1:] in _MINUTES_PER_UNIT else ""
    digits = text[: len(text) - len(unit)]
    if not digits.isdigit() or not digits.isascii():
        fail(
            path,
            f"expected minutes like 10 or a duration like '10m', '2h', '1d', '1w', got {value!r}",
        )
    minutes = int(digits) * _MINUTES_PER_UNIT.get(unit, 1)
    if minutes > bounds.MAX_IDLE_MINUTES:
        fail(path, f"expected at most {bounds.MAX_IDLE_MINUTES} minutes (a year), got {value!r}")
    return minutes


def parse_autostop(value: Any, path: str) -> Autostop:
    if isinstance(value, bool):
        return Autostop(enabled=value)
    if isinstance(value, int | str):
        return Autostop(enabled=True, idle_minutes=parse_minutes(value, path))
    if isinstance(value, AutostopConfig):
        minutes = DEFAULT_AUTOSTOP_MINUTES
        if value.idle_minutes is not None:
            minutes = parse_minutes(value.idle_minutes, join(path, "idle_minutes"))
        wait_for = None
        if value.wait_for is not None:
            wait_for = choice(value.wait_for, WAIT_FOR, join(path, "wait_for"), "wait_for mode")
        if value.hook_timeout is not None:
            check_int(value.hook_timeout, join(path, "hook_timeout"), 1, limit=bounds.MAX_SECONDS)
        return Autostop(True, minutes, bool(value.down), wait_for)
    fail(
        path, f"expected true/false, minutes, a duration like '10m' or a map, got {describe(value)}"
    )


def _strategy(value: Any, path: str) -> str:
    if not isinstance(value, str):
        fail(path, f"expected a recovery strategy name, got {describe(value)}")
    upper = value.strip().upper()
    if upper not in RECOVERY_STRATEGIES:
        known = ", ".join(RECOVERY_STRATEGIES)
        fail(
            path,
            f"unknown recovery strategy {value!r}; expected one of {known}",
            near(upper, RECOVERY_STRATEGIES),
        )
    return upper


def _exit_code(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        fail(path, f"expected an exit code between 0 and 255, got {describe(value)}")
    check_int(value, path, 0, 255, limit=255)
    return value


def parse_job_recovery(value: str | dict[str, Any], path: str) -> JobRecovery:
    if isinstance(value, str):
        return JobRecovery(strategy=_strategy(value, path))
    strategy = "EAGER_NEXT_REGION"
    if value.get("strategy") is not None:
        strategy = _strategy(value["strategy"], join(path, "strategy"))
    restarts = value.get("max_restarts_on_errors", 0)
    if isinstance(restarts, bool) or not isinstance(restarts, int):
        fail(
            join(path, "max_restarts_on_errors"),
            f"expected an integer >= 0, got {describe(restarts)}",
        )
    check_int(restarts, join(path, "max_restarts_on_errors"), 0, limit=bounds.MAX_RESTARTS)
    codes_path = join(path, "recover_on_exit_codes")
    codes = value.get("recover_on_exit_codes", [])
    if isinstance(codes, list):
        exit_codes = tuple(_exit_code(c, join(codes_path, i)) for i, c in enumerate(codes))
        if len(set(exit_codes)) != len(exit_codes):
            fail(codes_path, "expected each exit code once")
    else:
        exit_codes = (_exit_code(codes, codes_path),)
    known = ("strategy", "max_restarts_on_errors", "recover_on_exit_codes")
    extra = {k: v for k, v in value.items() if k not in known}
    return JobRecovery(strategy, restarts, exit_codes, extra)
