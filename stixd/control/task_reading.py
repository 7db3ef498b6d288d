"""`ReadTask`: the daemon reads the task a local `stixctl` command line gives.

The client sends the file's bytes (read where the user typed its path), the `--env`/`--secret`
values its shell resolved, and the resource flags as typed; this reads and checks them with the
very functions a client-side load uses (`stixproto.task`), so every refusal is the same
sentence with the same exit code. The task's local paths stay as written: the client resolves
them against its own directory, as it always did. The work is YAML parsing and checking, so it
runs in a worker thread, off the event loop every actor shares.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import msgspec

from stixproto import messages as m
from stixproto import task as t
from stixproto.errors import InvalidRequest
from stixproto.task.files import text_of
from stixproto.task.load import dag_of_text, task_of_text

Emit = Callable[[Any], Awaitable[None]]


async def read_task(req: m.ReadTask, emit: Emit) -> m.TaskRead:
    return m.TaskRead(dag=await anyio.to_thread.run_sync(read, req))


def read(req: m.ReadTask) -> t.Dag:
    """The tasks of `req` in the order a client-side load makes its checks: the file (or the
    command) with envs and secrets, then the resource flags, then the name."""
    envs, secrets = req.envs or None, req.secrets or None
    if req.file is not None:
        text = text_of(req.data, req.file)
        if req.pipeline:
            dag = dag_of_text(text, req.file, envs, secrets)
        else:
            dag = t.Dag(tasks=[task_of_text(text, req.file, envs, secrets)])
    else:
        task = t.task_from_command(req.command) if req.command is not None else t.Task()
        if envs:
            task = t.apply_env_overrides(task, envs)
        if secrets:
            task = t.apply_secret_overrides(task, secrets)
        dag = t.Dag(tasks=[task])
    overrides = _overrides(req.resources)

    def adjust(task: t.Task) -> t.Task:
        if overrides is not None:
            task = t.apply_overrides(task, overrides)
        if req.name:
            task = msgspec.structs.replace(task, name=req.name)
        return task

    return msgspec.structs.replace(dag, tasks=[adjust(x) for x in dag.tasks])


def _overrides(flags: m.ResourceFlags | None) -> t.ResourceOverrides | None:
    """The flags as `stixctl` turned them into overrides when it read tasks itself."""
    if flags is None:
        return None
    given: dict[str, Any] = {
        f: getattr(flags, f) for f in flags.__struct_fields__ if getattr(flags, f) is not None
    }
    if not given:
        return None
    if "num_nodes" in given:
        given["num_nodes"] = _integer(given["num_nodes"])
    if "ports" in given:
        given["ports"] = [int(p) if p.isascii() and p.isdigit() else p for p in given["ports"]]
    return t.ResourceOverrides(**given)


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise InvalidRequest(f"--num-nodes: expected an integer, got {text[:40]!r}") from None
