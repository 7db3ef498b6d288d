"""`stixctl serve up|update|status|logs|down`: services, with SkyServe's names and flags."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from stixctl.argparser import add_actions, parse_actions
from stixctl.output import err, on_event, print_json
from stixproto import messages as m
from stixproto import names
from stixproto.errors import InvalidRequest
from stixproto.task import Task

Fn = Callable[[Path, argparse.Namespace], int]


def _task(home: Path, a: argparse.Namespace) -> Task:
    from stixctl import taskargs

    if not a.entrypoint:
        raise InvalidRequest("give the service's YAML file")
    from stixctl.sdk_ops import with_local_tls

    task: Task = taskargs.load(home, a.entrypoint, a)
    return with_local_tls(task)


def _up(home: Path, a: argparse.Namespace) -> int:
    from stixctl import confirm, taskargs
    from stixctl.client import call

    name = a.name  # `-n ''` is a name, refused as one, as SkyServe's `serve up` does
    taskargs.check_first(m.ServeUp(task=Task(), name=name))
    task = _task(home, a)
    req = m.ServeUp(
        task=task,
        name=name,
        config=taskargs.config_layers(a.config or [], a.workspace),
    )
    what = req.name or "a new service"
    confirm.ask(f"Launching {what} (its replicas are clusters). Proceed?", a.yes)
    reply: m.ServiceUp = call(home, req, on_event, tasks_checked=True)
    if a.json:
        print_json(reply)
        return 0
    print(f"Service {reply.name} is {reply.status}; endpoint: {reply.endpoint or '-'}")
    err(f"⚙ Follow it with `{names.command('serve', 'status', reply.name)}`")
    return 0


def _update(home: Path, a: argparse.Namespace) -> int:
    from stixctl import confirm, taskargs
    from stixctl.client import call

    taskargs.check_first(m.ServeUpdate(name=a.service, task=Task(), mode=a.mode))
    task = _task(home, a)
    req = m.ServeUpdate(
        name=a.service,
        task=task,
        mode=a.mode,
        config=taskargs.config_layers(a.config or []),
    )
    confirm.ask(f"Updating service {a.service} ({a.mode}). Proceed?", a.yes)
    reply: m.ServiceUp = call(home, req, on_event, tasks_checked=True)
    if a.json:
        print_json(reply)
        return 0
    print(f"Service {reply.name} rolls to version {reply.version} ({a.mode}).")
    return 0


def _status(home: Path, a: argparse.Namespace) -> int:
    from stixctl.client import call

    req = m.ServeStatus(names=a.services, all_users=a.all_users)
    reply: m.ServiceList = call(home, req)
    if a.json:
        print_json(reply.services)
    elif a.endpoint:
        for s in reply.services:
            print(s.endpoint or "-")
    else:
        print(render(reply.services, verbose=a.verbose))
    return 0


def _logs(home: Path, a: argparse.Namespace) -> int:
    from stixctl import sdk_ops
    from stixctl.client import call

    req = sdk_ops.serve_logs(
        a.service, a.replica_id, a.controller, a.load_balancer, a.follow, a.tail
    )
    call(home, req, on_event)
    return 0


def _down(home: Path, a: argparse.Namespace) -> int:
    from stixctl import confirm
    from stixctl.client import call

    if not (a.services or a.all):
        raise InvalidRequest("name the services to take down, or pass --all")
    req = m.ServeDown(names=a.services, all=a.all, purge=a.purge, replica_id=a.replica_id)
    if a.replica_id is not None:
        what = f"replica {a.replica_id} of service {', '.join(a.services)}"
    else:
        what = "every service" if a.all else f"service(s) {', '.join(a.services)}"
    confirm.ask(f"Terminating {what}. Proceed?", a.yes)
    reply: m.Table = call(home, req, on_event)
    if a.json:
        print_json(reply.rows)
    else:
        print(reply.text)
    return 0 if reply.ok else 1


# -- rendering ---------------------------------------------------------------------------------


def render(services: Sequence[m.ServiceRecord], *, verbose: bool = False) -> str:
    from stixctl.render import ago, duration, table, with_users

    if not services:
        return "No existing services."
    now = time.time()
    rows = []
    for s in services:
        ready = sum(r.status == "READY" for r in s.replicas)
        live = [r for r in s.replicas if r.status not in _ENDED]
        uptime = duration(now - s.uptime_since) if s.uptime_since else "-"
        row = [s.name, _versions(s), uptime, s.status, f"{ready}/{len(live)}", s.endpoint or "-"]
        if verbose:
            row += [s.policy, s.load_balancing_policy, s.failure_reason or "-"]
        rows.append(row)
    headers = ["NAME", "VERSION", "UPTIME", "STATUS", "REPLICAS", "ENDPOINT"]
    if verbose:
        headers += ["POLICY", "LOAD_BALANCING_POLICY", "FAILURE"]
    out = "Services\n" + table(*with_users(headers, rows, [s.user for s in services]))
    replicas = [r for s in services for r in s.replicas]
    if replicas:
        rrows = []
        for r in replicas:
            spot = "[Spot] " if r.spot else ""
            rrow = [
                r.service,
                str(r.replica_id),
                str(r.version),
                r.endpoint or "-",
                ago(r.launched_at, now) if r.launched_at else "-",
                r.infra or "-",
                (spot + r.resources) or "-",
                r.status,
            ]
            if verbose:
                rrow.append(r.failure_reason or "-")
            rrows.append(rrow)
        rheaders = ["SERVICE_NAME", "ID", "VERSION", "ENDPOINT", "LAUNCHED", "INFRA"]
        rheaders += ["RESOURCES", "STATUS"] + (["FAILURE"] if verbose else [])
        out += "\n\nService Replicas\n" + table(rheaders, rrows)
    return out


_ENDED = frozenset(
    {
        "FAILED",
        "FAILED_INITIAL_DELAY",
        "FAILED_PROBING",
        "FAILED_PROVISION",
        "FAILED_CLEANUP",
        "PREEMPTED",
    }
)


def _versions(s: m.ServiceRecord) -> str:
    shown = s.active_versions or [s.version]
    return ",".join(str(v) for v in shown)


# -- arguments ---------------------------------------------------------------------------------


def _up_args(s: argparse.ArgumentParser) -> None:
    from stixctl import taskargs

    s.add_argument("entrypoint", nargs="*", help="the service's task YAML file")
    s.add_argument("--config", action="append", metavar="FILE", help="extra config file")
    s.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    s.add_argument("--json", action="store_true")
    taskargs.add_task_flags(s)  # its `-n NAME` names the service (and its task), as SkyServe's


def _update_args(s: argparse.ArgumentParser) -> None:
    from stixctl import taskargs

    s.add_argument("service", help="the service to update")
    s.add_argument("entrypoint", nargs="*", help="the new version's task YAML file")
    s.add_argument("--mode", choices=["rolling", "blue_green"], default="rolling")
    s.add_argument("--config", action="append", metavar="FILE", help="extra config file")
    s.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    s.add_argument("--json", action="store_true")
    taskargs.add_task_flags(s)


def _status_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("services", nargs="*", help="default: every service")
    s.add_argument("-v", "--verbose", action="store_true", help="policies and failures too")
    s.add_argument("--endpoint", action="store_true", help="print only the endpoint(s)")
    s.add_argument(
        "-u",
        "--all-users",
        action="store_true",
        help="every user's, with a USER column (yours only without it)",
    )
    s.add_argument("--json", action="store_true")


def _logs_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("service")
    s.add_argument("replica_id", nargs="?", type=int, help="the replica whose command's log")
    which = s.add_mutually_exclusive_group()
    which.add_argument("--controller", action="store_true", help="the service's decisions")
    which.add_argument("--load-balancer", action="store_true", help="the balancer's log")
    s.add_argument("--follow", dest="follow", action="store_true", default=True)
    s.add_argument("--no-follow", dest="follow", action="store_false")
    s.add_argument("--tail", type=int, metavar="N", help="only the last N lines")


def _down_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("services", nargs="*")
    s.add_argument("-a", "--all", action="store_true", help="every service")
    s.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    s.add_argument("-p", "--purge", action="store_true", help="forget what cannot be torn down")
    s.add_argument("--replica-id", type=int, metavar="N", help="only this replica")
    s.add_argument("--json", action="store_true")


ACTIONS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Fn]] = {
    "up": ("launch a service: replicas behind one endpoint", _up_args, _up),
    "update": ("roll a service to a new version (rolling, blue_green)", _update_args, _update),
    "status": ("services and their replicas", _status_args, _status),
    "logs": ("a replica's log, or --controller / --load-balancer", _logs_args, _logs),
    "down": ("take services (or one --replica-id) down", _down_args, _down),
}  # fmt: skip


def add_args(s: argparse.ArgumentParser) -> None:
    """For `stixctl --help` and `stixctl serve --help`: every action with its flags."""
    add_actions(s, ACTIONS)


def parse(argv: list[str]) -> argparse.Namespace:
    """`serve ACTION …` with options before or after the positionals."""
    return parse_actions("serve", "services", ACTIONS, argv)
