"""A task's envs and secrets: values supplied late, what is still missing, what a job sees."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from stixproto.task.model import Scalar, Task

REDACTED = "<redacted>"


def apply_env_overrides(task: Task, overrides: Mapping[str, str]) -> Task:
    """`--env` values win over the file's; variables that were unset get substituted now.

    Prefer `load_task_file(path, env_overrides=...)`, which substitutes every variable; here a
    variable the file already gave a value was substituted with that value at load time.
    """
    return _override(task, overrides, secrets=False)


def apply_secret_overrides(task: Task, overrides: Mapping[str, str]) -> Task:
    return _override(task, overrides, secrets=True)


def _override(task: Task, overrides: Mapping[str, str], *, secrets: bool) -> Task:
    if not overrides:
        return task
    current = task.secrets if secrets else task.envs
    if isinstance(current, list):
        current = dict.fromkeys(current)
    unset = {k: str(v) for k, v in overrides.items() if current.get(k) is None}
    merged = {**current, **{k: str(v) for k, v in overrides.items()}}
    task = msgspec.structs.replace(task, **{"secrets" if secrets else "envs": merged})
    if unset:
        from stixproto.task.load import resubstitute

        task = resubstitute(task, unset)
    return task


def missing_envs(task: Task) -> list[str]:
    """Envs written as null and not supplied since; launch refuses them (`launch_problems`)."""
    return [k for k, v in task.envs.items() if v is None]


def missing_secrets(task: Task) -> list[str]:
    if isinstance(task.secrets, list):
        return []
    return [k for k, v in task.secrets.items() if v is None]


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


def secret_names(task: Task) -> list[str]:
    """The secrets that have a value: what must be forgotten once nothing needs them."""
    if not isinstance(task.secrets, dict):
        return []
    return sorted(k for k, v in task.secrets.items() if v is not None)


def _env_str(value: Scalar) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def redacted_task(raw: Any) -> Any:
    """`redacted` on a task stored as plain data, whether it still decodes or not."""
    if not isinstance(raw, dict) or not isinstance(raw.get("secrets"), dict):
        return raw
    secrets = {k: None if v is None else REDACTED for k, v in raw["secrets"].items()}
    return {**raw, "secrets": secrets}


def redacted(task: Task) -> Task:
    """The task as it may be shown or stored in events: secret values replaced."""
    if not isinstance(task.secrets, dict) or not task.secrets:
        return task
    return msgspec.structs.replace(task, secrets=dict.fromkeys(task.secrets, REDACTED))
