"""`stixctl status`: the clusters table, the clusters asked for that do not exist, and
SkyPilot's `--ip`, `--endpoints` and `--endpoint PORT` answers for one cluster."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stixproto import messages as m
from stixproto.errors import ClusterNotFound, ClusterNotUp, InvalidRequest, StixError

MAX_PORT = 65535
STATUS_WHAT = "of your clusters and of managed jobs' clusters"
"""What `status --limit N` cuts, in its note."""
LIVE = ("UP", "AUTOSTOPPING")
"""A cluster whose address can be given: SkyPilot answers only for these."""


def add_args(s: argparse.ArgumentParser) -> None:
    """The flags SkyPilot's `sky status` has for one cluster's address, and how many of the
    clusters managed jobs keep up to list."""
    from stixctl.listing import DEFAULT_LIMIT

    s.add_argument(
        "-l",
        "--limit",
        type=int,
        default=DEFAULT_LIMIT,
        help=f"list the newest N of your clusters and N of managed jobs' (default "
        f"{DEFAULT_LIMIT}; --all: every one)",
    )
    s.add_argument(
        "-u",
        "--all-users",
        action="store_true",
        help="every user's, with a USER column (yours only without it)",
    )
    s.add_argument("--ip", action="store_true", help="print the head node's IP of one cluster")
    s.add_argument(
        "--endpoints", action="store_true", help="print every exposed port of one cluster"
    )
    s.add_argument(
        "--endpoint", type=int, metavar="PORT", help="print the address PORT is reachable on"
    )


def run(home: Path, a: argparse.Namespace, on_event: Callable[[Any], None]) -> int:
    from stixctl import render
    from stixctl.client import call

    asks_address = a.ip or a.endpoints or a.endpoint is not None
    if asks_address:
        _check_address_flags(a)
    limit = None if a.all or a.clusters else a.limit
    req = m.Status(
        clusters=a.clusters,
        refresh=a.refresh,
        all=a.all,
        limit=limit,
        stream=a.json,
        all_users=a.all_users,
    )
    if a.json:
        from stixctl.listing import stream_json

        stream_json(home, req, _chunk, on_event, STATUS_WHAT)
        return 0
    reply = call(home, req, on_event)
    if asks_address:
        print(address(a, reply.clusters))
        return 0
    missing = not_found(a.clusters, reply.clusters)
    if reply.clusters or not missing:
        print(render.clusters(reply.clusters))
    if missing:
        print(missing)
    if reply.hidden and limit is not None:
        from stixctl.listing import hidden_note

        print(hidden_note(reply.hidden, limit, STATUS_WHAT))
    if reply.leaks:
        from stixctl.leaks import status_hint

        print(status_hint(reply.leaks, reply.leaks_scanned_at))
    return 0


def _chunk(event: Any) -> list[m.ClusterRecord] | None:
    return event.clusters if isinstance(event, m.ClusterRows) else None


def not_found(asked: list[str], found: list[m.ClusterRecord]) -> str | None:
    """SkyPilot's line for names that match no cluster (`status` still exits 0, as `sky`)."""
    from stixctl.render import one_line

    have = {c.name for c in found}
    missing = [repr(n) for n in dict.fromkeys(asked) if n not in have]
    if not missing:
        return None
    word = "Clusters" if len(missing) > 1 else "Cluster"
    return one_line(f"{word} {', '.join(missing)} not found.")


def _flag(a: argparse.Namespace) -> tuple[str, str]:
    """The flag asked for and what it shows, in SkyPilot's words."""
    if a.ip:
        return "ip", "IP address"
    if a.endpoint is not None:
        return "endpoint PORT", "endpoint(s)"
    return "endpoints", "endpoint(s)"


def _check_address_flags(a: argparse.Namespace) -> None:
    if a.refresh:
        raise InvalidRequest(
            "--ip or --endpoint(s) with --refresh is not supported; refresh first "
            "(`stixctl status --refresh`), then ask for the IP or endpoint"
        )
    if a.ip and (a.endpoints or a.endpoint is not None):
        raise InvalidRequest("cannot give both --ip and --endpoint(s) at the same time")
    if a.endpoints and a.endpoint is not None:
        raise InvalidRequest("cannot give both --endpoint and --endpoints at the same time")
    if a.endpoint is not None and not 1 <= a.endpoint <= MAX_PORT:
        raise InvalidRequest(f"--endpoint {a.endpoint}: a port is from 1 to {MAX_PORT}")
    if len(a.clusters) != 1:
        flag, what = _flag(a)
        count = f"{len(a.clusters)} clusters" if a.clusters else "No cluster"
        which = "a single" if a.clusters else "an existing"
        raise InvalidRequest(
            f"{count} specified; name {which} cluster to show its {what}: "
            f"`stixctl status --{flag} CLUSTER`"
        )


def address(a: argparse.Namespace, found: list[m.ClusterRecord]) -> str:
    """The head's IP, or where the cluster's ports are reachable, as `sky status` prints them."""
    name = a.clusters[0]
    if not found:
        _, what = _flag(a)
        raise ClusterNotFound(
            f"cluster {name!r} not found; name an existing cluster to show its {what} "
            "(see `stixctl status`)"
        )
    c = found[0]
    if c.status not in LIVE or not c.head_ip:
        raise ClusterNotUp(f"cluster {c.name!r} is not in UP status (it is {c.status})")
    if a.ip:
        return c.head_ip
    if c.ports and c.ports_host is None and c.ports_note:
        raise StixError(c.ports_note)  # reached elsewhere, and not yet (an address pending)
    host = c.ports_host or c.head_ip
    if a.endpoint is not None:
        if a.endpoint not in c.ports and not c.any_port:
            raise StixError(
                f"endpoint {a.endpoint} not found for cluster {c.name!r}; its exposed ports: "
                f"{', '.join(map(str, c.ports)) or 'none'} (resources.ports in the task)"
            )
        return f"{host}:{a.endpoint}"
    if not c.ports:
        raise StixError(
            f"no endpoint found for cluster {c.name!r}: its task exposes no ports (resources.ports)"
        )
    return "\n".join(f"{port}: {host}:{port}" for port in c.ports)
