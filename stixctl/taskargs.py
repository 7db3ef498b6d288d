"""Task arguments shared by launch, exec and validate: the task file or command, --env,
--env-file, --secret and SkyPilot's resource-override flags; and the `--config` layers that
launch, exec, jobs and the SDK send along."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from stixproto import messages as m
from stixproto.errors import InvalidConfig, InvalidRequest, TaskFieldError
from stixproto.names import ENV_NAME_RULE, is_env_name
from stixproto.task import Dag, Task


def check_env_name(name: str, flag: str) -> None:
    """A name from the command line meets the rule a task file's envs/secrets keys meet, and
    is refused in the same words (`--env: envs.1X: not a valid environment variable name …`)."""
    if not is_env_name(name):
        key = "secrets" if flag == "--secret" else "envs"
        problem = f"not a valid environment variable name ({ENV_NAME_RULE})"
        raise TaskFieldError(f"{key}.{name}", problem, source=flag)


def pairs(items: list[str], flag: str) -> dict[str, str]:
    """`NAME=VALUE` pairs; a bare `NAME` takes its value from this shell, as SkyPilot does."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep and item not in os.environ:
            if flag == "--secret":  # `--secret $TOKEN` would otherwise print the token
                raise InvalidRequest(
                    "--secret: a NAME without =VALUE is not set in this shell (not shown, in "
                    "case it is the secret itself); pass --secret NAME=VALUE"
                )
            raise InvalidRequest(
                f"{flag} {item}: no value given and {item} is not set in this shell"
            )
        check_env_name(name, flag)
        out[name] = value if sep else os.environ[name]
    return out


