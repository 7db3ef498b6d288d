"""Task files a local `stixctl` gives are read by the daemon (`ReadTask`): the refusals are the
loader's own sentences byte for byte, relative paths and `--env` are the client's, and the
client process imports neither YAML nor the task rules."""

from __future__ import annotations

import contextlib
import functools
import io
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from stixctl.render import one_line
from stixproto.errors import StixError
from stixproto.names import check_new
from stixproto.task import ResourceOverrides, Task, apply_overrides, load_dag_file, load_task_file
from tests.conftest import Stix

BAD_TASKS: dict[str, bytes] = {
    "syntax.yaml": b"run: [echo\n",
    "unknown.yaml": b"reources:\n  cpus: 1\nrun: x\n",
    "accelerator.yaml": b"resources:\n  accelerators: A1OO:8\nrun: x\n",
    "inf.yaml": b"resources:\n  cpus: .inf\nrun: x\n",
    "nodes.yaml": b"num_nodes: 99999999999999999999\nrun: x\n",
    "pipeline.yaml": b"name: a\nrun: x\n---\nname: b\nrun: y\n",
    "latin1.yaml": b"run: echo caf\xe9\n",
    "envname.yaml": b"envs:\n  1X: y\nrun: x\n",
}
"""Malformed task files, and one a launch refuses but a pipeline command takes."""


def _refusal(fn: Callable[[], object]) -> tuple[int, str] | None:
    """What stixctl prints for `fn`'s refusal (exit code, stderr), or None if it accepts."""
    try:
        fn()
    except StixError as exc:
        return exc.exit_code, f"stixctl: {one_line(exc.message)}\n"
    return None


def _loaded_here(cwd: Path, name: str, pipeline: bool) -> tuple[int, str] | None:
    """The refusal of stixproto.task's own loader, in the client's directory (as the client
    loaded task files before the daemon read them)."""
    with contextlib.chdir(cwd):
        return _refusal(lambda: (load_dag_file if pipeline else load_task_file)(name))


def test_the_daemon_refuses_a_task_file_with_the_loaders_own_sentence(
    stix: Stix, tmp_path: Path
) -> None:
    for name, data in BAD_TASKS.items():
        (tmp_path / name).write_bytes(data)
    stix.run("daemon", "start", check=True)  # from its home: not the client's directory
    commands = {
        ("launch", "-y", "-c", "c1"): False,
        ("exec", "c1"): False,
        ("launch", "--dryrun"): True,
        ("jobs", "launch", "-y"): True,
    }
    compared = 0
    for i, name in enumerate([*BAD_TASKS, "missing.yaml"]):
        for argv, pipeline in list(commands.items())[i % 2 :: 2]:  # each file, two commands
            expected = _loaded_here(tmp_path, name, pipeline)
            if expected is None:  # a pipeline for the commands that take one
                continue
            got = stix.run(*argv, name, cwd=tmp_path)
            assert (got.returncode, got.stderr) == expected, (argv, name)
            compared += 1
    assert compared >= 15
    assert stix.daemon_pid() is not None  # it read them all and lives on


FLAG_CASES: list[tuple[list[str], ResourceOverrides]] = [
    (["--num-nodes", "99999999999999999999"], ResourceOverrides(num_nodes=10**20 - 1)),
    (["--cpus", "inf"], ResourceOverrides(cpus="inf")),
    (["--gpus", "A1OO:8"], ResourceOverrides(gpus="A1OO:8")),
    (["--infra", "aws", "--zone", "x"], ResourceOverrides(infra="aws", zone="x")),
    (["--ports", "99999999999999999999"], ResourceOverrides(ports=[10**20 - 1])),
]
"""Resource flags `apply_overrides` refuses, as the command line gives them and as overrides."""


def test_the_daemon_refuses_a_resource_flag_with_the_overrides_own_sentence(stix: Stix) -> None:
    commands = (["launch", "-y", "-c", "c1"], ["exec", "c1"], ["launch", "--dryrun"])
    for i, (flags, overrides) in enumerate(FLAG_CASES):
        expected = _refusal(functools.partial(apply_overrides, Task(run="x"), overrides))
        assert expected is not None, flags
        argv = commands[i % len(commands)]
        got = stix.run(*argv, *flags, "echo", "hi")
        assert (got.returncode, got.stderr) == expected, (argv, flags)


@pytest.mark.parametrize(
    ("argv", "kind"),
    [
        (["launch", "-y", "-c", "../.."], "cluster"),
        (["jobs", "launch", "-y", "-n", "../.."], "managed job"),
    ],
)
def test_a_bad_new_name_is_refused_before_the_daemon_reads_the_task(
    stix: Stix, argv: list[str], kind: str
) -> None:
    expected = _refusal(lambda: check_new("../..", kind))
    got = stix.run(*argv, "echo", "hi")
    assert (got.returncode, got.stderr) == expected
    assert stix.daemon_pid() is None


