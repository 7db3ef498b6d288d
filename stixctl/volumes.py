"""`stixctl volumes apply FILE | ls | delete NAMES|-a` (SkyPilot's `sky volumes`): volumes that
outlive clusters, mounted by a task's `volumes:` key; `ls` shows too the ephemeral ones a
launch made for its cluster (a `volumes:` entry with a size), as SkyPilot does."""

from __future__ import annotations

import argparse
from pathlib import Path

from stixctl.output import on_event, print_json
from stixproto import messages as m
from stixproto.errors import InvalidRequest
from stixproto.volumes import VolumeConfig


def read_volume(path: str) -> VolumeConfig:
    """The volume a YAML file describes; one line for a file that is not one."""
    from stixproto import user_yaml, volumes

    try:
        text = user_yaml.read_file(path)
    except OSError as exc:
        raise InvalidRequest(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise InvalidRequest(f"{path}: not a volume YAML file (it is not UTF-8 text)") from None
    try:
        doc = user_yaml.load(text)
    except user_yaml.YamlError as exc:
        raise InvalidRequest(f"{path}: {exc}") from None
    return volumes.from_yaml(doc)


def render(records: list[m.VolumeRecord]) -> str:
    from stixctl.render import ago, table

    users = any(r.user is not None for r in records)
    ephemeral = any(r.is_ephemeral for r in records)  # SkyPilot's IS_EPHEMERAL column
    rows = []
    for r in records:
        row = [
            r.name,
            r.type,
            r.infra,
            f"{r.size_gb}Gi" if r.size_gb is not None else "-",
            r.status,
            ", ".join(r.used_by) or "-",
            ago(r.created_at) if r.created_at else "-",
        ]
        row = [*row, "yes" if r.is_ephemeral else "-"] if ephemeral else row
        rows.append([*row, r.user or "-"] if users else row)
    head = ["NAME", "TYPE", "INFRA", "SIZE", "STATUS", "USED BY", "CREATED"]
    head = [*head, "EPHEMERAL"] if ephemeral else head
    text = table([*head, "USER"] if users else head, rows)
    errors = [f"{r.name}: {r.error}" for r in records if r.error]
    return "\n".join([text, *errors])


def _apply(home: Path, a: argparse.Namespace) -> int:
    from stixctl import confirm, taskargs
    from stixctl.client import call

    if a.volume is None:
        raise InvalidRequest("volumes apply needs the volume's YAML file")
    volume = read_volume(a.volume)
    where = volume.infra or volume.cloud
    confirm.ask(f"Creating volume {volume.name} ({volume.type}) on {where}. Proceed?", a.yes)
    req = m.VolumesApply(volume=volume, config=taskargs.config_layers(a.config or []))
    reply: m.OkReply = call(home, req, on_event)
    print(reply.message)
    return 0


def _ls(home: Path, a: argparse.Namespace) -> int:
    from stixctl.client import call

    reply: m.VolumeList = call(home, m.VolumesList(all_users=a.all_users))
    if a.json:
        print_json(reply.volumes)
    elif reply.volumes:
        print(render(reply.volumes))
    else:
        print("No existing volumes.")
    return 0


def _delete(home: Path, a: argparse.Namespace) -> int:
    from stixctl import confirm
    from stixctl.client import call

    names = [a.volume, *a.volumes] if a.volume else a.volumes
    if a.all == bool(names):
        raise InvalidRequest("name the volumes to delete, or -a for all of yours (not both)")
    what = "every volume of yours" if a.all else f"volume(s) {', '.join(names)}"
    confirm.ask(f"Deleting {what}. Proceed?", a.yes)
    reply: m.OkReply = call(home, m.VolumesDelete(names=names, all=a.all), on_event)
    print(reply.message)
    return 0


def _run(home: Path, a: argparse.Namespace) -> int:
    return {"apply": _apply, "ls": _ls, "delete": _delete}[a.action](home, a)


def add_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("action", choices=["apply", "ls", "delete"])
    s.add_argument("volume", nargs="?", help="apply: the volume's YAML file; delete: a name")
    s.add_argument("volumes", nargs="*", help="delete: more volume names")
    s.add_argument("-a", "--all", action="store_true", help="delete: all of yours")
    s.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    s.add_argument("-u", "--all-users", action="store_true", help="ls: every user's")
    s.add_argument("--json", action="store_true", help="ls: as JSON")
    s.add_argument("--config", action="append", help="apply: a config file (workspace)")
    s.set_defaults(fn=_run)
