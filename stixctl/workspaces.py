"""`stixctl workspaces ls`: the server's workspaces the caller may see (SkyPilot's
`sky workspaces`); admins define them in the server's config (`workspaces:`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from stixctl.output import print_json
from stixproto import messages as m


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


def _ls(home: Path, a: argparse.Namespace) -> int:
    from stixctl.client import call

    reply: m.WorkspaceList = call(home, m.WorkspacesList())
    if a.json:
        print_json(reply.workspaces)
    else:
        print(render(reply.workspaces))
    return 0


def add_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("action", choices=["ls"])
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=_ls)
