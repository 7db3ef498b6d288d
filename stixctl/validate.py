"""`stixctl validate FILE... [--json]`: judge task files on this machine, without the daemon.

A file is valid when it parses and follows every rule of the task language (exit 0 when all
are, 2 otherwise). What only stops a launch from here — a local path that is not on this
machine, an env or secret left null — is a warning, worded exactly as launch words its refusal
(`stixproto.task.launch_problems` is the one source of those sentences).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import msgspec

from stixctl.taskargs import pairs
from stixproto.errors import InvalidTask

EXIT_INVALID = 2


class FileReport(msgspec.Struct):
    file: str
    valid: bool
    errors: list[str]
    warnings: list[str]
    tasks: int


def judge(path: str, env: dict[str, str], secrets: dict[str, str]) -> FileReport:
    """The verdict on one file: errors make it invalid; warnings are what launch would refuse."""
    # deferred: `stixctl` builds every command's arguments, and only this one reads tasks
    from stixproto.task import launch_problems, load_dag_file, task_notes

    try:
        dag = load_dag_file(path, env_overrides=env or None, secret_overrides=secrets or None)
    except InvalidTask as exc:
        return FileReport(path, False, [exc.message], [], 0)
    offset = 1 if dag.header() is not None else 0
    warnings: list[str] = []
    for i, task in enumerate(dag.tasks):
        source = (
            path if len(dag.tasks) == 1 and not offset else f"{path} (document {i + 1 + offset})"
        )
        warnings += [f"{source}: {note}" for note in launch_problems(task) + task_notes(task)]
    return FileReport(path, True, [], warnings, len(dag.tasks))


def _text(value: str) -> str:
    """A path from argv may hold bytes that are not UTF-8 (`\\udcff`); JSON needs them escaped."""
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _utf8(report: FileReport) -> FileReport:
    return FileReport(
        _text(report.file),
        report.valid,
        [_text(e) for e in report.errors],
        [_text(w) for w in report.warnings],
        report.tasks,
    )


def cmd_validate(home: Path, args: argparse.Namespace) -> int:
    del home  # validation never needs the daemon
    env = pairs(args.env or [], "--env")
    secrets = pairs(args.secret or [], "--secret")
    reports = [_utf8(judge(f, env, secrets)) for f in args.files]
    if args.json:
        sys.stdout.write(msgspec.json.encode(reports).decode() + "\n")
    else:
        from stixctl.render import one_line

        for report in reports:
            for error in report.errors:
                sys.stderr.write(f"✗ {one_line(error)}\n")
            for warning in report.warnings:
                sys.stderr.write(f"⚠ {one_line(warning)}\n")
            if report.valid:
                noun = "task" if report.tasks == 1 else "tasks"
                sys.stdout.write(f"✓ {report.file}: valid ({report.tasks} {noun})\n")
    return 0 if all(r.valid for r in reports) else EXIT_INVALID


def add_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("files", nargs="+", metavar="FILE", help="task or pipeline YAML files")
    s.add_argument(
        "--env",
        action="append",
        metavar="NAME[=VALUE]",
        help="as launch: supply or override an env",
    )
    s.add_argument("--secret", action="append", metavar="NAME[=VALUE]", help="supply a secret")
    s.add_argument("--json", action="store_true", help="one JSON list of per-file verdicts")
    s.set_defaults(fn=cmd_validate)
