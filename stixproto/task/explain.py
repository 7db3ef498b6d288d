"""msgspec's validation errors, retold as `key.path: what was expected (did you mean 'x'?)`.

msgspec reports `Expected `int | str`, got `array` - at `$.resources.any_of[1].cpus``. This
walks the same path through the raw document and the model's types, so the message can quote
the value and, for an unknown key, suggest the nearest known one. Map values show up as `[...]`
in msgspec's paths; the failing key is found by converting each value again.
"""

from __future__ import annotations

import types
import typing
from typing import Any

import msgspec

from stixproto.errors import TaskFieldError
from stixproto.task._fields import describe, near

_TYPE_WORDS = {
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "bool": "true or false",
    "object": "a map",
    "array": "a list",
}


def _words(expected: str) -> str:
    names = [n.strip() for n in expected.split("|")]
    if "int" in names and "float" in names:
        names.remove("int")
    words = [_TYPE_WORDS.get(n, n) for n in names if n != "null"] or ["null"]
    if len(words) == 1:
        return words[0]
    return ", ".join(words[:-1]) + " or " + words[-1]


def path_segments(where: str) -> list[str | int]:
    """`$.a.b[1][...]` → ['a', 'b', 1, '...'] (a map key shows as '...'): the path of a msgspec
    validation error, as `stixproto.edge` reads it too."""
    out: list[str | int] = []
    rest = where[1:] if where.startswith("$") else where
    while rest:
        if rest.startswith("."):
            end = min(
                (i for i in (rest.find(".", 1), rest.find("[", 1)) if i > 0), default=len(rest)
            )
            out.append(rest[1:end])
            rest = rest[end:]
        elif rest.startswith("["):
            end = rest.find("]")
            token = rest[1:end]
            out.append(int(token) if token.isdigit() else "...")
            rest = rest[end + 1 :]
        else:
            break
    return out


def _members(typ: Any) -> tuple[Any, ...]:
    if isinstance(typ, types.UnionType) or typing.get_origin(typ) is typing.Union:
        return typing.get_args(typ)
    return (typ,)


def _struct(typ: Any) -> type[msgspec.Struct] | None:
    for member in _members(typ):
        if isinstance(member, type) and issubclass(member, msgspec.Struct):
            return member
    return None


def _container(typ: Any, origin: type) -> Any:
    for member in _members(typ):
        if typing.get_origin(member) is origin:
            return member
    return None


def _field_types(cls: type[msgspec.Struct]) -> dict[str, Any]:
    return {f.encode_name: f.type for f in msgspec.structs.fields(cls)}


def _known_keys(cls: type[msgspec.Struct]) -> list[str]:
    return list(_field_types(cls))


def _step(value: Any, typ: Any, seg: str | int) -> tuple[Any, Any]:
    if isinstance(seg, int):
        item = _container(typ, list)
        inner = typing.get_args(item)[0] if item is not None else Any
        return (value[seg] if isinstance(value, list) and seg < len(value) else None), inner
    cls = _struct(typ)
    inner = _field_types(cls).get(seg, Any) if cls is not None else Any
    return (value.get(seg) if isinstance(value, dict) else None), inner


def _unknown_key(
    key: str, cls: type[msgspec.Struct] | None, path: list[str | int]
) -> TaskFieldError:
    known = _known_keys(cls) if cls is not None else []
    hint = near(key, known)
    if not path and cls is not None and cls.__name__ == "Task":
        from stixproto.task.model import Resources

        if key in Resources.__struct_fields__:
            hint = f"resources.{key}"
    return TaskFieldError(_dotted([*path, key]), "unknown key", suggestion=hint)


def _dotted(path: list[str | int]) -> str:
    return ".".join(str(p) for p in path)


def explain(exc: msgspec.ValidationError, raw: Any, typ: Any) -> TaskFieldError:
    """The TaskFieldError for a failed `msgspec.convert(raw, typ)`."""
    text = str(exc)
    message, _, where = text.rpartition(" - at `") if " - at `" in text else (text, "", "")
    where = where.rstrip("`")
    key_problem = where.startswith("key` in `")
    if key_problem:
        where = where[len("key` in `") :]
    path: list[str | int] = []
    value, current = raw, typ
    for seg in path_segments(where):
        if seg == "...":
            return _in_map(value, current, path)
        value, current = _step(value, current, seg)
        path.append(seg)
    if key_problem:
        bad = (
            next((k for k in value if not isinstance(k, str)), None)
            if isinstance(value, dict)
            else None
        )
        cls = _struct(current)
        if cls is not None:
            return TaskFieldError(_dotted([*path, str(bad)]), "unknown key (keys are strings)")
        return TaskFieldError(_dotted(path), f"expected string keys, got {describe(bad)}")
    if message.startswith("Object contains unknown field `"):
        key = message[len("Object contains unknown field `") :].rstrip("`")
        return _unknown_key(key, _struct(current), path)
    if message.startswith("Object missing required field `"):
        key = message[len("Object missing required field `") :].rstrip("`")
        return TaskFieldError(_dotted([*path, key]), "required key is missing")
    if message.startswith("Expected `"):
        expected = message[len("Expected `") :].partition("`")[0]
        return TaskFieldError(_dotted(path), f"expected {_words(expected)}, got {describe(value)}")
    return TaskFieldError(_dotted(path), message[:1].lower() + message[1:].replace("`", "'"))


def _in_map(value: Any, typ: Any, path: list[str | int]) -> TaskFieldError:
    mapping = _container(typ, dict)
    inner = typing.get_args(mapping)[1] if mapping is not None else Any
    for key, item in value.items() if isinstance(value, dict) else ():
        try:
            msgspec.convert(item, inner)
        except msgspec.ValidationError as exc:
            sub = explain(exc, item, inner)
            prefix = _dotted([*path, key])
            full = f"{prefix}.{sub.path}" if sub.path else prefix
            return TaskFieldError(full, sub.problem, suggestion=sub.suggestion)
    return TaskFieldError(_dotted(path), "invalid value")
