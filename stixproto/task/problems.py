"""What is wrong with a valid task on *this* machine, and what is merely unusual in it.

`launch_problems` lists what launch refuses (a local path that is not here, an env or secret
left null); `stixctl validate` prints the same sentences as warnings, and the daemon raises the
first one, so the user reads the same words in both places. `task_notes` lists keys of open
maps that stix does not know (kept as written).
"""

from __future__ import annotations

import os

from stixproto.task import service as svc
from stixproto.task import storage
from stixproto.task._fields import join, unknown_keys
from stixproto.task.envs import missing_envs, missing_secrets
from stixproto.task.model import Task

RECOVERY_KEYS = ("strategy", "max_restarts_on_errors", "recover_on_exit_codes", "min_nodes")


def env_problem(name: str) -> str:
    return f"envs.{name}: required but not set; pass it with --env {name}=VALUE"


def secret_problem(name: str) -> str:
    return f"secrets.{name}: required but not set; pass it with --secret {name}=VALUE"


def _here(path: str) -> bool:
    return os.path.exists(os.path.expanduser(path))


def launch_problems(task: Task) -> list[str]:
    """Sentences for what stops this task launching from here (empty when nothing does)."""
    problems = [env_problem(n) for n in missing_envs(task)]
    problems += [secret_problem(n) for n in missing_secrets(task)]
    if isinstance(task.workdir, str) and not os.path.isdir(os.path.expanduser(task.workdir)):
        problems.append(f"workdir: {task.workdir} is not a directory on this machine")
    for dest, src in task.file_mounts.items():
        where = join("file_mounts", dest)
        if isinstance(src, str):
            if not storage.is_bucket_url(src) and not _here(src):
                problems.append(f"{where}: {src} does not exist on this machine")
            continue
        if src.name is not None and not src.name.strip():
            problems.append(f"{where}.name: the bucket name is empty; give the bucket a name")
        for i, path in enumerate(src.sources()):
            if storage.is_bucket_url(path) or _here(path):
                continue
            key = join(where, "source") if isinstance(src.source, str) else f"{where}.source.{i}"
            problems.append(f"{key}: {path} does not exist on this machine")
    return problems


def task_notes(task: Task) -> list[str]:
    """Unknown keys in the maps that stay open (git workdir, job_recovery, pool, tls, …)."""
    notes: list[str] = []
    if isinstance(task.workdir, dict):
        notes += unknown_keys(task.workdir, storage.GIT_WORKDIR_KEYS, "workdir")
    for mount, spec in (task.volumes or {}).items():
        if isinstance(spec, dict):
            notes += unknown_keys(spec, storage.VOLUME_KEYS, join("volumes", mount))
    if task.pool is not None:
        notes += unknown_keys(task.pool, svc.POOL_KEYS, "pool")
    if task.service is not None:
        if task.service.tls is not None:
            notes += unknown_keys(task.service.tls, svc.TLS_KEYS, "service.tls")
        if task.service.load_balancer is not None:
            notes += unknown_keys(
                task.service.load_balancer, svc.LOAD_BALANCER_KEYS, "service.load_balancer"
            )
    res = task.resources
    candidates = [("resources", res)] if res is not None else []
    for key in ("any_of", "ordered"):
        for i, entry in enumerate(getattr(res, key) or [] if res is not None else []):
            candidates.append((f"resources.{key}.{i}", entry))
    for path, r in candidates:
        for key in ("job_recovery", "spot_recovery"):
            value = getattr(r, key)
            if isinstance(value, dict):
                notes += unknown_keys(value, RECOVERY_KEYS, join(path, key))
    return notes
