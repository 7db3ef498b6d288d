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
        from stixproto import edge_words as w

        raise InvalidRequest(f"{w.tag(raw)}: the request cannot be sent: {exc}") from None
    if len(body) > MAX_FRAME:
        from stixproto import edge_words as w

        raise InvalidRequest(
            f"{w.tag(raw)}: the request is {len(body)} bytes, more than the {MAX_FRAME}-byte "
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
        from stixproto import edge_words as w

        raise w.refusal(exc)(clip(w.explain(exc, _raw(body)))) from None
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"malformed message: {clip(str(exc))}") from None
    except RecursionError:
        raise ProtocolError("malformed message: nested too deeply") from None
    _check_values(_raw(body))
    if check_tasks:
        _check_tasks(request)
    return request


def _raw(body: bytes) -> Any:
    try:
        return msgspec.msgpack.decode(body)
    except (msgspec.DecodeError, RecursionError):
        return None


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
    from stixproto import edge_words as w  # the words of a refusal: only now

    where, problem = found
    bounds = w.bounds_at(raw, where)
    if bounds and isinstance(w.value_at(raw, where), int | float):
        problem = f"expected {bounds}, got {w.show(w.value_at(raw, where))}"
    raise InvalidRequest(f"{w.tag(raw)}: {w.field(where)}: {problem}")


def _check_tasks(request: Any) -> None:
    tasks = [getattr(request, "task", None), *getattr(request, "tasks", [])]
    tasks = [t for t in tasks if t is not None]
    if not tasks:
        return
    from stixproto.task import validated

    for i, task in enumerate(tasks):
        validated(task, "task" if len(tasks) == 1 else f"task {i + 1}")
