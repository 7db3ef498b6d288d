"""The JSON-lines wire format: one request object per line, exactly one reply line each.

Replies are ``{"ok": true, ...}`` or ``{"ok": false, "code": ..., "error": ...}``. Everything a
client sends is checked here, so a malformed request becomes a clear error reply at the edge.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from .spec import JobSpec
from .states import JobState

MAX_LINE = 16 * 1024 * 1024
"""Longest request line accepted, in bytes; a longer one gets an error and the connection closes."""

if TYPE_CHECKING:  # aliases only in annotations: subscripted dict needs Python 3.9 at runtime
    Request = dict[str, Any]
    Reply = dict[str, Any]


class RequestError(Exception):
    """A request the agent refuses; ``code`` is short and stable, ``message`` one sentence."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def ok(**fields: Any) -> Reply:
    return {"ok": True, **fields}


def error(code: str, message: str) -> Reply:
    return {"ok": False, "code": code, "error": message}


def encode(reply: Reply) -> bytes:
    return json.dumps(reply, separators=(",", ":")).encode() + b"\n"


def decode_request(line: bytes) -> Request:
    try:
        request = json.loads(line)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError; too deep
        raise RequestError("bad_json", f"the request line is not valid JSON: {exc}") from None
    if not isinstance(request, dict):
        raise RequestError("bad_request", "a request must be a JSON object")
    if not isinstance(request.get("op"), str):
        raise RequestError("bad_request", 'a request needs a string field "op"')
    return request


_MISSING: Any = object()


def _field(request: Request, name: str, default: Any) -> Any:
    if name in request:
        return request[name]
    if default is _MISSING:
        raise RequestError("bad_request", f'the request lacks the field "{name}"')
    return default


def _ill_typed(name: str, expected: str) -> RequestError:
    return RequestError("bad_request", f'the field "{name}" must be {expected}')


def get_int(request: Request, name: str, default: Any = _MISSING) -> int:
    value = _field(request, name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _ill_typed(name, "an integer")
    return value


def get_float(request: Request, name: str, default: Any = _MISSING) -> float:
    value = _field(request, name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _ill_typed(name, "a number")
    return float(value)


def get_optional_float(request: Request, name: str) -> float | None:
    if request.get(name) is None:
        return None
    return get_float(request, name)


def get_bool(request: Request, name: str, default: Any = _MISSING) -> bool:
    value = _field(request, name, default)
    if not isinstance(value, bool):
        raise _ill_typed(name, "true or false")
    return value


def get_str(request: Request, name: str, default: Any = _MISSING) -> str:
    value = _field(request, name, default)
    if not isinstance(value, str):
        raise _ill_typed(name, "a string")
    return value


def get_optional_str(request: Request, name: str) -> str | None:
    if request.get(name) is None:
        return None
    return get_str(request, name)


def get_optional_ints(request: Request, name: str) -> list[int] | None:
    value = request.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(
        isinstance(item, int) and not isinstance(item, bool) for item in value
    ):
        raise _ill_typed(name, "a list of integers or null")
    return value


def get_state(request: Request, name: str) -> JobState:
    value = get_str(request, name)
    try:
        return JobState(value)
    except ValueError:
        raise _ill_typed(name, "a job state such as PENDING or RUNNING") from None


def parse_submit(request: Request, *, default_rank: int, default_ip: str, cluster: str) -> JobSpec:
    job_id = get_int(request, "job_id")
    envs = request.get("envs") or {}
    if not isinstance(envs, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in envs.items()
    ):
        raise _ill_typed("envs", "an object of string to string")
    secrets = request.get("secrets") or []
    if not isinstance(secrets, list) or not all(isinstance(name, str) for name in secrets):
        raise _ill_typed("secrets", "a list of env names")
    node_ips = request.get("node_ips") or [default_ip]
    if not isinstance(node_ips, list) or not all(isinstance(ip, str) for ip in node_ips):
        raise _ill_typed("node_ips", "a list of strings")
    cluster_info = request.get("cluster_info") or {}
    if not isinstance(cluster_info, dict):
        raise _ill_typed("cluster_info", "an object")
    mounts = request.get("mounts")  # {node rank: [bucket mount paths]}, this node's taken
    if mounts is not None:
        if not isinstance(mounts, dict):
            raise _ill_typed("mounts", "an object of node rank to mount paths")
        mounts = mounts.get(str(get_int(request, "node_rank", default_rank))) or []
        if not isinstance(mounts, list) or not all(isinstance(d, str) for d in mounts):
            raise _ill_typed("mounts", "an object of node rank to mount paths")
    num_gpus = get_float(request, "num_gpus", 0.0)
    if num_gpus < 0:
        raise _ill_typed("num_gpus", "zero or more")
    return JobSpec(
        job_id=job_id,
        name=get_optional_str(request, "name"),
        setup=get_optional_str(request, "setup"),
        run=get_optional_str(request, "run"),
        envs=envs,
        workdir=get_optional_str(request, "workdir"),
        num_gpus=num_gpus,
        task_id=get_str(request, "task_id", f"{cluster}-{job_id}"),
        node_rank=get_int(request, "node_rank", default_rank),
        node_ips=node_ips,
        num_nodes=get_int(request, "num_nodes", len(node_ips)),
        cluster_info=cluster_info,
        gang=get_bool(request, "gang", False),
        secrets=secrets,
        mounts=mounts,
    )
