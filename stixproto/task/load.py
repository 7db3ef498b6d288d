"""Reading task files: YAML → `Task` (one document) or `Dag` (several), validated.

Order of work for each task document, as SkyPilot does it: envs/secrets read (numbers become
strings), command-line overrides applied, `${VAR}`/`$VAR` substituted into file_mounts,
volumes, workdir and service, then the model built and every rule checked. A problem is one
`TaskFieldError` sentence: `<source>: <key.path>: <what was expected> (did you mean '<x>'?)`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from stixproto.bounds import MAX_COUNT, MAX_GB
from stixproto.errors import InvalidTask, TaskFieldError
from stixproto.names import ENV_NAME_RULE
from stixproto.names import is_env_name as _is_env_name
from stixproto.task import subst
from stixproto.task._fields import check_int_sizes, check_positive, describe, fail, join, near
from stixproto.task.explain import explain
from stixproto.task.files import read_bytes, text_of
from stixproto.task.local_paths import resolve_paths
from stixproto.task.model import HEADER_KEYS, JOB_GROUP_KEYS, Dag, Task
from stixproto.task.resources import check_resources
from stixproto.task.service import check_pool, check_service
from stixproto.task.storage import (
    check_file_mounts,
    check_volumes,
    check_workdir,
    null_storage_names,
)

Overrides = Mapping[str, str] | None


def looks_like_path(text: str) -> bool:
    return "\n" not in text and (text.endswith((".yaml", ".yml")) or os.path.isfile(text))


# -- YAML ------------------------------------------------------------------------------------


def read_documents(text: str, source: str) -> list[Any]:
    """The non-empty YAML documents of `text`, read within `stixproto.user_yaml`'s limits; a
    syntax error names its line and column."""
    from stixproto import user_yaml

    try:
        docs = user_yaml.load_all(text)
    except user_yaml.YamlError as exc:
        raise InvalidTask(f"{source}: {exc}") from None
    return [d for d in docs if d is not None]


def _read(path: str | Path) -> str:
    return text_of(read_bytes(path), str(path))


# -- one task ----------------------------------------------------------------------------------


def _env_value(value: Any, path: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict | list):
        fail(path, f"expected a string (numbers are turned into strings), got {describe(value)}")
    return str(value)


def _env_map(raw: Any, key: str) -> Any:
    """envs/secrets with names checked and scalar values as strings (as SkyPilot reads them)."""
    if key == "secrets" and isinstance(raw, list):
        for i, name in enumerate(raw):
            if not isinstance(name, str) or not name.strip():
                fail(join(key, i), f"expected a secret name, got {describe(name)}")
        return raw
    if not isinstance(raw, dict):
        return raw
    out: dict[str, str | None] = {}
    for name, value in raw.items():
        where = join(key, name)
        if not _is_env_name(name):
            fail(where, f"not a valid environment variable name ({ENV_NAME_RULE})")
        out[name] = _env_value(value, where)
    return out


def _with_overrides(current: Any, overrides: Overrides, key: str) -> Any:
    if not overrides:
        return current
    for name in overrides:
        if not _is_env_name(name):
            fail(join(key, name), f"not a valid environment variable name ({ENV_NAME_RULE})")
    base = dict.fromkeys(current) if isinstance(current, list) else dict(current or {})
    base.update((k, str(v)) for k, v in overrides.items())
    return base


def _prepare(
    raw: dict[str, Any], env_overrides: Overrides, secret_overrides: Overrides
) -> dict[str, Any]:
    raw = dict(raw)
    for key, overrides in (("envs", env_overrides), ("secrets", secret_overrides)):
        if key in raw or overrides:
            raw[key] = _with_overrides(_env_map(raw.get(key), key), overrides, key)
    values: dict[str, str] = {}
    for key in ("envs", "secrets"):
        if isinstance(raw.get(key), dict):
            values.update((k, v) for k, v in raw[key].items() if isinstance(v, str))
    raw = subst.substitute_sections(raw, values)
    null_storage_names(raw.get("file_mounts"))
    check_int_sizes(raw)
    return raw


def check_task(task: Task) -> None:
    """Every rule of a task beyond its YAML types; raises `TaskFieldError` with the key path."""
    if task.num_nodes < 1:
        fail("num_nodes", f"expected an integer >= 1, got {task.num_nodes}")
    if task.num_nodes > MAX_COUNT:
        fail("num_nodes", f"expected an integer <= {MAX_COUNT}, got {task.num_nodes}")
    if task.workdir is not None:
        check_workdir(task.workdir)
    if task.resources is not None:
        check_resources(task.resources)
    check_file_mounts(task.file_mounts)
    if task.volumes is not None:
        check_volumes(task.volumes)
    if task.service is not None:
        check_service(task.service)
    if task.pool is not None:
        if task.service is not None:
            fail("pool", "a task is either a service or a pool, not both")
        check_pool(task.pool)
    for key in ("inputs", "outputs"):
        sizes = getattr(task, key)
        if sizes is None:
            continue
        if len(sizes) != 1:
            fail(key, f"expected one path with its estimated size in GB, got {len(sizes)} entries")
        for name, size in sizes.items():
            check_positive(float(size), join(key, name), zero_ok=True, limit=MAX_GB)
    _check_finite(msgspec.to_builtins(task))


def _check_finite(tree: Any) -> None:
    """No `.inf`/`.nan` anywhere, open maps (`config`, `pool`, ...) included; iterative, so a
    deep document cannot overflow the stack."""
    stack: list[tuple[str, Any]] = [("", tree)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            fail(path, f"expected a finite number, got {value}")
        if isinstance(value, dict):
            stack.extend((join(path, str(k)), v) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((join(path, i), v) for i, v in enumerate(value))


def task_from_dict(
    raw: object,
    source: str = "task",
    *,
    env_overrides: Overrides = None,
    secret_overrides: Overrides = None,
) -> Task:
    """A validated Task from one YAML document (already loaded), or `TaskFieldError`."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InvalidTask(f"{source}: a task must be a map of keys, got {describe(raw)}")
    prepared: Any = raw
    try:
        prepared = _prepare(raw, env_overrides, secret_overrides)
        task = msgspec.convert(prepared, Task)
        check_task(task)
    except TaskFieldError as exc:
        raise exc.at(source) from None
    except msgspec.ValidationError as exc:
        raise _explained(exc, prepared).at(source) from None
    except RecursionError:
        raise InvalidTask(f"{source}: the task is nested too deeply") from None
    return task


