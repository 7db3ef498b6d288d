"""`${VAR}` / `$VAR` substitution of task envs into file_mounts, volumes, workdir and service."""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cache
from typing import Any

SUBSTITUTED = ("file_mounts", "volumes", "workdir", "service")
"""The task sections whose strings (and map keys) get envs substituted, as SkyPilot does."""


@cache
def _pattern() -> re.Pattern[str]:
    return re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


def substitute_text(text: str, values: Mapping[str, str]) -> str:
    if "$" not in text:
        return text

    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return values.get(name, match.group(0))

    return _pattern().sub(one, text)


def substitute(value: Any, values: Mapping[str, str]) -> Any:
    """A copy of `value` with known variables replaced in every string; unknown ones stay."""
    if not values:
        return value
    if isinstance(value, str):
        return substitute_text(value, values)
    if isinstance(value, dict):
        return {
            substitute_text(k, values) if isinstance(k, str) else k: substitute(v, values)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [substitute(v, values) for v in value]
    return value


def substitute_sections(raw: dict[str, Any], values: Mapping[str, str]) -> dict[str, Any]:
    """The raw task map with the substituted sections rewritten (a shallow copy)."""
    if not values or not any(raw.get(k) is not None for k in SUBSTITUTED):
        return raw
    out = dict(raw)
    for key in SUBSTITUTED:
        if out.get(key) is not None:
            out[key] = substitute(out[key], values)
    return out
