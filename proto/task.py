"""The task model as both sides see it, and the loader every command that takes a task uses.

This is the slice the core commands need; the rest of the task language (variable
substitution, accelerator parsing, service specs, pipelines) grows here, in one place.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import msgspec

from proto.errors import InvalidTask

Scalar = str | int | float | bool


class Resources(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    infra: str | None = None
    cloud: str | None = None
    region: str | None = None
    zone: str | None = None
    cpus: int | float | str | None = None
    memory: int | float | str | None = None
    accelerators: str | dict[str, Any] | list[Any] | None = None
    accelerator_args: dict[str, Any] | None = None
    instance_type: str | None = None
    use_spot: bool | None = None
    job_recovery: str | dict[str, Any] | None = None
    spot_recovery: str | dict[str, Any] | None = None
    disk_size: int | str | None = None
    disk_tier: str | None = None
    network_tier: str | None = None
    ports: int | str | list[int | str] | None = None
    labels: dict[str, str] | None = None
    image_id: str | dict[str, Any] | None = None
    any_of: list[dict[str, Any]] | None = None
    ordered: list[dict[str, Any]] | None = None
    autostop: bool | int | str | dict[str, Any] | None = None
    priority: int | None = None
    local_disk: str | None = None
    max_hourly_cost: float | None = None
    volumes: list[dict[str, Any]] | None = None


class Task(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    name: str | None = None
    workdir: str | dict[str, Any] | None = None
    num_nodes: int = 1
    resources: Resources | None = None
    envs: dict[str, Scalar | None] = msgspec.field(default_factory=dict)
    secrets: dict[str, Scalar | None] | list[str] = msgspec.field(default_factory=dict)
    file_mounts: dict[str, Any] = msgspec.field(default_factory=dict)
    volumes: dict[str, Any] | None = None
    setup: str | None = None
    run: str | None = None
    config: dict[str, Any] | None = None
    service: dict[str, Any] | None = None
    pool: dict[str, Any] | None = None
    event_callback: str | None = None
    inputs: dict[str, Any] | None = None
    outputs: dict[str, Any] | None = None


_TASK_KEYS = list(Task.__struct_fields__)
_RESOURCE_KEYS = list(Resources.__struct_fields__)
_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


def _explain(exc: msgspec.ValidationError, source: str) -> InvalidTask:
    """Turn msgspec's message into `source: key.path: what was wrong (did you mean ...)`."""
    import difflib
    import re

    text = str(exc)
    where = ""
    if " - at `$" in text:
        text, _, raw_path = text.rpartition(" - at `$")
        where = raw_path.rstrip("`").lstrip(".")
        where = re.sub(r"\[(\d+)\]", r".\1", where)
    unknown = re.match(r"Object contains unknown field `(.+)`", text)
    if unknown:
        key = unknown.group(1)
        known = _RESOURCE_KEYS if where.endswith("resources") else _TASK_KEYS
        near = difflib.get_close_matches(key, known, n=1)
        hint = f" (did you mean '{near[0]}'?)" if near else ""
        path = f"{where}.{key}" if where else key
        return InvalidTask(f"{source}: {path}: unknown key{hint}")
    text = text.replace("`", "'")
    if text.startswith("Expected"):
        text = "expected" + text[len("Expected") :]
    return InvalidTask(f"{source}: {where or 'task'}: {text}")


def task_from_dict(raw: object, source: str = "task") -> Task:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InvalidTask(
            f"{source}: a task file must be a mapping of keys, got {type(raw).__name__}"
        )
    try:
        task = msgspec.convert(raw, Task)
    except msgspec.ValidationError as exc:
        raise _explain(exc, source) from None
    if task.num_nodes < 1:
        raise InvalidTask(f"{source}: num_nodes: expected an integer >= 1, got {task.num_nodes}")
    import re

    for name in task.envs:
        if not re.match(_ENV_NAME, name):
            raise InvalidTask(f"{source}: envs.{name}: not a valid environment variable name")
    return task


def load_task_file(path: str | Path) -> Task:
    import yaml  # deferred: only commands that read a task file pay for it

    source = str(path)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise InvalidTask(f"{source}: cannot read the task file: {exc.strerror}") from None
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise InvalidTask(f"{source}: YAML syntax error{where}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise InvalidTask(f"{source}: YAML syntax error: {exc}") from None
    if len(docs) > 1:
        raise InvalidTask(
            f"{source}: holds {len(docs)} YAML documents (a pipeline); "
            "pipelines run as managed jobs, not with launch/exec"
        )
    task = task_from_dict(docs[0] if docs else {}, source)
    return _resolve_paths(task, Path(source).resolve().parent)


def _resolve_paths(task: Task, base: Path) -> Task:
    """Local paths are resolved against the caller's working directory, as SkyPilot does."""
    del base  # kept for symmetry with SkyPilot's docs; resolution is against the cwd
    cwd = Path.cwd()
    workdir = task.workdir
    if isinstance(workdir, str):
        workdir = str((cwd / os.path.expanduser(workdir)).resolve())
    mounts: dict[str, Any] = {}
    for dest, src in task.file_mounts.items():
        if isinstance(src, str) and "://" not in src:
            src = str((cwd / os.path.expanduser(src)).resolve())
        mounts[dest] = src
    return msgspec.structs.replace(task, workdir=workdir, file_mounts=mounts)


def task_from_command(command: str, name: str | None = None) -> Task:
    return Task(name=name, run=command)


def apply_env_overrides(task: Task, overrides: dict[str, str]) -> Task:
    envs = dict(task.envs)
    envs.update(overrides)
    return msgspec.structs.replace(task, envs=envs)


def missing_envs(task: Task) -> list[str]:
    missing = [k for k, v in task.envs.items() if v is None]
    if isinstance(task.secrets, dict):
        missing += [k for k, v in task.secrets.items() if v is None]
    return missing


def resolved_envs(task: Task) -> dict[str, str]:
    """Envs and secrets as strings, as the job's environment gets them."""
    out: dict[str, str] = {}
    for k, v in task.envs.items():
        if v is not None:
            out[k] = _env_str(v)
    if isinstance(task.secrets, dict):
        for k, v in task.secrets.items():
            if v is not None:
                out[k] = _env_str(v)
    return out


def _env_str(value: Scalar) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def redacted(task: Task) -> Task:
    """The task as it may be shown or stored in events: secret values replaced."""
    if not isinstance(task.secrets, dict) or not task.secrets:
        return task
    return msgspec.structs.replace(task, secrets={k: "<redacted>" for k in task.secrets})
