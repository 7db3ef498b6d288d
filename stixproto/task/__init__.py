"""The SkyPilot task language as a typed model: tasks, pipelines, and their validation.

    task = load_task_file("train.yaml", env_overrides={"STEPS": "2"})
    dag = load_dag_file("pipeline.yaml")
    task = apply_overrides(task, ResourceOverrides(gpus="A100:8", infra="aws"))
    text = to_yaml(task)

Modules: `model` (the shapes: Task, Resources, Storage, Service, Dag, …; it imports nothing
else of this package), `resources`, `storage`, `service` (their rules and effective values),
`parsing` (views of fields written in several shapes), `envs`, `load` (YAML → model,
validation), `explain` (msgspec errors as sentences), `overrides` (command-line resource flags),
`problems` (what stops a launch from here), `dump` (back to YAML). Every problem is one
`stixproto.errors.TaskFieldError` sentence naming the key path.

Only `model` is imported with this package: `stixproto.messages` carries a Task, so every `stixctl`
command imports it, and nothing here is byte-compiled ahead of time. The other names load on
first use (PEP 562 `__getattr__` below).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from stixproto.task.model import (
    AcceleratorArgs,
    AutostopConfig,
    Dag,
    ReadinessProbe,
    ReplicaPolicy,
    Resources,
    Service,
    Storage,
    Task,
)

if TYPE_CHECKING:
    from stixproto.task.dump import to_dict, to_yaml
    from stixproto.task.envs import (
        apply_env_overrides,
        apply_secret_overrides,
        missing_envs,
        missing_secrets,
        redacted,
        redacted_task,
        resolved_envs,
        secret_names,
    )
    from stixproto.task.load import (
        check_task,
        from_yaml,
        load_dag_file,
        load_task_file,
        read_documents,
        task_from_dict,
        validated,
    )
    from stixproto.task.local_paths import resolve_paths
    from stixproto.task.overrides import ResourceOverrides, apply_overrides
    from stixproto.task.parsing import (
        Accelerator,
        AcceleratorChoice,
        Amount,
        Autostop,
        JobRecovery,
        Placement,
    )
    from stixproto.task.problems import launch_problems, task_notes
    from stixproto.task.service import Probe, Scaling
    from stixproto.task.storage import GitWorkdir

_LAZY = {
    "to_dict": "dump",
    "to_yaml": "dump",
    "apply_env_overrides": "envs",
    "apply_secret_overrides": "envs",
    "missing_envs": "envs",
    "missing_secrets": "envs",
    "redacted": "envs",
    "redacted_task": "envs",
    "resolved_envs": "envs",
    "secret_names": "envs",
    "check_task": "load",
    "from_yaml": "load",
    "load_dag_file": "load",
    "load_task_file": "load",
    "read_documents": "load",
    "resolve_paths": "local_paths",
    "task_from_dict": "load",
    "validated": "load",
    "ResourceOverrides": "overrides",
    "apply_overrides": "overrides",
    "Accelerator": "parsing",
    "AcceleratorChoice": "parsing",
    "Amount": "parsing",
    "Autostop": "parsing",
    "JobRecovery": "parsing",
    "Placement": "parsing",
    "launch_problems": "problems",
    "task_notes": "problems",
    "Probe": "service",
    "Scaling": "service",
    "GitWorkdir": "storage",
}

__all__ = [
    "Accelerator",
    "AcceleratorArgs",
    "AcceleratorChoice",
    "Amount",
    "Autostop",
    "AutostopConfig",
    "Dag",
    "GitWorkdir",
    "JobRecovery",
    "Placement",
    "Probe",
    "ReadinessProbe",
    "ReplicaPolicy",
    "ResourceOverrides",
    "Resources",
    "Scaling",
    "Service",
    "Storage",
    "Task",
    "apply_env_overrides",
    "apply_overrides",
    "apply_secret_overrides",
    "check_task",
    "from_yaml",
    "launch_problems",
    "load_dag_file",
    "load_task_file",
    "missing_envs",
    "missing_secrets",
    "read_documents",
    "redacted",
    "redacted_task",
    "resolve_paths",
    "resolved_envs",
    "secret_names",
    "task_from_command",
    "task_from_dict",
    "task_notes",
    "to_dict",
    "to_yaml",
    "validated",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'stixproto.task' has no attribute {name!r}")
    value = getattr(import_module(f"stixproto.task.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


def task_from_command(command: str, name: str | None = None) -> Task:
    return Task(name=name, run=command)
