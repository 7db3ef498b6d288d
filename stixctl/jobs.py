"""`stixctl jobs launch|queue|cancel|logs`: managed jobs, with SkyPilot's names and flags."""

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

Fn = Callable[[Path, argparse.Namespace], int]


def _launch(home: Path, a: argparse.Namespace) -> int:
    from stixctl import confirm, taskargs
    from stixctl.client import call
    from stixctl.signals import finish, status_exit

    fields = {"detach": a.detach_run, "pool": a.pool, "num_jobs": a.num_jobs}
    taskargs.check_first(m.JobsLaunch(tasks=[], name=a.name or None, **fields))
    dag = taskargs.load(home, a.entrypoint, a, pipeline=True)
    req = m.JobsLaunch(
        tasks=list(dag.tasks),
        name=a.name or getattr(dag, "name", None),
        config=taskargs.config_layers(a.config or [], a.workspace),
        **fields,
    )
    confirm.jobs_launch(home, a, req)
    reply: m.ManagedLaunched = call(home, req, on_event, tasks_checked=True)
    if a.json:
        print_json(reply)
    if a.detach_run or len(reply.job_ids) > 1:
        if not a.json:
            ids = ", ".join(map(str, reply.job_ids or [reply.job_id]))
            err(
                f"⚙ Managed job(s) {ids} ({reply.name}) submitted; follow one with "
                f"`{names.command('jobs', 'logs', reply.job_id)}`"
            )
        return 0
    if a.json:
        return status_exit(reply.status)
    return finish(f"Managed job {reply.job_id}", reply.status, reply.failure)


def _chunk(event: object) -> list[m.ManagedJobRecord] | None:
    return event.jobs if isinstance(event, m.ManagedJobRows) else None


def _queue(home: Path, a: argparse.Namespace) -> int:
    """SkyPilot's default: the newest 50 jobs (table and --json alike), a line saying how
    many more there are; --all streams every one."""
    from stixctl.client import call
    from stixctl.listing import hidden_note, stream_json

    limit = None if a.all else a.limit
    req = m.JobsQueue(
        all=a.all,
        limit=limit,
        skip_finished=a.skip_finished,
        stream=a.json,
        all_users=a.all_users,
    )
    if a.json:
        stream_json(home, req, _chunk, on_event, "managed jobs")
        return 0
    reply: m.ManagedJobList = call(home, req)
    print(render(reply.jobs))
    if reply.hidden and limit is not None:
        print(hidden_note(reply.hidden, limit, "managed jobs"))
    return 0


def _cancel(home: Path, a: argparse.Namespace) -> int:
    from stixctl import confirm
    from stixctl.client import call

    if not (a.job_ids or a.name or a.all or a.pool):
        raise InvalidRequest("name the managed jobs to cancel: IDs, -n NAME, -p POOL or --all")
    req = m.JobsCancel(job_ids=a.job_ids, name=a.name, all=a.all, pool=a.pool)
    confirm.cancel_all(a, req, "all managed jobs")
    reply: m.Table = call(home, req)
    if a.json:
        print_json(reply.rows)
    else:
        print(reply.text)
    return 0


def _logs(home: Path, a: argparse.Namespace) -> int:
    from stixctl.client import call
    from stixctl.signals import finish, status_exit

    req = m.JobsLogs(
        job_id=a.job_id,
        name=a.name,
        follow=a.follow,
        controller=a.controller,
        status_only=a.status,
    )
    reply: m.LogsEnd = call(home, req, on_event)
    if a.status:  # as `logs --status`: the state, and SkyPilot's exit code for it
        print(f"Managed job {reply.job_id}: {reply.status}")
        return status_exit(reply.status)
    if a.follow:
        return finish(f"Managed job {reply.job_id}", reply.status, reply.failure)
    return 0


def _pool(home: Path, a: argparse.Namespace) -> int:
    from stixctl import taskargs
    from stixctl.client import call

    if a.pool_action == "apply":
        if not a.entrypoint:
            raise InvalidRequest("jobs pool apply needs a pool YAML file")
        if a.pool_name:
            from stixproto.task import Task

            taskargs.check_first(m.PoolApply(name=a.pool_name, task=Task()))
        task = taskargs.load(home, a.entrypoint, a)
        name = a.pool_name or task.name
        if not name:
            raise InvalidRequest("name the pool with -p NAME (or `name:` in the file)")
        req: object = m.PoolApply(
            name=name, task=task, config=taskargs.config_layers(a.config or [])
        )
        reply = call(home, req, tasks_checked=True)
        print(reply.message)
        return 0
    if a.pool_action == "status":
        names = [*a.names, *([a.pool_name] if a.pool_name else [])]
        table: m.Table = call(home, m.PoolStatusReq(names=names))
    else:
        names = [*a.names, *([a.pool_name] if a.pool_name else [])]
        table = call(home, m.PoolDown(names=names, all=a.all))
    if a.json:
        print_json(table.rows)
    else:
        print(table.text)
    return 0


