"""The one check every request passes: by the client before it is sent, by the daemon on arrival.

`request_body` (client) encodes a request and reads it back exactly as the daemon will, with
`decode_request` (daemon). Both refuse what the daemon must never act on or store — a number
out of its range (`stixproto.bounds`), `inf`/`nan` anywhere, an integer msgpack cannot carry,
text that is not UTF-8, a task that breaks the task rules — with one `InvalidRequest` sentence
naming the field and what it accepts (a value of the wrong type is a `ProtocolError`: only a
client that does not speak the protocol sends one). So the CLI, the SDK and a raw socket client
all get the same answer, and a bad value never reaches the store.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import msgspec

from stixproto import messages as m
from stixproto.errors import InvalidRequest, ProtocolError
from stixproto.framing import MAX_FRAME, clip

_encoder = msgspec.msgpack.Encoder()
_INT_RANGE = (-(2**63), 2**64 - 1)
"""What msgpack carries."""

_BY_TAG: dict[str, type[msgspec.Struct]] = {
    cls.__struct_config__.tag: cls for cls in m.Request.__args__
}


def request_body(request: Any, *, tasks_checked: bool = False) -> bytes:
    """The msgpack body of `request`, once it passed every check the daemon makes.
    `tasks_checked`: its tasks are ones the daemon read and checked (`ReadTask`), so the
    client does not import the task rules to check them again (the daemon does on arrival)."""
    try:
        raw = msgspec.to_builtins(request)
    except RecursionError:
        raise InvalidRequest("the request is nested too deeply to send") from None
    _check_values(raw)
    try:
        body = _encoder.encode(request)
    except (OverflowError, UnicodeEncodeError, TypeError) as exc:  # a value the walk missed
        raise InvalidRequest(f"{_tag(raw)}: the request cannot be sent: {exc}") from None
    if len(body) > MAX_FRAME:
        raise InvalidRequest(
            f"{_tag(raw)}: the request is {len(body)} bytes, more than the {MAX_FRAME}-byte "
            "frame limit; make the task or its envs smaller"
        )
    decode_request(body, type(request), check_tasks=not tasks_checked)
    return body


@functools.cache
def _decoder(kind: Any) -> msgspec.msgpack.Decoder[Any]:
    return msgspec.msgpack.Decoder(kind)


def decode_request(body: bytes, kind: Any = m.Request, *, check_tasks: bool = True) -> Any:
    """The request in a frame body, or `InvalidRequest`/`ProtocolError` saying what is wrong.
    The client reads its own request back as its own type: building the decoder of the whole
    `Request` union costs more than a `stixctl status` is allowed to take."""
    try:
        request = _decoder(kind).decode(body)
    except msgspec.ValidationError as exc:
        raise _refusal(exc)(clip(_explain(exc, _raw(body)))) from None
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"malformed message: {clip(str(exc))}") from None
    except RecursionError:
        raise ProtocolError("malformed message: nested too deeply") from None
    _check_values(_raw(body))
    if check_tasks:
        _check_tasks(request)
    return request


_SHAPE_ERRORS = ("Expected `", "Object missing", "Object contains", "Invalid value")


def _refusal(exc: msgspec.ValidationError) -> type[InvalidRequest] | type[ProtocolError]:
    """A value of the wrong type or shape comes from a client that does not speak the protocol;
    anything else (out of its range, refused by a message's own check) is a bad argument."""
    text = str(exc)
    out_of_range = any(op in text for op in (" >= ", " <= ", " > ", " < "))
    return ProtocolError if text.startswith(_SHAPE_ERRORS) and not out_of_range else InvalidRequest


def _raw(body: bytes) -> Any:
    try:
        return msgspec.msgpack.decode(body)
    except (msgspec.DecodeError, RecursionError):
        return None


def _tag(raw: Any) -> str:
    """What the request is, as a message names it (`cost report`, `logs`)."""
    tag = raw.get("type") if isinstance(raw, dict) else None
    return tag.replace("_", " ") if isinstance(tag, str) else "request"


# -- every value, whatever its field ---------------------------------------------------------


def _bad_value(value: Any) -> str | None:
    if isinstance(value, float) and not math.isfinite(value):
        return f"expected a finite number, got {value}"
    if isinstance(value, int) and not _INT_RANGE[0] <= value <= _INT_RANGE[1]:
        return f"the number {value} is outside the 64-bit range"
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            return "expected UTF-8 text (it holds bytes that are not)"
    return None


def _find_bad(value: Any, path: str) -> tuple[str, str] | None:
    """The first (path, problem) in a tree of builtins; iterative, so depth cannot overflow."""
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, dict):
            for key, sub in reversed(list(item.items())):
                stack.append((sub, f"{where}.{key}"))
                stack.append((key, f"{where} key"))
        elif isinstance(item, list | tuple):
            stack.extend((sub, f"{where}[{i}]") for i, sub in reversed(list(enumerate(item))))
        else:
            problem = _bad_value(item)
            if problem:
                return where, problem
    return None


