"""`${VAR}` / `$VAR` substitution of task envs into file_mounts, volumes, workdir and service."""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cache
from typing import Any

from stixproto.task._fields import fail

SUBSTITUTED = ("file_mounts", "volumes", "workdir", "service")
"""The task sections whose strings (and map keys) get envs substituted, as SkyPilot does."""


@cache
def _pattern() -> re.Pattern[str]:
    return re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


MAX_GROWTH = 4_000_000
"""Characters substitution may add to one task (as many as a task file may hold): a `$X` used a
million times with a megabyte value would otherwise build a terabyte. Values shorter than their
`$NAME` are not counted back."""


class _TooLong(Exception):
    """Substitution passed `MAX_GROWTH`; the caller names the section."""


class _Budget:
    def __init__(self) -> None:
        self.left = MAX_GROWTH

    def spend(self, text: str, values: Mapping[str, str]) -> None:
        for match in _pattern().finditer(text):
            value = values.get(match.group(1) or match.group(2))
            if value is not None and len(value) > len(match.group(0)):
                self.left -= len(value) - len(match.group(0))
                if self.left < 0:
                    raise _TooLong


def references_as_words(text: str) -> str:
    """``text`` with every `$NAME` / `${NAME}` left in it as the plain word ``x``."""
    return _pattern().sub("x", text) if "$" in text else text


def substitute_text(text: str, values: Mapping[str, str], budget: _Budget | None = None) -> str:
    if "$" not in text:
        return text
    if budget is not None:
        budget.spend(text, values)

    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return values.get(name, match.group(0))

    return _pattern().sub(one, text)


def substitute(value: Any, values: Mapping[str, str], budget: _Budget | None = None) -> Any:
    """A copy of `value` with known variables replaced in every string; unknown ones stay."""
    if not values:
        return value
    if isinstance(value, str):
        return substitute_text(value, values, budget)
    if isinstance(value, dict):
        return {
            substitute_text(k, values, budget) if isinstance(k, str) else k: substitute(
                v, values, budget
            )
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [substitute(v, values, budget) for v in value]
    return value


def substitute_sections(raw: dict[str, Any], values: Mapping[str, str]) -> dict[str, Any]:
    """The raw task map with the substituted sections rewritten (a shallow copy). A section
    that substitution would grow past `MAX_GROWTH` characters is a `TaskFieldError`."""
    if not values or not any(raw.get(k) is not None for k in SUBSTITUTED):
        return raw
    out = dict(raw)
    budget = _Budget()
    for key in SUBSTITUTED:
        if out.get(key) is not None:
            try:
                out[key] = substitute(out[key], values, budget)
            except _TooLong:
                fail(
                    key,
                    f"substituting envs would make the task more than {MAX_GROWTH:,} characters "
                    "longer (the limit)",
                )
    return out