def render(records: Sequence[m.ManagedJobRecord]) -> str:
    from stixctl.render import ago, duration, table, with_users

    if not records:
        return "No managed jobs."
    now = time.time()
    rows = []
    for j in records:
        total = (j.ended_at or now) - j.submitted_at
        task = f" ({j.task + 1}/{j.tasks})" if j.tasks > 1 else ""
        where = f" @{j.pool}" if j.pool else ""
        rows.append(
            [
                str(j.job_id),
                j.name + task + where,
                j.resources,
                j.infra or "-",
                j.cluster or "-",
                ago(j.submitted_at, now),
                duration(total),
                duration(j.job_duration),
                str(j.recoveries),
                j.status,
                j.failure_reason or "-",
            ]
        )
    headers = [
        "ID",
        "NAME",
        "RESOURCES",
        "INFRA",
        "CLUSTER",
        "SUBMITTED",
        "TOT. DURATION",
        "JOB DURATION",
        "#RECOVERIES",
        "STATUS",
        "FAILURE",
    ]
    shown = with_users(headers, rows, [j.user for j in records])
    return "Managed jobs\n" + table(*shown) + _recoveries(records)


MAX_RECOVERY_LINES = 10


def _recoveries(records: Sequence[m.ManagedJobRecord]) -> str:
    """Why each recovery of the listed jobs happened, and where each run went."""
    recovered = [j for j in records if j.recoveries]
    lines = []
    for j in recovered[:MAX_RECOVERY_LINES]:
        runs = " -> ".join(j.run_infras) or "-"
        lines.append(f"  {j.job_id}: runs on {runs}")
        lines += [f"     recovery {i + 1}: {why}" for i, why in enumerate(j.recovery_reasons)]
    if len(recovered) > MAX_RECOVERY_LINES:
        more = len(recovered) - MAX_RECOVERY_LINES
        lines.append(f"  ... and {more} more recovered job(s) (see --json)")
    return "\nRecoveries\n" + "\n".join(lines) if lines else ""


def _launch_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("entrypoint", nargs="*", help="task YAML file (or pipeline) or a command")
    s.add_argument("--config", action="append", metavar="FILE", help="extra config file")
    from stixctl import taskargs

    taskargs.add_task_flags(s)
    s.add_argument("-d", "--detach-run", action="store_true", help="return once submitted")
    s.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    s.add_argument("-p", "--pool", help="run on the idle workers of this pool")
    s.add_argument("--num-jobs", type=int, default=1, help="with --pool: this many jobs")
    s.add_argument("--json", action="store_true")


def _queue_args(s: argparse.ArgumentParser) -> None:
    from stixctl.listing import DEFAULT_LIMIT

    s.add_argument("-a", "--all", action="store_true", help="every job that ever ran")
    s.add_argument(
        "-l",
        "--limit",
        type=int,
        default=DEFAULT_LIMIT,
        help=f"show the newest N jobs (default {DEFAULT_LIMIT}; --all: every one)",
    )
    s.add_argument("-s", "--skip-finished", action="store_true", help="only jobs in progress")
    s.add_argument(
        "-u",
        "--all-users",
        action="store_true",
        help="every user's, with a USER column (yours only without it)",
    )
    s.add_argument("--json", action="store_true")


def _cancel_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("job_ids", nargs="*", type=int)
    s.add_argument("-n", "--name")
    s.add_argument("-p", "--pool", help="every job running or waiting on this pool")
    s.add_argument("-a", "--all", action="store_true")
    s.add_argument("-y", "--yes", action="store_true")
    s.add_argument("--json", action="store_true")


def _logs_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("job_id", nargs="?", type=int, help="default: the most recent job")
    s.add_argument("-n", "--name")
    s.add_argument("--follow", dest="follow", action="store_true", default=True)
    s.add_argument("--no-follow", dest="follow", action="store_false")
    s.add_argument("--controller", action="store_true", help="the controller's decisions")
    s.add_argument("--status", action="store_true", help="print the job's status; exit by it")


def _pool_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("pool_action", choices=["apply", "status", "down"])
    s.add_argument("names", nargs="*", help="apply: the pool YAML; status/down: pool names")
    s.add_argument("-p", "--pool", dest="pool_name", help="the pool's name")
    s.add_argument("-a", "--all", action="store_true", help="down: every pool")
    s.add_argument("--config", action="append", metavar="FILE", help="extra config file")
    s.add_argument("-y", "--yes", action="store_true")
    s.add_argument("--json", action="store_true")
    from stixctl import taskargs

    taskargs.add_task_flags(s)


ACTIONS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Fn]] = {
    "launch": ("run a task as a managed job (recovered)", _launch_args, _launch),
    "queue": ("list managed jobs", _queue_args, _queue),
    "cancel": ("cancel managed jobs", _cancel_args, _cancel),
    "logs": ("a managed job's output (or --controller: its decisions)", _logs_args, _logs),
    "pool": ("worker pools: apply -p NAME FILE | status [NAME] | down NAME", _pool_args, _pool),
}  # fmt: skip


def add_args(s: argparse.ArgumentParser) -> None:
    """For `stixctl --help` and `stixctl jobs --help`: every action with its flags."""
    add_actions(s, ACTIONS)


def parse(argv: list[str]) -> argparse.Namespace:
    """`jobs ACTION …` with options before or after the task, as for `launch`."""
    args = parse_actions("jobs", "managed jobs", ACTIONS, argv)
    if args.action == "pool" and args.pool_action == "apply":
        args.entrypoint, args.names = args.names, []  # apply takes the YAML as its positional
    elif args.action == "pool":
        args.entrypoint = []
    return args
