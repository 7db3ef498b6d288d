"""`stixctl storage ls [-v] [--json]` and `stixctl storage delete NAMES|GLOBS|-a [-y]`: the
buckets tasks mount. `ls` looks at each bucket in its store (one deleted elsewhere shows
MISSING), in SkyPilot's columns (stix's own with `-v`); `delete` asks first (naming every
storage, as `sky storage delete` does, and then deleting just those), deletes the buckets stix
created and forgets the storages (one that stix did not create is forgotten, its bucket left as
is, by name or with `-a`); a name that fails is said and the others still go.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from stixctl.output import on_event, print_json
from stixproto import messages as m
from stixproto.errors import InvalidRequest


def add_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("action", choices=["ls", "delete"])
    s.add_argument("storages", nargs="*", metavar="NAME", help="a name or a glob ('imagenet*')")
    s.add_argument("-a", "--all", action="store_true", help="delete: every storage of yours")
    s.add_argument("-y", "--yes", action="store_true", help="delete: do not ask first")
    s.add_argument(
        "-v", "--verbose", action="store_true", help="ls: every column, commands in full"
    )
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_storage)


def cmd_storage(home: Path, a: argparse.Namespace) -> int:
    if a.action == "ls":
        if a.all or a.yes:
            raise InvalidRequest("storage ls takes no -a or -y (it lists every storage of yours)")
        return cmd_ls(home, a)
    if a.verbose:
        raise InvalidRequest("storage delete takes no -v")
    return cmd_delete(home, a)


def cmd_ls(home: Path, a: argparse.Namespace) -> int:
    from stixctl.client import call

    reply: m.StorageList = call(home, m.StorageLs(names=list(a.storages)), on_event)
    if a.json:
        print_json(reply)
    else:
        print(render(reply.storages, verbose=a.verbose))
    return 0


def cmd_delete(home: Path, a: argparse.Namespace) -> int:
    from stixctl.client import call
    from stixctl.confirm import ask

    if bool(a.storages) == a.all:
        raise InvalidRequest("name the storages to delete, or give -a for all of yours")
    if not a.yes and a.json:
        raise InvalidRequest("delete with --json cannot ask first: add -y")
    req = m.StorageDelete(names=list(a.storages), all=a.all)
    failed: list[str] = []
    if not a.yes:
        listed: m.StorageList = call(
            home, m.StorageLs(names=list(a.storages), missing_ok=True), on_event
        )
        failed = list(listed.failed)
        for why in failed:
            print(f"Failed: {why}", file=sys.stderr)
        if not listed.storages:
            print("No storage to delete.")
            return 1 if failed else 0
        names = [s.name for s in listed.storages]
        kept = [s.name for s in listed.storages if not s.created]
        also = f" (only forgotten, their buckets kept: {', '.join(kept)})" if kept else ""
        ask(f"Deleting {len(names)} storage(s): {', '.join(names)}{also}. Proceed?", False)
        req = m.StorageDelete(names=names)  # just those asked about, none made since
    reply: m.StorageList = call(home, req, on_event)
    if a.json:
        print_json(reply)
        return 1 if reply.failed else 0
    for why in reply.skipped:
        print(f"Skipped: {why}")
    for why in reply.failed:
        print(f"Failed: {why}", file=sys.stderr)
    if reply.deleted:
        print(f"Deleted {len(reply.deleted)} storage(s): {', '.join(reply.deleted)}")
    elif not reply.skipped and not reply.failed:
        print("No storage to delete.")
    return 1 if failed or reply.failed else 0


def status_of(s: m.StorageRecord) -> str:
    return "MISSING" if s.missing and s.status != "DELETING" else s.status


COMMAND_WIDTH = 25
"""SkyPilot's LAST_USE_TRUNC_LENGTH: the COMMAND column is cut there without -v."""


def command_of(s: m.StorageRecord, verbose: bool) -> str:
    """What uses the storage (SkyPilot's COMMAND: its last use), as stix commands."""
    text = "; ".join(f"stixctl launch -c {c}" for c in s.clusters) or "-"
    return text if verbose or len(text) <= COMMAND_WIDTH else text[: COMMAND_WIDTH - 3] + "..."


def render(records: list[m.StorageRecord], verbose: bool = False) -> str:
    """SkyPilot's `storage ls` table (NAME, UPDATED, STORE, COMMAND, STATUS); with ``verbose``
    stix's own columns too (BUCKET, SOURCE, CREATED, MODE, PERSISTENT)."""
    if not records:
        return "No existing storage."
    from stixctl.render import ago, table

    now = time.time()
    headers = ["NAME", "UPDATED", "STORE", "COMMAND", "STATUS"]
    rows = [
        [
            s.name,
            ago(s.updated_at or s.created_at, now),
            s.store.upper(),
            command_of(s, verbose),
            status_of(s),
        ]
        for s in records
    ]
    if verbose:
        headers += ["BUCKET", "SOURCE", "CREATED", "MODE", "PERSISTENT"]
        for row, s in zip(rows, records, strict=True):
            row += [
                f"{s.store}://{s.bucket}",
                s.source or "-",
                ago(s.created_at, now),
                s.mode,
                "yes" if s.persistent else "no",
            ]
    lines = [table(headers, rows)]
    if any(s.missing for s in records):
        lines.append(
            "* MISSING: the bucket was deleted outside stix; `stixctl storage delete NAME` "
            "forgets it."
        )
    # a damaged row (mode "?", stixd storage_cmds.damaged): why, and the command removing it
    lines += [f"* {s.name}: {s.last_error}" for s in records if s.mode == "?" and s.last_error]
    return "\n".join(lines)
