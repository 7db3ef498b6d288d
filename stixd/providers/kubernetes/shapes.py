"""The API's JSON read as hostile: a field of the wrong type is read as empty, never an
``AttributeError`` deep in a launch (a proxy, an old server or a broken one may answer anything)."""

from __future__ import annotations

from typing import Any


def as_map(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def maps(value: object) -> list[dict[str, Any]]:
    """The mappings of a list (anything else in it left out)."""
    return [v for v in as_list(value) if isinstance(v, dict)]


def get(value: object, *keys: str) -> Any:
    """``value[k1][k2]...``, None where a level is missing or not a mapping."""
    for key in keys:
        value = as_map(value).get(key)
    return value