def _check_values(raw: Any) -> None:
    found = _find_bad(raw, "$")
    if found is None:
        return
    where, problem = found
    bounds = _bounds_at(raw, where)
    if bounds and isinstance(_value_at(raw, where), int | float):
        problem = f"expected {bounds}, got {_show(_value_at(raw, where))}"
    raise InvalidRequest(f"{_tag(raw)}: {_field(where)}: {problem}")


def _check_tasks(request: Any) -> None:
    tasks = [getattr(request, "task", None), *getattr(request, "tasks", [])]
    tasks = [t for t in tasks if t is not None]
    if not tasks:
        return
    from stixproto.task import validated

    for i, task in enumerate(tasks):
        validated(task, "task" if len(tasks) == 1 else f"task {i + 1}")


# -- msgspec's errors as one sentence --------------------------------------------------------


def _explain(exc: msgspec.ValidationError, raw: Any) -> str:
    """`Expected `int` <= 9 - at `$.job_ids[0]`` → `cancel: job_ids[0]: expected an integer
    from 1 to 9, got 12`."""
    text = str(exc)
    message, sep, where = text.rpartition(" - at `")
    if not sep:
        return f"{_tag(raw)}: {_sentence(text)}"
    where = where.rstrip("`")
    value = _value_at(raw, where)
    bounds = _bounds_at(raw, where) if message.startswith("Expected `") else None
    if bounds and any(op in message for op in (" >= ", " <= ", " > ", " < ")):
        return f"{_tag(raw)}: {_field(where)}: expected {bounds}, got {_show(value)}"
    if message.startswith("Expected `"):
        expected = message[len("Expected `") :].partition("`")[0]
        got = f", got {_show(value)}" if value is not None else ""
        return f"{_tag(raw)}: {_field(where)}: expected {_words(expected)}{got}"
    return f"{_tag(raw)}: {_field(where)}: {_sentence(message)}"


def _sentence(text: str) -> str:
    return (text[:1].lower() + text[1:]).replace("`", "'")


def _field(where: str) -> str:
    return where.removeprefix("$").removeprefix(".") or "the request"


_WORDS = {"int": "an integer", "float": "a number", "str": "text", "bool": "true or false"}


def _words(expected: str) -> str:
    names = [n.strip() for n in expected.split("|") if n.strip() != "null"]
    if "int" in names and "float" in names:
        names.remove("int")
    words = [_WORDS.get(n, f"a value of type {n}") for n in names] or ["null"]
    return " or ".join(words)


def _show(value: Any) -> str:
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


def _value_at(raw: Any, where: str) -> Any:
    from stixproto.task.explain import path_segments  # an error's path, read as a task's is

    value = raw
    for seg in path_segments(where):
        found = isinstance(value, list) and isinstance(seg, int) and seg < len(value)
        if not (found or (isinstance(value, dict) and seg in value)):
            return None
        value = value[seg]
    return value


def _bounds_at(raw: Any, where: str) -> str | None:
    """`an integer from 1 to 9` for the field at `where` of the request `raw`, if bounded."""
    from msgspec import inspect

    from stixproto.task.explain import path_segments

    tag = raw.get("type") if isinstance(raw, dict) else None
    cls = _BY_TAG.get(tag) if isinstance(tag, str) else None
    if cls is None:
        return None
    info: Any = inspect.type_info(cls)
    for seg in path_segments(where):
        info = _step(info, seg)
        if info is None:
            return None
    numbers = [t for t in _members(info) if isinstance(t, inspect.IntType | inspect.FloatType)]
    if not numbers:
        return None
    number = numbers[-1]
    what = "an integer" if isinstance(number, inspect.IntType) else "a number"
    low = number.ge if number.ge is not None else number.gt
    high = number.le
    if low is not None and high is not None:
        low_word = "above" if number.gt is not None else "from"
        return f"{what} {low_word} {_num(low)} up to {_num(high)}"
    if low is not None:
        return f"{what} {'>' if number.gt is not None else '>='} {_num(low)}"
    return f"{what} <= {_num(high)}" if high is not None else None


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _members(info: Any) -> list[Any]:
    from msgspec import inspect

    return list(info.types) if isinstance(info, inspect.UnionType) else [info]


def _step(info: Any, seg: str | int) -> Any:
    from msgspec import inspect

    for member in _members(info):
        if isinstance(seg, int) and isinstance(member, inspect.ListType | inspect.SetType):
            return member.item_type
        if isinstance(seg, str) and isinstance(member, inspect.StructType):
            for f in member.fields:
                if f.encode_name == seg:
                    return f.type
    return None