def env_file_pairs(path: str) -> dict[str, str]:
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise InvalidRequest(f"--env-file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise InvalidRequest(f"--env-file {path}: not UTF-8 text") from None
    out: dict[str, str] = {}
    for line in lines:
        line = line.strip().removeprefix("export ").strip()
        if line and not line.startswith("#") and "=" in line:
            k, _, v = line.partition("=")
            check_env_name(k.strip(), f"--env-file {path}")
            out[k.strip()] = v.strip().strip("'\"")
    return out


def add_task_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--env", action="append", metavar="K[=V]", help="set an env var (repeatable)")
    p.add_argument("--env-file", help="read env vars from a dotenv file")
    p.add_argument("--secret", action="append", metavar="K[=V]", help="set a secret (repeatable)")
    p.add_argument("-n", "--name", help="task name")
    p.add_argument("--workspace", metavar="NAME", help="the workspace to make it in")
    p.add_argument(
        "--workdir", metavar="DIR", help="sync this directory and run there (overrides the file's)"
    )
    r = p.add_argument_group("resource overrides (merged with the file as SkyPilot does)")
    r.add_argument("--gpus", metavar="NAME[:N]", help="accelerators, e.g. A100:8")
    r.add_argument("--cpus", metavar="N[+]")
    r.add_argument("--memory", metavar="GB[+]")
    r.add_argument("--infra", metavar="CLOUD[/REGION[/ZONE]]")
    r.add_argument("--cloud")
    r.add_argument("--region")
    r.add_argument("--zone")
    r.add_argument("--use-spot", dest="use_spot", action="store_true", default=None)
    r.add_argument("--no-use-spot", dest="use_spot", action="store_false")
    r.add_argument("--instance-type", "-t")
    r.add_argument("--num-nodes", type=int)
    r.add_argument("--disk-size", metavar="GB")
    r.add_argument("--disk-tier", choices=["low", "medium", "high", "ultra", "best", "none"])
    r.add_argument("--network-tier", choices=["standard", "best", "none"])
    r.add_argument("--image-id")
    r.add_argument("--ports", action="append", metavar="PORT[-PORT]")


def _resource_flags(args: argparse.Namespace) -> m.ResourceFlags | None:
    """The resource-override flags given, as typed (the daemon applies them)."""
    given = {f: getattr(args, f, None) for f in m.ResourceFlags.__struct_fields__}
    if all(v is None for v in given.values()):
        return None
    if given["num_nodes"] is not None:
        given["num_nodes"] = str(given["num_nodes"])
    return m.ResourceFlags(**given)


def check_first(request: m.Request) -> None:
    """Refuse a request's own arguments (a name, a number out of range) with the words the
    wire check gives, before the daemon is asked to read its task (`load`): they were refused
    without a daemon when this process read tasks itself. Its task is left empty here."""
    from stixproto.edge import request_body

    request_body(request, tasks_checked=True)


def is_task_file(entrypoint: list[str]) -> bool:
    first = entrypoint[0] if entrypoint else ""
    return len(entrypoint) == 1 and (first.endswith((".yaml", ".yml")) or os.path.isfile(first))


def load(
    home: Path,
    entrypoint: list[str],
    args: argparse.Namespace,
    *,
    pipeline: bool = False,
    allow_empty: bool = False,
) -> Any:
    """The task (or, with `pipeline`, the Dag) the command line describes, overrides applied.
    With `allow_empty`, no file and no command is a task of resource flags alone (SkyPilot's
    `sky launch -c dev --gpus A100`: a cluster with nothing to run).

    The daemon reads and checks it (`ReadTask`), with the functions and words a load here
    would use, so this process imports neither YAML nor the task rules; what belongs to this
    shell is done here: the file's bytes, `--env`/`--secret` values, and the local paths (and
    `--workdir`) resolved against this directory. A request that sends the result passes
    ``tasks_checked=True`` to `stixctl.client.call`."""
    from stixctl.client import call
    from stixproto.task.files import read_bytes

    if not entrypoint and not allow_empty:
        raise InvalidRequest("give a task YAML file or a shell command to run")
    envs = env_file_pairs(args.env_file) if getattr(args, "env_file", None) else {}
    envs.update(pairs(args.env or [], "--env"))
    secrets = pairs(getattr(args, "secret", None) or [], "--secret")
    flags, name = _resource_flags(args), getattr(args, "name", None) or None
    command = " ".join(entrypoint) if entrypoint else None
    if is_task_file(entrypoint):
        source: dict[str, Any] = {"file": entrypoint[0], "data": read_bytes(entrypoint[0])}
    elif not (envs or secrets or flags):  # nothing to read or check: the daemon's answer
        dag = Dag(tasks=[Task(run=command, name=name)])  # would be this, one round trip later
        return _here_all(dag, getattr(args, "workdir", None), pipeline)
    else:
        source = {"command": command}
    req = m.ReadTask(
        **source, pipeline=pipeline, envs=envs, secrets=secrets, resources=flags, name=name
    )
    reply: m.TaskRead = call(home, req)
    return _here_all(reply.dag, getattr(args, "workdir", None), pipeline)


def _here_all(dag: Dag, workdir: str | None, pipeline: bool) -> Any:
    import msgspec

    tasks = [_here(task, workdir) for task in dag.tasks]
    return msgspec.structs.replace(dag, tasks=tasks) if pipeline else tasks[0]


def _here(task: Any, workdir: str | None) -> Any:
    """The task's local paths made absolute against this shell's directory, and `--workdir`
    DIR in place of its workdir (a git one too), as SkyPilot takes it; a DIR that is not a
    directory here is refused now."""
    import msgspec

    from stixproto.task.local_paths import resolve_paths

    if workdir is None:
        return resolve_paths(task)
    if not workdir.strip():
        raise InvalidRequest("--workdir: expected a directory, got an empty string")
    path = os.path.abspath(os.path.expanduser(workdir))
    if not os.path.isdir(path):
        raise InvalidRequest(f"--workdir {workdir}: not a directory on this machine")
    return resolve_paths(msgspec.structs.replace(task, workdir=path))


def config_layers(extra: list[str], workspace: str | None = None) -> list[m.ConfigLayer]:
    """Project `.stix.yaml` and `--config` files, parsed here and validated by the daemon;
    `--workspace` last, over them."""
    layers: list[m.ConfigLayer] = []
    if workspace is not None:
        chosen = m.ConfigLayer(source="--workspace", values={"active_workspace": workspace})
        return [*config_layers(extra), chosen]
    paths = [Path(".stix.yaml")] if Path(".stix.yaml").exists() else []
    for item in extra:
        path = Path(item)
        if not path.exists():
            raise InvalidConfig(
                f"{item}: config file given with --config does not exist; check the path"
            )
        paths.append(path)
    if not paths:
        return layers
    from stixproto import user_yaml  # only with a config file to read: it is 14 KB to compile

    for path in paths:
        try:
            values = user_yaml.load(user_yaml.read_file(path)) or {}
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or "not UTF-8 text"
            raise InvalidConfig(f"{path}: cannot read the config file: {reason}") from None
        except user_yaml.YamlError as exc:
            problem = f"invalid YAML{exc.where}: {exc.problem}" if exc.syntax else str(exc)
            raise InvalidConfig(f"{path}: {problem}") from None
        if not isinstance(values, dict):
            raise InvalidConfig(f"{path}: a config file must be a mapping")
        layers.append(m.ConfigLayer(source=str(path), values=values))
    return layers
