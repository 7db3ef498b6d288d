"""`stixctl`: the thin client. Stdlib, msgspec and stixproto only; every command is one request."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stixctl.argparser import Parser
from stixctl.output import err, on_event, print_json, print_table
from stixctl.signals import finish
from stixctl.signals import status_exit as _status_exit
from stixproto import messages as m
from stixproto import names
from stixproto.errors import InvalidRequest, StixError
from stixproto.paths import stix_home
from stixproto.task import Task

EXIT_NO_FIT = 5  # as ProvisionError: no infra can run the task


# -- commands --------------------------------------------------------------------------------


def cmd_launch(home: Path, a: argparse.Namespace) -> int:
    import msgspec

    from stixctl import confirm, taskargs
    from stixctl.client import call

    if a.dryrun:
        return cmd_dryrun(home, a)
    req = m.Launch(
        task=Task(),  # the daemon reads it, once the rest is known to be right
        cluster=a.cluster,
        detach=a.detach_run,
        down=a.down,
        idle_minutes=a.idle_minutes_to_autostop,
        no_setup=a.no_setup,
        retry_until_up=a.retry_until_up,
        fast=a.fast,
        detach_setup=a.detach_setup,
    )
    taskargs.check_first(req)
    task = taskargs.load(home, a.entrypoint, a, allow_empty=True)
    layers = taskargs.config_layers(a.config or [], a.workspace)
    req = msgspec.structs.replace(req, task=task, config=layers)
    req = confirm.launch(home, a, req)
    return _finish_run(call(home, req, on_event, tasks_checked=True), a)


def cmd_dryrun(home: Path, a: argparse.Namespace) -> int:
    from stixctl import taskargs
    from stixctl.client import call

    dag = taskargs.load(home, a.entrypoint, a, pipeline=True, allow_empty=True)
    req = m.PlanRequest(tasks=list(dag.tasks), all_clouds=a.all_clouds, minimize=a.minimize)
    reply = call(home, req, on_event, tasks_checked=True)
    if a.json:
        sys.stdout.write(reply.json + "\n")
    else:
        print(reply.text)
    if reply.no_fit_reason:
        err(f"stixctl: nothing fits: {reply.no_fit_reason}")
        return EXIT_NO_FIT
    return 0


def cmd_exec(home: Path, a: argparse.Namespace) -> int:
    from stixctl import taskargs
    from stixctl.client import call

    req = m.Exec(cluster=a.cluster, task=Task(), detach=a.detach_run)
    taskargs.check_first(req)
    task = taskargs.load(home, a.entrypoint, a)
    req = m.Exec(cluster=a.cluster, task=task, detach=a.detach_run)
    return _finish_run(call(home, req, on_event, tasks_checked=True), a)


def _finish_run(reply: m.LaunchResult, a: argparse.Namespace) -> int:
    if a.json:
        print_json(reply)
    if reply.job_id is None:  # `launch -c dev --gpus A100`: nothing to run, no job
        if not a.json:
            shell = names.command("ssh", reply.cluster)
            err(f"✓ Cluster {reply.cluster} is UP with nothing to run; `{shell}` opens a shell")
        return 0
    if a.detach_run:
        if not a.json:
            err(
                f"⚙ Job {reply.job_id} on {reply.cluster} runs detached; follow it with "
                f"`{names.command('logs', reply.cluster, reply.job_id)}`"
            )
        return 0
    state = reply.job_status or "UNKNOWN"
    if a.json:
        return _status_exit(state)
    return finish(f"Job {reply.job_id} on {reply.cluster}", state, reply.failure)


def cmd_status(home: Path, a: argparse.Namespace) -> int:
    from stixctl import status

    return status.run(home, a, on_event)


def cmd_queue(home: Path, a: argparse.Namespace) -> int:
    from stixctl import render
    from stixctl.client import call

    req = m.Queue(
        clusters=a.clusters, all=a.all, skip_finished=a.skip_finished, all_users=a.all_users
    )
    reply = call(home, req)
    if a.json:
        print_json(reply.jobs)
    else:
        print(render.jobs(reply.jobs))
    return 0


def cmd_logs(home: Path, a: argparse.Namespace) -> int:
    from stixctl.client import call

    req = m.Logs(
        cluster=a.cluster,
        job_id=a.job_id,
        follow=a.follow,
        tail=a.tail,
        status_only=a.status,
        node=a.node,
    )
    reply = call(home, req, on_event)
    if a.status:
        print(f"Job {reply.job_id}: {reply.status}")
        return _status_exit(reply.status)
    if a.follow:  # as `sky logs`: the stream ends with how the job ended, and exits by it
        return finish(f"Job {reply.job_id} on {reply.cluster}", reply.status, reply.failure)
    return 0


def cmd_cancel(home: Path, a: argparse.Namespace) -> int:
    from stixctl import confirm
    from stixctl.client import call

    req = m.Cancel(cluster=a.cluster, job_ids=a.job_ids, all=a.all)
    confirm.cancel_all(a, req, f"all jobs on cluster(s): {a.cluster}")
    reply = call(home, req, on_event)
    if a.json:
        print_json(reply)
    elif reply.job_ids and not (a.job_ids or a.all):
        print(f"Cancelled the latest running job on {a.cluster}: job {reply.job_ids[0]}.")
    elif reply.job_ids:
        print(f"Cancelled job(s) {', '.join(map(str, reply.job_ids))} on {a.cluster}.")
    else:
        print("No running job to cancel.")
    return 0


def _simple(home: Path, req: Any) -> int:
    from stixctl.client import call

    call(home, req, on_event)
    return 0


def cmd_stop(home: Path, a: argparse.Namespace) -> int:
    from stixctl import confirm

    req = m.Stop(clusters=a.clusters, all=a.all)
    confirm.clusters(home, a, req, "Stopping")
    return _simple(home, req)


def cmd_start(home: Path, a: argparse.Namespace) -> int:
    from stixctl import confirm

    req = m.Start(clusters=a.clusters, idle_minutes=a.idle_minutes_to_autostop, down=a.down)
    confirm.start(home, a, req)
    return _simple(home, req)


def cmd_down(home: Path, a: argparse.Namespace) -> int:
    from stixctl import confirm

    req = m.Down(clusters=a.clusters, all=a.all, purge=a.purge)
    confirm.clusters(home, a, req, "Terminating")
    return _simple(home, req)


def cmd_autostop(home: Path, a: argparse.Namespace) -> int:
    from stixctl import confirm

    req = m.Autostop(
        clusters=a.clusters,
        all=a.all,
        idle_minutes=a.idle_minutes,
        down=a.down,
        cancel=a.cancel,
    )
    confirm.clusters(home, a, req, confirm.autostop_operation(a))
    return _simple(home, req)


def cmd_cost_report(home: Path, a: argparse.Namespace) -> int:
    from stixctl import render
    from stixctl.client import call

    reply = call(home, m.CostReportReq(all=a.all, days=a.days))
    if a.json:
        print_json(reply)
    else:
        print(render.costs(reply))
    return 0


def cmd_check(home: Path, a: argparse.Namespace) -> int:
    from stixctl import render
    from stixctl.client import call

    reply = call(home, m.Check(infras=a.infras))
    if a.json:
        print_json(reply.infras)
    else:
        print(render.checks(reply))
    return 0


def cmd_events(home: Path, a: argparse.Namespace) -> int:
    from stixctl import render
    from stixctl.client import call

    kind: m.EventKind = a.kind or ("job" if a.job_id is not None else "cluster")
    reply = call(home, m.Events(name=a.name, kind=kind, limit=a.limit, job_id=a.job_id))
    if a.json:
        print_json(reply.events)
    else:
        print(render.events(reply.events))
    return 0


def cmd_show_gpus(home: Path, a: argparse.Namespace) -> int:
    from stixctl.client import call

    name, count = a.accelerator, None
    if name and ":" in name:
        name, _, raw = name.partition(":")
        try:
            count = float(raw)
        except ValueError:
            raise InvalidRequest(f"{a.accelerator}: the count after ':' must be a number") from None
    req = m.ShowGpus(name=name, count=count, infra=a.infra, all=a.all)
    return print_table(call(home, req, on_event), a.json)


def cmd_catalog(home: Path, a: argparse.Namespace) -> int:
    from stixctl.client import call

    if a.action == "update":
        req: Any = m.CatalogUpdate(clouds=a.clouds)
    else:
        req = m.CatalogStatus()
    return print_table(call(home, req, on_event), a.json)


POOL_ACTIONS = ("up", "down", "status")


def cmd_ssh(home: Path, a: argparse.Namespace) -> int:
    from stixctl.client import call

    if a.target in POOL_ACTIONS:
        if len(a.rest) > 1:
            raise InvalidRequest(f"ssh {a.target} takes at most one pool name")
        req = m.SshPools(action=a.target, pool=a.rest[0] if a.rest else None)
        return print_table(call(home, req, on_event), a.json)
    command = " ".join(a.rest) or None
    shell = call(home, m.NodeShell(cluster=a.target, node=a.node, command=command))
    if shell.cwd:
        os.chdir(shell.cwd)
    sys.stdout.flush()
    os.execvpe(shell.argv[0], shell.argv, {**os.environ, **shell.env})


def cmd_daemon(home: Path, a: argparse.Namespace) -> int:
    from stixctl import daemonctl

    return daemonctl.run(home, a)


# -- parser ----------------------------------------------------------------------------------


def _task_flags(p: argparse.ArgumentParser) -> None:
    from stixctl import taskargs

    taskargs.add_task_flags(p)
    p.add_argument(
        "-d", "--detach-run", action="store_true", help="return once the job is submitted"
    )
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def _launch_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("entrypoint", nargs="*", help="task YAML file or a shell command")
    s.add_argument("-c", "--cluster", help="cluster name")
    s.add_argument("--down", action="store_true", help="tear down when idle (after autostop)")
    s.add_argument("-i", "--idle-minutes-to-autostop", type=float, metavar="N")
    s.add_argument("--no-setup", action="store_true", help="skip the setup step")
    s.add_argument("-r", "--retry-until-up", action="store_true", help="retry until there is room")
    s.add_argument("--fast", action="store_true", help="UP and unchanged: skip setup and sync")
    s.add_argument("-s", "--detach-setup", action="store_true", help="follow only the run")
    s.add_argument("--config", action="append", metavar="FILE", help="extra config file")
    s.add_argument("--dryrun", action="store_true", help="print the plan; launch nothing")
    s.add_argument(
        "--all-clouds", action="store_true", help="dryrun: plan over every cloud in the catalog"
    )
    s.add_argument("--minimize", choices=["cost", "time"], default="cost")
    _task_flags(s)
    s.set_defaults(fn=cmd_launch)


def _exec_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("cluster")
    s.add_argument("entrypoint", nargs="*", help="task YAML file or a shell command")
    _task_flags(s)
    s.set_defaults(fn=cmd_exec)


def _status_args(s: argparse.ArgumentParser) -> None:
    from stixctl import status

    s.add_argument("clusters", nargs="*")
    s.add_argument("-r", "--refresh", action="store_true")
    s.add_argument("-a", "--all", action="store_true", help="include terminated clusters")
    s.add_argument("--json", action="store_true")
    status.add_args(s)
    s.set_defaults(fn=cmd_status)


def _queue_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("clusters", nargs="*")
    s.add_argument("-s", "--skip-finished", action="store_true")
    s.add_argument("-a", "--all", action="store_true")
    s.add_argument(
        "-u",
        "--all-users",
        action="store_true",
        help="every user's, with a USER column (yours only without it)",
    )
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_queue)


def _logs_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("cluster")
    s.add_argument("job_id", nargs="?", type=int)
    s.add_argument("--follow", dest="follow", action="store_true", default=True)
    s.add_argument("--no-follow", dest="follow", action="store_false")
    s.add_argument("--status", action="store_true", help="print the job's status; exit by it")
    s.add_argument("--tail", type=int, metavar="N", help="only the last N lines")
    s.add_argument("--node", type=int, metavar="RANK", help="only this node's log")
    s.set_defaults(fn=cmd_logs)


def _cancel_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("cluster")
    s.add_argument("job_ids", nargs="*", type=int)
    s.add_argument("-a", "--all", action="store_true")
    s.add_argument("-y", "--yes", action="store_true")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_cancel)


def _stop_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("clusters", nargs="*")
    s.add_argument("-a", "--all", action="store_true")
    s.add_argument("-y", "--yes", action="store_true")
    s.set_defaults(fn=cmd_stop)


def _down_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("clusters", nargs="*")
    s.add_argument("-a", "--all", action="store_true")
    s.add_argument("-y", "--yes", action="store_true")
    s.add_argument("-p", "--purge", action="store_true")
    s.set_defaults(fn=cmd_down)


def _start_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("clusters", nargs="+")
    s.add_argument("-i", "--idle-minutes-to-autostop", type=float, metavar="N")
    s.add_argument("--down", action="store_true")
    s.add_argument("-y", "--yes", action="store_true")
    s.set_defaults(fn=cmd_start)


def _autostop_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("clusters", nargs="*")
    s.add_argument("-i", "--idle-minutes", type=float, metavar="N")
    s.add_argument("--down", action="store_true")
    s.add_argument("--cancel", action="store_true")
    s.add_argument("-a", "--all", action="store_true")
    s.add_argument("-y", "--yes", action="store_true")
    s.set_defaults(fn=cmd_autostop)


def _cost_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("-a", "--all", action="store_true")
    s.add_argument("--days", type=int, default=30)
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_cost_report)


def _check_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("infras", nargs="*")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_check)


def _events_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("name", metavar="CLUSTER|ID")
    s.add_argument("job_id", nargs="?", type=int, help="a job's id as `queue` shows it")
    s.add_argument(
        "--kind",
        choices=["cluster", "job", "managed_job", "job_pool", "service", "replica", "storage"],
        help="job: the latest job without ID; managed_job/job_pool: by job id or pool name",
    )
    s.add_argument("--limit", type=int, default=200)
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_events)


def _show_gpus_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("accelerator", nargs="?", metavar="NAME[:COUNT]")
    s.add_argument("--infra", metavar="CLOUD[/REGION]")
    s.add_argument(
        "-a", "--all", action="store_true", help="every accelerator, not just common ones"
    )
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_show_gpus)


def _catalog_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("action", choices=["update", "status"])
    s.add_argument("clouds", nargs="*", help="update: only these clouds")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_catalog)


def _ssh_args(s: argparse.ArgumentParser) -> None:
    s.add_argument(
        "target", metavar="up|down|status|CLUSTER", help="a pool action, or a cluster to enter"
    )
    s.add_argument(
        "rest", nargs="*", metavar="POOL|COMMAND", help="the pool; or a command to run on the node"
    )
    s.add_argument("--node", type=int, default=0, metavar="RANK", help="CLUSTER: which node")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_ssh)


def _leaks_args(s: argparse.ArgumentParser) -> None:
    from stixctl import leaks

    leaks.add_args(s)


def _storage_args(s: argparse.ArgumentParser) -> None:
    from stixctl import storage

    storage.add_args(s)


def _jobs_args(s: argparse.ArgumentParser) -> None:
    from stixctl import jobs

    jobs.add_args(s)


def _serve_args(s: argparse.ArgumentParser) -> None:
    from stixctl import serve

    serve.add_args(s)


def _fake_args(s: argparse.ArgumentParser) -> None:
    from stixctl import fake

    fake.add_args(s)


def _completion_args(s: argparse.ArgumentParser) -> None:
    from stixctl import completion

    completion.add_args(s)


def _validate_args(s: argparse.ArgumentParser) -> None:
    from stixctl import validate

    validate.add_args(s)


def _api_args(s: argparse.ArgumentParser) -> None:
    from stixctl import apicmd

    apicmd.add_args(s)


def _users_args(s: argparse.ArgumentParser) -> None:
    from stixctl import identity

    identity.add_users_args(s)


def _tokens_args(s: argparse.ArgumentParser) -> None:
    from stixctl import identity

    identity.add_tokens_args(s)


def _workspaces_args(s: argparse.ArgumentParser) -> None:
    from stixctl import workspaces

    workspaces.add_args(s)


def _volumes_args(s: argparse.ArgumentParser) -> None:
    from stixctl import volumes

    volumes.add_args(s)


def _daemon_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("action", choices=["start", "stop", "status", "logs", "install"])
    s.add_argument("--tail", type=int, default=50, help="logs: last N lines")
    s.add_argument("-f", "--follow", action="store_true", help="logs: keep printing")
    s.add_argument("--print", action="store_true", help="install: print the unit only")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_daemon)


COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "launch": ("provision a cluster (or reuse it) and run a task", _launch_args),
    "jobs": ("managed jobs: launch, queue, cancel, logs", _jobs_args),
    "serve": ("services: up, update, status, logs, down", _serve_args),
    "exec": ("run a task on an existing cluster (no setup)", _exec_args),
    "status": ("list clusters (from the store; --refresh asks the infra)", _status_args),
    "queue": ("list the jobs of clusters", _queue_args),
    "logs": ("print or follow a job's logs", _logs_args),
    "cancel": ("cancel jobs", _cancel_args),
    "stop": ("stop clusters (keep their disks)", _stop_args),
    "start": ("start stopped clusters", _start_args),
    "down": ("tear clusters down", _down_args),
    "autostop": ("stop (or --down) clusters after N idle minutes", _autostop_args),
    "cost-report": ("estimated cost of clusters", _cost_args),
    "check": ("which infras are enabled", _check_args),
    "leaks": ("cloud instances of stix's that no cluster owns (--terminate them)", _leaks_args),
    "storage": ("buckets tasks mount: ls, delete (the buckets stix created)", _storage_args),
    "events": ("the history of a cluster, a job (CLUSTER JOB_ID), or --kind KIND", _events_args),
    "show-gpus": ("accelerators, their instance types and prices", _show_gpus_args),
    "catalog": ("fetch (update) or inspect (status) the price catalogs", _catalog_args),
    "ssh": ("SSH pools (up|status|down [POOL]) or a shell on a cluster's node", _ssh_args),
    "validate": ("check task files on this machine (no daemon needed)", _validate_args),
    "users": ("admins: create, list, delete users and set their roles", _users_args),
    "tokens": ("admins: create, list, revoke and rotate users' API tokens", _tokens_args),
    "workspaces": (
        "list the workspaces you may use (ls); admins: create, update, delete",
        _workspaces_args,
    ),
    "volumes": ("volumes that outlive clusters: apply FILE, ls, delete NAMES|-a", _volumes_args),
    "daemon": ("start, stop, inspect or install stixd", _daemon_args),
    "api": ("the HTTP API server: start|stop|status|info, login ENDPOINT|logout", _api_args),
    "completion": ("print a shell completion script: bash, zsh or fish", _completion_args),
    "fake": ("TESTS ONLY: preempt nodes of the fake provider", _fake_args),
}


def version_line() -> str:
    from stixproto import PROTOCOL_VERSION, VERSION

    return f"stixctl {VERSION} (protocol {PROTOCOL_VERSION})"


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="stixctl", description="Run tasks on the cheapest infra.")
    p.add_argument("--version", action="version", version=version_line())
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (text, add_args) in COMMANDS.items():
        add_args(sub.add_parser(name, help=text))
    return p


def parse(argv: list[str]) -> argparse.Namespace:
    """Options may come before or after the task (`exec c1 -d 'cmd'`, `exec c1 'cmd' -d`)."""
    if argv and argv[0] == "jobs":
        from stixctl import jobs

        return jobs.parse(argv[1:])
    if argv and argv[0] == "serve":
        from stixctl import serve

        return serve.parse(argv[1:])
    if argv and argv[0] == "completion":
        from stixctl import completion

        return completion.parse(argv[1:], build_parser)
    if argv and argv[0] in COMMANDS:
        # only the command being run is built: the whole parser costs more than the request
        text, add_args = COMMANDS[argv[0]]
        sub = Parser(prog=f"stixctl {argv[0]}", description=text)
        add_args(sub)
        args: argparse.Namespace = sub.parse_intermixed_args(argv[1:])
        args.command = argv[0]
        return args
    return build_parser().parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    home = stix_home()
    try:
        return int(args.fn(home, args))
    except StixError as exc:
        from stixctl.render import one_line

        err(f"stixctl: {one_line(exc.message)}")
        return exc.exit_code
    except KeyboardInterrupt:
        err(
            "stixctl: interrupted (the cluster and its jobs keep running; a launch waiting "
            "for capacity stops retrying)"
        )
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
