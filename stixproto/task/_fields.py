"""Small helpers the task checks share: failing with a key path, naming values, enums, numbers."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, NoReturn

from stixproto.errors import TaskFieldError


def join(path: str, key: str | int) -> str:
    return f"{path}.{key}" if path else str(key)


def fail(path: str, problem: str, suggestion: str | None = None) -> NoReturn:
    raise TaskFieldError(path, problem, suggestion=suggestion)


def describe(value: Any) -> str:
    """How a value reads in a message: 'text', 3, true, null, a list, a map."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value) if len(value) <= 60 else repr(value[:57] + "...")
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, dict):
        return "a map"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a {type(value).__name__}"


def near(word: str, choices: Iterable[str], cutoff: float = 0.6) -> str | None:
    import difflib

    found = difflib.get_close_matches(word, list(choices), n=1, cutoff=cutoff)
    return found[0] if found else None


def choice(
    value: str, choices: tuple[str, ...], path: str, what: str, *, upper: bool = False
) -> str:
    """A case-insensitive enum: the canonical (lower-case) spelling, or a clear error.
    `upper` only changes how the choices are shown (storage modes read as MOUNT, COPY)."""
    lowered = value.strip().lower()
    if lowered in choices:
        return lowered
    shown = tuple(c.upper() for c in choices) if upper else choices
    hint = near(lowered, choices)
    fail(
        path,
        f"unknown {what} {value!r}; expected one of {', '.join(shown)}",
        hint.upper() if hint and upper else hint,
    )


def number(text: str) -> float | None:
    """A plain decimal like 4, 0.5 or .5 (no signs, exponents, inf or nan), else None."""
    text = text.strip()
    if not text or text.count(".") > 1:
        return None
    if not text.replace(".", "", 1).isdigit() or not text.isascii():
        return None
    return float(text)


def whole(value: float) -> int | float:
    return int(value) if value.is_integer() else value


def shown(value: float) -> str:
    """A number as a message quotes it: 1e308 stays short, not 309 digits."""
    return str(whole(value)) if abs(value) < 1e15 else f"{value:.3g}"


def check_int(
    value: int, path: str, low: int | None = None, high: int | None = None, *, limit: int
) -> None:
    """`low`/`high` are the field's own range; `limit` the sanity bound (`stixproto.bounds`)
    of a field that is open above."""
    if low is not None and value < low:
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        fail(path, f"expected an integer {bound}, got {value}")
    if high is not None and value > high:
        fail(path, f"expected an integer between {low} and {high}, got {value}")
    if value > limit:
        fail(path, f"expected an integer <= {limit}, got {value}")


def check_positive(value: float, path: str, *, limit: float, zero_ok: bool = False) -> None:
    """A finite number above zero (or from zero, with `zero_ok`) and at most `limit`."""
    if not math.isfinite(value):
        fail(path, f"expected a finite number, got {value}")
    if value < 0 or (value == 0 and not zero_ok):
        fail(path, f"expected a number {'>= 0' if zero_ok else '> 0'}, got {shown(value)}")
    if value > limit:
        fail(path, f"expected a number <= {shown(float(limit))}, got {shown(value)}")


INT_RANGE = (-(2**63), 2**64 - 1)
"""What msgpack carries; a task travels to the daemon as msgpack."""


def check_int_sizes(value: Any, path: str = "") -> None:
    """Integers anywhere in a document (open maps included) must fit msgpack's 64 bits."""
    if isinstance(value, int) and not isinstance(value, bool):
        if not INT_RANGE[0] <= value <= INT_RANGE[1]:
            fail(path, f"the number {value} is too large")
    elif isinstance(value, dict):
        for key, item in value.items():
            check_int_sizes(key, path)
            check_int_sizes(item, join(path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_int_sizes(item, join(path, i))


def unknown_keys(raw: dict[str, Any], known: tuple[str, ...], path: str) -> list[str]:
    """Warnings for keys of an open map that stix does not know (they are kept as written)."""
    notes = []
    for key in raw:
        if key not in known:
            hint = near(str(key), known)
            tail = f" (did you mean '{hint}'?)" if hint else ""
            notes.append(f"{join(path, key)}: unknown key, kept as written{tail}")
    return notes
