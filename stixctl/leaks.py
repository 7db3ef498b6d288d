"""`stixctl leaks [--json] [--terminate] [-y]`: stix's cloud instances that no cluster owns.

Exits 0 whether or not leaks exist. ``--terminate`` shows what was found and asks before it
terminates exactly those (``-y``: no question, everything found is terminated).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from stixctl.output import err, on_event, print_json
from stixproto import messages as m
from stixproto.errors import InvalidRequest


def add_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("--terminate", action="store_true", help="terminate the leaks found")
    s.add_argument("-y", "--yes", action="store_true", help="--terminate without asking")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_leaks)


def cmd_leaks(home: Path, a: argparse.Namespace) -> int:
    from stixctl.client import call

    if a.terminate and not a.yes and a.json:
        raise InvalidRequest("--terminate with --json cannot ask first: add -y")
    if a.terminate and not a.yes:
        found: m.LeakList = call(home, m.Leaks(), on_event)
        print(render(found))
        if not found.leaks:
            return 0
        if not _confirm(f"Terminate these {len(found.leaks)} leaked resource(s)?"):
            err("Nothing terminated.")
            return 0
        ids = [leak.id for leak in found.leaks]
        reply: m.LeakList = call(home, m.Leaks(terminate=True, ids=ids), on_event)
    else:
        reply = call(home, m.Leaks(terminate=a.terminate), on_event)
    if a.json:
        print_json(reply)
        return 0
    if not (a.terminate and not a.yes):
        print(render(reply))
    if reply.terminated:
        print(f"Terminated {len(reply.terminated)}: {', '.join(reply.terminated)}")
    return 0


def _confirm(question: str) -> bool:
    sys.stdout.write(f"{question} [y/N] ")
    sys.stdout.flush()
    try:
        answer = sys.stdin.readline()
    except KeyboardInterrupt:
        return False
    return answer.strip().lower() in ("y", "yes")


def _age(seconds: float | None) -> str:
    from stixctl.render import duration

    return duration(seconds) if seconds is not None else "-"


def _price(p: float | None) -> str:
    return f"${p:.3f}" if p is not None else "-"


def render(reply: m.LeakList) -> str:
    lines = [f"{s.split(':')[0]} not checked: {s.split(':', 1)[-1].strip()}" for s in reply.skipped]
    if not reply.leaks:
        return "\n".join([*lines, "No leaked instances."])
    from stixctl.render import table

    rows = [
        [
            leak.id,
            f"{leak.infra}/{leak.region}",
            leak.cluster or "-",
            leak.instance_type or leak.kind,
            leak.state or "-",
            _age(leak.age_seconds),
            _price(leak.hourly_price) + (" (spot)" if leak.spot else ""),
        ]
        for leak in reply.leaks
    ]
    lines.append("Leaked resources (carry stix's tags, no cluster of this daemon owns them)")
    lines.append(table(["ID", "INFRA", "CLUSTER TAG", "TYPE", "STATE", "AGE", "$/HR"], rows))
    hourly = sum(leak.hourly_price or 0.0 for leak in reply.leaks)
    if hourly:
        lines.append(f"Together ${hourly:.3f}/hr. Terminate them: stixctl leaks --terminate")
    else:
        lines.append("Terminate them: stixctl leaks --terminate")
    return "\n".join(lines)


def status_hint(leaks: Sequence[m.LeakRecord], scanned_at: float | None) -> str | None:
    """The line `stixctl status` prints under its table when the last scan found leaks."""
    if not leaks:
        return None
    from stixctl.render import ago

    instances = [x for x in leaks if x.kind == "instance"]
    shown = instances or list(leaks)
    what = f"{len(shown)} leaked {'instance' if instances else 'resource'}(s)"
    ids = ", ".join(x.id for x in shown[:3])
    more = ", ..." if len(shown) > 3 else ""
    when = ago(scanned_at, time.time()) if scanned_at else "earlier"
    return (
        f"* {what} no cluster owns ({ids}{more}), found {when}: "
        "see `stixctl leaks`, terminate with `stixctl leaks --terminate`"
    )