def _explained(exc: msgspec.ValidationError, raw: Any) -> TaskFieldError:
    try:
        return explain(exc, raw, Task)
    except Exception:  # the explanation is best effort; msgspec's own words still say what
        return TaskFieldError("", str(exc).replace("`", "'"))


def validated(task: Task, source: str = "task") -> Task:
    """Check a Task built in code (the SDK) by the same rules as a file; returns it."""
    try:
        check_task(task)
    except TaskFieldError as exc:
        raise exc.at(source) from None
    return task


# -- documents → Task or Dag -----------------------------------------------------------------


def _is_header(doc: Any) -> bool:
    return isinstance(doc, dict) and bool(doc) and all(k in HEADER_KEYS for k in doc)


def _dag(docs: list[Any], source: str, env: Overrides, secrets: Overrides) -> Dag:
    first = docs[0]
    if isinstance(first, dict) and any(k in JOB_GROUP_KEYS for k in first):
        for key in first:
            if key not in HEADER_KEYS:
                raise TaskFieldError(
                    str(key),
                    f"unknown key in a job-group header (it holds {', '.join(HEADER_KEYS)})",
                    suggestion=near(str(key), HEADER_KEYS),
                    source=f"{source} (document 1)",
                )
    header: dict[str, Any] = first if _is_header(first) else {}
    offset = 1 if header else 0
    tasks = [
        task_from_dict(
            doc, f"{source} (document {i + 1})", env_overrides=env, secret_overrides=secrets
        )
        for i, doc in enumerate(docs[offset:], start=offset)
    ]
    try:
        dag = msgspec.convert(header, Dag)
    except msgspec.ValidationError as exc:
        raise explain(exc, header, Dag).at(f"{source} (document 1)") from None
    names = [t.name for t in tasks]
    for i, name in enumerate(dag.primary_tasks or []):
        if name not in names:
            raise TaskFieldError(
                f"primary_tasks.{i}",
                f"no task named {name!r} in this file",
                source=f"{source} (document 1)",
            )
    return msgspec.structs.replace(dag, tasks=tasks)


