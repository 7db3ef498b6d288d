"""`Proceed? [Y/n]` before spending or destroying, in SkyPilot's words and with its rules.

`launch` and `jobs launch` show the optimizer's plan first, and `launch` asks only when it
will provision (a new, INIT or STOPPED cluster; not one that is UP); `start` asks about the
clusters it restarts, and `down`, `stop`, `autostop`, `cancel --all`, `jobs cancel --all`
name what they act on. `-y` skips every question.

On a terminal the question waits for the user. Without one the answer is read from stdin as
SkyPilot's `click.confirm` reads it (`yes | stixctl down -a` works, an empty line takes the
default), and end of input aborts; so that nothing waits forever, a pipe that stays silent
for `NO_TERMINAL_WAIT` seconds aborts too. An abort changes nothing and exits 1, as `sky`
exits on "Aborted!".
"""

from __future__ import annotations

import argparse
import os
import select
import sys
import time
from pathlib import Path

import msgspec

from stixctl.output import on_event
from stixproto import messages as m
from stixproto.errors import ProvisionError, StixError

NO_TERMINAL_WAIT = 10.0
"""Seconds a question waits for a line on a stdin that is not a terminal."""
LONGEST_ANSWER = 64
"""Bytes of a piped line read as an answer; a longer line is no answer."""
PROVISIONS = (None, "INIT", "STOPPED")
"""Cluster states a launch provisions from (None: no such cluster): only those ask."""


class Aborted(StixError):
    """The user said no (or gave no answer): nothing was sent."""

    code = "aborted"
    exit_code = 1  # `sky` exits 1 on "Aborted!"


def _say(text: str) -> None:
    sys.stderr.write(text)
    sys.stderr.flush()


def _line_from_pipe(fd: int, deadline: float) -> str | None:
    """One line from a stdin that is not a terminal; None at its end. `Aborted` when no line
    comes by the deadline."""
    data = b""
    while not data.endswith(b"\n") and len(data) <= LONGEST_ANSWER:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise Aborted(
                f"aborted: no answer on stdin (not a terminal) within {NO_TERMINAL_WAIT:g}s; "
                "pass -y to proceed without asking"
            )
        byte = os.read(fd, 1)  # one byte at a time: what follows the answer stays unread
        if not byte:
            return data.decode(errors="replace") if data else None
        data += byte
    return data.decode(errors="replace")


def _answer(terminal: bool) -> str | None:
    if terminal:
        line = sys.stdin.readline()
        return line or None
    return _line_from_pipe(sys.stdin.fileno(), time.monotonic() + NO_TERMINAL_WAIT)


def ask(question: str, yes: bool) -> None:
    """Return once the user agreed (at once with `yes`); raise `Aborted` otherwise."""
    if yes:
        return
    try:
        terminal = sys.stdin.isatty()
    except ValueError:  # stdin closed
        terminal = False
    while True:
        _say(f"{question} [Y/n]: ")
        try:
            line = _answer(terminal)
        except KeyboardInterrupt:
            _say("\n")
            raise Aborted("aborted; nothing was changed") from None
        except (OSError, ValueError):  # no stdin to read (closed, or not a file)
            line = None
        if line is None:
            _say("\n")
            how = "" if terminal else " (stdin is not a terminal)"
            raise Aborted(f"aborted: no answer{how}; pass -y to proceed without asking")
        value = line.strip().lower()
        if not terminal:  # a terminal echoed the answer; a piped one is shown here
            _say(f"{value[:LONGEST_ANSWER]}\n")
        if value in ("", "y", "yes"):
            return
        if value in ("n", "no"):
            raise Aborted("aborted; nothing was changed")
        if not terminal:
            raise Aborted("aborted: stdin gave no y or n; pass -y to proceed without asking")
        _say("Error: invalid input\n")


def _check(req: m.Request) -> None:
    """Refuse a bad value before the question, as the request would be refused after it. A
    task in it was read and checked by the daemon (`stixctl.taskargs.load`)."""
    from stixproto.edge import request_body

    request_body(req, tasks_checked=True)


def _clusters(n: int) -> str:
    return f"{n} cluster{'s' if n != 1 else ''}"


# -- launch ----------------------------------------------------------------------------------


