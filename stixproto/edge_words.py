"""The words of `stixproto.edge`'s refusals: msgspec's errors as one sentence naming the field
and what it takes. Apart from the checks so that a request that passes them (nearly every one)
does not compile these: the client compiles what it imports on every command.
"""

from __future__ import annotations

from typing import Any

import msgspec

from stixproto import messages as m
from stixproto.errors import InvalidRequest, ProtocolError

BY_TAG: dict[str, type[msgspec.Struct]] = {
    cls.__struct_config__.tag: cls for cls in m.Request.__args__
}


SHAPE_ERRORS = ("Expected `", "Object missing", "Object contains", "Invalid value")


def refusal(exc: msgspec.ValidationError) -> type[InvalidRequest] | type[ProtocolError]:
    """A value of the wrong type or shape comes from a client that does not speak the protocol;
    anything else (out of its range, refused by a message's own check) is a bad argument."""
    text = str(exc)
    out_of_range = any(op in text for op in (" >= ", " <= ", " > ", " < "))
    return ProtocolError if text.startswith(SHAPE_ERRORS) and not out_of_range else InvalidRequest


def tag(raw: Any) -> str:
    """What the request is, as a message names it (`cost report`, `logs`)."""
    tag = raw.get("type") if isinstance(raw, dict) else None
    return tag.replace("_", " ") if isinstance(tag, str) else "request"


# -- msgspec's errors as one sentence --------------------------------------------------------


def explain(exc: msgspec.ValidationError, raw: Any) -> str:
    """`Expected `int` <= 9 - at `$.job_ids[0]`` → `cancel: job_ids[0]: expected an integer
    from 1 to 9, got 12`."""
    text = str(exc)
    message, sep, where = text.rpartition(" - at `")
    if not sep:
        return f"{tag(raw)}: {sentence(text)}"
    where = where.rstrip("`")
    value = value_at(raw, where)
    bounds = bounds_at(raw, where) if message.startswith("Expected `") else None
    if bounds and any(op in message for op in (" >= ", " <= ", " > ", " < ")):
        return f"{tag(raw)}: {field(where)}: expected {bounds}, got {show(value)}"
    if message.startswith("Expected `"):
        expected = message[len("Expected `") :].partition("`")[0]
        got = f", got {show(value)}" if value is not None else ""
        return f"{tag(raw)}: {field(where)}: expected {words(expected)}{got}"
    return f"{tag(raw)}: {field(where)}: {sentence(message)}"


def sentence(text: str) -> str:
    return (text[:1].lower() + text[1:]).replace("`", "'")


def field(where: str) -> str:
    return where.removeprefix("$").removeprefix(".") or "the request"


WORDS = {"int": "an integer", "float": "a number", "str": "text", "bool": "true or false"}


def words(expected: str) -> str:
    names = [n.strip() for n in expected.split("|") if n.strip() != "null"]
    if "int" in names and "float" in names:
        names.remove("int")
    words = [WORDS.get(n, f"a value of type {n}") for n in names] or ["null"]
    return " or ".join(words)


def show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value) if len(value) <= 40 else repr(value[:37] + "...")
    if isinstance(value, bool) or value is None:
        return str(value).lower() if value is not None else "null"
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    if isinstance(value, int | float):
        text = str(value)
        return text if len(text) <= 40 else text[:20] + "..." + f" ({len(text)} digits)"
    return "a map" if isinstance(value, dict) else "a list"


def value_at(raw: Any, where: str) -> Any:
    from stixproto.task.explain import path_segments  # an error's path, read as a task's is

    value = raw
    for seg in path_segments(where):
        found = isinstance(value, list) and isinstance(seg, int) and seg < len(value)
        if not (found or (isinstance(value, dict) and seg in value)):
            return None
        value = value[seg]
    return value


def bounds_at(raw: Any, where: str) -> str | None:
    """`an integer from 1 to 9` for the field at `where` of the request `raw`, if bounded."""
    from msgspec import inspect

    from stixproto.task.explain import path_segments

    tag = raw.get("type") if isinstance(raw, dict) else None
    cls = BY_TAG.get(tag) if isinstance(tag, str) else None
    if cls is None:
        return None
    info: Any = inspect.type_info(cls)
    for seg in path_segments(where):
        info = step(info, seg)
        if info is None:
            return None
    numbers = [t for t in members(info) if isinstance(t, inspect.IntType | inspect.FloatType)]
    if not numbers:
        return None
    number = numbers[-1]
    what = "an integer" if isinstance(number, inspect.IntType) else "a number"
    low = number.ge if number.ge is not None else number.gt
    high = number.le
    if low is not None and high is not None:
        low_word = "above" if number.gt is not None else "from"
        return f"{what} {low_word} {num(low)} up to {num(high)}"
    if low is not None:
        return f"{what} {'>' if number.gt is not None else '>='} {num(low)}"
    return f"{what} <= {num(high)}" if high is not None else None


def num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def members(info: Any) -> list[Any]:
    from msgspec import inspect

    return list(info.types) if isinstance(info, inspect.UnionType) else [info]


def step(info: Any, seg: str | int) -> Any:
    from msgspec import inspect

    for member in members(info):
        if isinstance(seg, int) and isinstance(member, inspect.ListType | inspect.SetType):
            return member.item_type
        if isinstance(seg, str) and isinstance(member, inspect.StructType):
            for f in member.fields:
                if f.encode_name == seg:
                    return f.type
    return None