def test_relative_paths_are_the_clients_directory_not_the_daemons(
    stix: Stix, tmp_path: Path
) -> None:
    project = tmp_path / "project"
    (project / "code").mkdir(parents=True)
    (project / "code" / "marker").write_text("workdir from the client's directory\n")
    (project / "other").mkdir()
    (project / "other" / "marker").write_text("--workdir from the client's directory\n")
    (project / "data.txt").write_text("mounted from the client's directory\n")
    (project / "vars.env").write_text("FROM_FILE=env file from the client's directory\n")
    (project / "task.yaml").write_text(
        "workdir: code\nfile_mounts:\n  ~/data.txt: data.txt\n"
        "run: cat marker; cat ~/data.txt; echo $FROM_FILE\n"
    )
    stix.run("daemon", "start", check=True)  # its directory is the home, not the project
    launched = stix.run(
        "launch", "-y", "-c", "rel", "--env-file", "vars.env", "task.yaml", cwd=project, check=True
    )
    assert "workdir from the client's directory" in launched.stdout
    assert "mounted from the client's directory" in launched.stdout
    assert "env file from the client's directory" in launched.stdout
    ran = stix.run("exec", "rel", "--workdir", "other", "cat marker", cwd=project, check=True)
    assert "--workdir from the client's directory" in ran.stdout
    missing = stix.run("exec", "rel", "--workdir", "nowhere", "true", cwd=project)
    assert missing.returncode == 2
    assert missing.stderr == "stixctl: --workdir nowhere: not a directory on this machine\n"


def test_env_values_come_from_the_clients_shell_not_the_daemons(stix: Stix, tmp_path: Path) -> None:
    stix.run("daemon", "start", check=True)  # without ONLY_CLIENT in its environment
    (tmp_path / "task.yaml").write_text(
        "envs:\n  ONLY_CLIENT: null\n  B: from-file\nsecrets:\n  S: null\n"
        "run: echo file:$ONLY_CLIENT:$B:$S\n"
    )
    stix.env["ONLY_CLIENT"] = "from-shell"
    launched = stix.run(
        "launch", "-y", "-c", "e", "--env", "ONLY_CLIENT", "--env", "B=2", "--secret", "S=s3",
        "task.yaml", cwd=tmp_path, check=True,
    )  # fmt: skip
    assert "file:from-shell:2:s3" in launched.stdout
    ran = stix.run("exec", "e", "--env", "ONLY_CLIENT", "echo cmd:$ONLY_CLIENT", check=True)
    assert "cmd:from-shell" in ran.stdout
    del stix.env["ONLY_CLIENT"]
    unset = stix.run("exec", "e", "--env", "ONLY_CLIENT", "true")
    assert unset.returncode == 2
    assert unset.stderr == (
        "stixctl: --env ONLY_CLIENT: no value given and ONLY_CLIENT is not set in this shell\n"
    )


HEAVY = ("yaml", "stixproto.user_yaml", "stixproto.task.load", "stixproto.task.parsing",
         "stixproto.task.resources", "stixproto.task.overrides")  # fmt: skip
"""What reading a task takes: the daemon has it imported; a client process never needs it."""
LAZY = ("stixctl.confirm", "stixctl.taskargs", "stixctl.validate")
"""Parts of the client only some commands use."""


def _imported(stix: Stix, cwd: Path, *argv: str) -> set[str]:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "stixctl", *argv],
        env=stix.env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, (argv, proc.stderr[-2000:])
    return set(re.findall(r"^import time:.*\| +(\S+)$", proc.stderr, re.MULTILINE))


def test_the_client_imports_no_yaml_or_task_rules_for_a_task_it_sends(
    stix: Stix, tmp_path: Path
) -> None:
    (tmp_path / "task.yaml").write_text("resources:\n  cpus: 1+\nrun: echo from-file\n")
    stix.run("launch", "-y", "-c", "c1", "true", check=True)
    runs = {
        "launch": ["launch", "-y", "-c", "c1", "-d", "task.yaml"],
        "launch --dryrun": ["launch", "--dryrun", "--cpus", "2", "task.yaml"],
        "exec a file": ["exec", "c1", "-d", "--env", "A=1", "task.yaml"],
        "exec a command": ["exec", "c1", "-d", "echo", "hi"],
        "status": ["status"],
        "queue": ["queue"],
        "jobs queue": ["jobs", "queue"],
    }
    for what, argv in runs.items():
        imported = _imported(stix, tmp_path, *argv)
        assert "stixproto.messages" in imported  # the record is read at all
        assert not imported & set(HEAVY), (what, sorted(imported & set(HEAVY)))
        if what in ("status", "queue", "jobs queue"):
            assert not imported & set(LAZY), (what, sorted(imported & set(LAZY)))


def test_output_is_whole_when_the_client_exits_without_teardown(stix: Stix) -> None:
    """The console script flushes and ends the process at once (`stixctl.entry.end`)."""
    from stixctl import main as cli

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["completion", "bash"]) == 0
    piped = subprocess.run(
        [sys.executable, "-m", "stixctl", "completion", "bash"],
        env=stix.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert piped.stdout == out.getvalue()  # all of it: less than a pipe's buffer, so only
    assert piped.stdout.endswith("complete -F _stixctl stixctl\n")  # the flush writes it
    assert stix.daemon_pid() is None


def test_the_wire_resource_flags_name_every_resource_override() -> None:
    """The client sends `ResourceFlags` so it need not import the task rules; the daemon
    turns them into `ResourceOverrides`. A flag added to one and not the other would be
    dropped without a word."""
    from stixproto.messages import ResourceFlags

    assert set(ResourceFlags.__struct_fields__) == set(ResourceOverrides.__struct_fields__)