def documents_to(
    docs: list[Any],
    source: str,
    env_overrides: Overrides = None,
    secret_overrides: Overrides = None,
) -> Task | Dag:
    """One document is a Task; several are a Dag (the first may be a header naming it)."""
    if len(docs) <= 1:
        return task_from_dict(
            docs[0] if docs else {},
            source,
            env_overrides=env_overrides,
            secret_overrides=secret_overrides,
        )
    return _dag(docs, source, env_overrides, secret_overrides)


def from_yaml(
    text: str,
    source: str = "task",
    *,
    env_overrides: Overrides = None,
    secret_overrides: Overrides = None,
) -> Task | Dag:
    """YAML text → Task or Dag. Local paths are kept as written (see load_task_file)."""
    return documents_to(read_documents(text, source), source, env_overrides, secret_overrides)


def pipeline_error(source: str, dag: Dag) -> InvalidTask:
    names = ", ".join(t.name or f"#{i + 1}" for i, t in enumerate(dag.tasks))
    return InvalidTask(
        f"{source}: this file is a pipeline of {len(dag.tasks)} tasks ({names}); pipelines run "
        "as managed jobs, not with launch/exec — or split it into one task per file"
    )


def load_task_file(
    path: str | Path, *, env_overrides: Overrides = None, secret_overrides: Overrides = None
) -> Task:
    """The one task of a file, with local paths resolved; a pipeline of several is an error."""
    text = _read(path)
    return resolve_paths(task_of_text(text, str(path), env_overrides, secret_overrides))


def load_dag_file(
    path: str | Path, *, env_overrides: Overrides = None, secret_overrides: Overrides = None
) -> Dag:
    """A file as a pipeline: a single-task file is a pipeline of one."""
    dag = dag_of_text(_read(path), str(path), env_overrides, secret_overrides)
    return msgspec.structs.replace(dag, tasks=[resolve_paths(t) for t in dag.tasks])


def task_of_text(
    text: str, source: str, env_overrides: Overrides = None, secret_overrides: Overrides = None
) -> Task:
    """The one task of a file's text, its local paths as written (the daemon reads a client's
    file so: the client resolves them against its own directory)."""
    parsed = from_yaml(text, source, env_overrides=env_overrides, secret_overrides=secret_overrides)
    if isinstance(parsed, Dag):
        if len(parsed.tasks) != 1:
            raise pipeline_error(source, parsed)
        parsed = parsed.tasks[0]
    return parsed


def dag_of_text(
    text: str, source: str, env_overrides: Overrides = None, secret_overrides: Overrides = None
) -> Dag:
    """A file's text as a pipeline (a single task is a pipeline of one), local paths as written."""
    parsed = from_yaml(text, source, env_overrides=env_overrides, secret_overrides=secret_overrides)
    return Dag(tasks=[parsed]) if isinstance(parsed, Task) else parsed


# -- local paths and late substitution -------------------------------------------------------


def resubstitute(task: Task, values: Mapping[str, str]) -> Task:
    """Substitute variables set after parsing (`--env` for a null env) into the same sections,
    re-resolving any local path that changed."""
    raw = msgspec.to_builtins(task)
    fresh = subst.substitute_sections(raw, values)
    if fresh is raw:
        return task
    updated = validated(msgspec.convert(fresh, Task))
    changed_paths = updated.workdir != task.workdir or updated.file_mounts != task.file_mounts
    return resolve_paths(updated) if changed_paths else updated
