"""`stixctl storage ls [--json]` and `stixctl storage delete NAMES|-a [-y]`: the buckets tasks
mount. `ls` looks at each bucket in its store (one deleted elsewhere shows MISSING); `delete`
asks first (naming every storage, as `sky storage delete` does), then deletes the buckets stix
created and forgets the storages (one that stix did not create is forgotten, its bucket left as
is, by name or with `-a`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from stixctl.output import on_event, print_json
from stixproto import messages as m
from stixproto.errors import InvalidRequest


def add_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("action", choices=["ls", "delete"])
    s.add_argument("storages", nargs="*", metavar="NAME")
    s.add_argument("-a", "--all", action="store_true", help="delete: every storage of yours")
    s.add_argument("-y", "--yes", action="store_true", help="delete: do not ask first")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_storage)


def cmd_storage(home: Path, a: argparse.Namespace) -> int:
    if a.action == "ls":
        if a.all or a.yes:
            raise InvalidRequest("storage ls takes no -a or -y (it lists every storage of yours)")
        return cmd_ls(home, a)
    return cmd_delete(home, a)


def cmd_ls(home: Path, a: argparse.Namespace) -> int:
    from stixctl.client import call

    reply: m.StorageList = call(home, m.StorageLs(names=list(a.storages)), on_event)
    if a.json:
        print_json(reply)
    else:
        print(render(reply.storages))
    return 0


def cmd_delete(home: Path, a: argparse.Namespace) -> int:
    from stixctl.client import call
    from stixctl.confirm import ask

    if bool(a.storages) == a.all:
        raise InvalidRequest("name the storages to delete, or give -a for all of yours")
    if not a.yes and a.json:
        raise InvalidRequest("delete with --json cannot ask first: add -y")
    req = m.StorageDelete(names=list(a.storages), all=a.all)
    if not a.yes:
        listed: m.StorageList = call(home, m.StorageLs(names=list(a.storages)), on_event)
        if not listed.storages:
            print("No storage to delete.")
            return 0
        names = ", ".join(s.name for s in listed.storages)
        kept = [s.name for s in listed.storages if not s.created]
        also = f" (only forgotten, their buckets kept: {', '.join(kept)})" if kept else ""
        ask(f"Deleting {len(listed.storages)} storage(s): {names}{also}. Proceed?", False)
    reply: m.StorageList = call(home, req, on_event)
    if a.json:
        print_json(reply)
        return 0
    for why in reply.skipped:
        print(f"Skipped: {why}")
    if reply.deleted:
        print(f"Deleted {len(reply.deleted)} storage(s): {', '.join(reply.deleted)}")
    elif not reply.skipped:
        print("No storage to delete.")
    return 0


def status_of(s: m.StorageRecord) -> str:
    return "MISSING" if s.missing and s.status != "DELETING" else s.status


def render(records: list[m.StorageRecord]) -> str:
    if not records:
        return "No existing storage."
    from stixctl.render import ago, table

    now = time.time()
    rows = [
        [
            s.name,
            f"{s.store}://{s.bucket}",
            s.source or "-",
            ago(s.created_at, now),
            s.mode,
            "yes" if s.persistent else "no",
            status_of(s),
        ]
        for s in records
    ]
    lines = [table(["NAME", "BUCKET", "SOURCE", "CREATED", "MODE", "PERSISTENT", "STATUS"], rows)]
    if any(s.missing for s in records):
        lines.append(
            "* MISSING: the bucket was deleted outside stix; `stixctl storage delete NAME` "
            "forgets it."
        )
    return "\n".join(lines)