def launch(home: Path, a: argparse.Namespace, req: m.Launch) -> m.Launch:
    """Show what `req` would provision and ask; the request to send, with its cluster named
    (here when none was given, so the question can name it) and the choice the user
    confirmed, which the daemon checks against its own plan at launch."""
    if a.yes:
        return req
    import secrets

    from stixctl.client import call

    _check(req)
    name = req.cluster or f"stix-{secrets.token_hex(2)}"
    plan = m.PlanRequest(tasks=[req.task], minimize=a.minimize, launch=True, cluster=name)
    reply: m.PlanReply = call(home, plan, on_event, tasks_checked=True)
    if reply.cluster_status not in PROVISIONS:
        return req  # UP: nothing is provisioned; the launch runs the task there
    _say(reply.text + "\n")
    if reply.no_fit_reason:
        raise ProvisionError(f"nothing fits: {reply.no_fit_reason}")
    if reply.cluster_status is None:
        question = f"Launching a new cluster {name!r}. Proceed?"
    elif reply.cluster_status == "STOPPED":
        question = f"Restarting the stopped cluster {name!r}. Proceed?"
    else:
        question = f"Launching the cluster {name!r} again (it is INIT). Proceed?"
    ask(question, False)
    return msgspec.structs.replace(req, cluster=name, plan_choice=reply.choice)


def jobs_launch(home: Path, a: argparse.Namespace, req: m.JobsLaunch) -> None:
    """The plan of a managed job (its first cluster; the job plans again when each task
    starts and at every recovery, as SkyPilot's controller does), then the question."""
    if a.yes:
        return
    from stixctl.client import call

    _check(req)
    what = "a managed job" if req.num_jobs == 1 else f"{req.num_jobs} managed jobs"
    called = f" {req.name!r}" if req.name else ""
    if req.pool:
        ask(f"Launching {what}{called} on the workers of pool {req.pool!r}. Proceed?", False)
        return
    plan = m.PlanRequest(tasks=req.tasks, launch=len(req.tasks) == 1)
    reply: m.PlanReply = call(home, plan, on_event, tasks_checked=True)
    _say(reply.text + "\n")
    if reply.no_fit_reason:
        raise ProvisionError(f"nothing fits: {reply.no_fit_reason}")
    ask(f"Launching {what}{called}. Proceed?", False)


# -- down, stop, autostop, cancel ------------------------------------------------------------


def clusters(home: Path, a: argparse.Namespace, req: m.Stop | m.Down | m.Autostop, op: str) -> None:
    """`Terminating 1 cluster: c1. Proceed?`, naming what `-a` covers; no question when no
    named cluster exists (the daemon then says so) or `-a` finds nothing to act on."""
    if a.yes:
        return
    from stixctl.client import call

    _check(req)
    listed: m.ClusterList = call(home, m.Status(clusters=[] if req.all else list(req.clusters)))
    if req.all:
        skip_stopped = op == "Stopping"  # as `sky stop -a`: stopped ones stay out
        names = [  # `-a` leaves managed jobs' and pools' clusters to `stixctl jobs`
            c.name
            for c in listed.clusters
            if not c.owner and not (skip_stopped and c.status == "STOPPED")
        ]
    else:
        names = list(dict.fromkeys(req.clusters)) if listed.clusters else []
    if names:
        ask(f"{op} {_clusters(len(names))}: {', '.join(names)}. Proceed?", False)


def start(home: Path, a: argparse.Namespace, req: m.Start) -> None:
    """`Restarting 1 cluster: c1. Proceed?`: the named clusters that are not UP (starting
    one that is UP does nothing, so it is not asked about)."""
    if a.yes:
        return
    from stixctl.client import call

    _check(req)
    listed: m.ClusterList = call(home, m.Status(clusters=list(req.clusters)))
    names = [c.name for c in listed.clusters if c.status != "UP"]
    if names:
        ask(f"Restarting {_clusters(len(names))}: {', '.join(names)}. Proceed?", False)


def autostop_operation(a: argparse.Namespace) -> str:
    if a.cancel:
        return "Cancelling auto{stop,down} on"
    return f"Scheduling auto{'down' if a.down else 'stop'} on"


def cancel_all(a: argparse.Namespace, req: m.Cancel | m.JobsCancel, what: str) -> None:
    if req.all and not a.yes:
        _check(req)
        ask(f"Cancelling {what}. Proceed?", False)
