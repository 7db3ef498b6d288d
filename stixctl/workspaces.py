"""`stixctl workspaces ls | create NAME [--infra I ...] [--private --user U ...] | update NAME
... | delete NAME`: the server's workspaces (SkyPilot's `sky workspaces`). Anyone lists those
they may see; admins create, update (the whole definition, as SkyPilot's does) and delete
them, and the server keeps them where every replica reads them."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from stixctl.output import print_json
from stixproto import messages as m
from stixproto.errors import InvalidRequest

ACTIONS = ("ls", "create", "update", "delete")


def render(records: list[m.WorkspaceRecord]) -> str:
    from stixctl.render import table

    rows = [
        [
            w.name,
            ", ".join(w.allowed_clouds) if w.allowed_clouds else "any",
            ("private: " + (", ".join(w.allowed_users) or "admins")) if w.private else "everyone",
            str(w.clusters),
        ]
        for w in records
    ]
    return table(["NAME", "INFRAS", "WHO", "CLUSTERS"], rows)


def spec_of(infras: list[str] | None, private: bool, users: list[str] | None) -> m.WorkspaceSpec:
    return m.WorkspaceSpec(
        allowed_clouds=infras or None, private=private, allowed_users=users or []
    )


def request(a: argparse.Namespace) -> Any:
    if a.action == "ls":
        if a.name is not None:
            raise InvalidRequest("`stixctl workspaces ls` takes no name")
        return m.WorkspacesList()
    if not a.name:
        raise InvalidRequest(f"name the workspace: `stixctl workspaces {a.action} NAME`")
    if a.action == "delete":
        if a.infras or a.private or a.users:
            raise InvalidRequest(
                "`stixctl workspaces delete NAME` takes no --infra, --private or --user"
            )
        return m.WorkspacesDelete(name=a.name)
    spec = spec_of(a.infras, a.private, a.users)
    kind = m.WorkspacesCreate if a.action == "create" else m.WorkspacesUpdate
    return kind(name=a.name, spec=spec)


def _run(home: Path, a: argparse.Namespace) -> int:
    from stixctl import confirm
    from stixctl.client import call

    req = request(a)
    if isinstance(req, m.WorkspacesDelete):
        confirm.ask(f"Delete workspace {req.name}?", a.yes or a.json)
    reply = call(home, req)
    if a.json:
        print_json(reply.workspaces if isinstance(reply, m.WorkspaceList) else reply)
    elif isinstance(reply, m.OkReply):
        print(reply.message)
    elif isinstance(req, m.WorkspacesList):
        print(render(reply.workspaces))
    else:
        made = "Created" if isinstance(req, m.WorkspacesCreate) else "Updated"
        print(f"{made} workspace {req.name}.")
        print(render(reply.workspaces))
    return 0


def add_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("action", choices=ACTIONS)
    s.add_argument("name", nargs="?", metavar="NAME", help="create, update, delete: the workspace")
    s.add_argument(
        "--infra",
        dest="infras",
        action="append",
        metavar="INFRA",
        help="create, update: an infra its launches may use (repeat; none given: any)",
    )
    s.add_argument(
        "--private", action="store_true", help="create, update: only its --user users see it"
    )
    s.add_argument(
        "--user",
        dest="users",
        action="append",
        metavar="USER",
        help="create, update: a user of a private workspace (repeat; admins always may)",
    )
    s.add_argument("-y", "--yes", action="store_true", help="delete: do not ask first")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=_run)
