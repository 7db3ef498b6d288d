"""The SDK has every operation the CLI has, sync and async, and each does what the CLI does.

The parity tests read the CLI's own parsers, so a command added without an SDK method (or an
explicit reason in `CLI_ONLY`) fails here. The behaviour tests drive a real daemon through both
clients, often asking the same question of each and comparing the typed answers.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import http.server
import inspect
import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from stixctl import jobs, main, serve
from stixctl import sdk_ops as ops
from stixctl.argparser import Parser
from stixctl.sdk import CLI_EQUIVALENTS, CLI_ONLY, AsyncClient, Client
from stixproto import messages as m
from stixproto import reports as r
from stixproto.errors import (
    ClusterNotFound,
    DaemonUnavailable,
    InvalidConfig,
    InvalidRequest,
    JobNotFound,
    ProtocolError,
)
from stixproto.task import Resources, Task
from tests.conftest import REPO, Stix, wait_until
from tests.shared_data import needs
from tests.test_managed_jobs_fake import fake_daemon

T = TypeVar("T")
SHARED = Path(os.environ.get("STIX_CATALOG_DIR") or REPO.parent / "shared" / "catalogs")
needs_catalogs = needs(SHARED / "v8", "shared catalogs")


def run(coro: Awaitable[T]) -> T:
    async def wrapped() -> T:
        return await coro

    return asyncio.run(wrapped())


def collect(chunks: AsyncIterator[str]) -> str:
    async def gather() -> str:
        return "".join([c async for c in chunks])

    return asyncio.run(gather())


# -- parity ----------------------------------------------------------------------------------


def _positional_choices(add_args: Callable[[argparse.ArgumentParser], None]) -> list[str] | None:
    parser = Parser(prog="x")
    add_args(parser)
    for action in parser._actions:
        if not action.option_strings and action.choices and not isinstance(action.choices, dict):
            return list(action.choices)
    return None


def cli_commands(commands: dict[str, Any]) -> set[str]:
    """Every command the CLI parses, with its action when it takes one (`catalog update`)."""
    found: set[str] = set()
    for name, (_, add_args) in commands.items():
        if name == "jobs":
            for action, (_, add, _) in jobs.ACTIONS.items():
                sub = _positional_choices(add)
                found |= {f"jobs {action} {s}" for s in sub} if sub else {f"jobs {action}"}
        elif name == "serve":
            found |= {f"serve {action}" for action in serve.ACTIONS}
        elif name == "ssh":
            found |= {f"ssh {a}" for a in main.POOL_ACTIONS} | {"ssh CLUSTER"}
        else:
            choices = _positional_choices(add_args)
            found |= {f"{name} {c}" for c in choices} if choices else {name}
    return found


def without_sdk_method(commands: dict[str, Any]) -> list[str]:
    return sorted(c for c in cli_commands(commands) if c not in {**CLI_EQUIVALENTS, **CLI_ONLY})


def test_every_cli_command_has_an_sdk_method_or_a_reason_not_to() -> None:
    assert without_sdk_method(main.COMMANDS) == []
    assert all(reason.strip() for reason in CLI_ONLY.values())


def test_a_command_added_without_an_sdk_method_fails_the_parity_check() -> None:
    def args(s: argparse.ArgumentParser) -> None:
        s.add_argument("target")

    added = {**main.COMMANDS, "teleport": ("move a cluster", args)}
    assert without_sdk_method(added) == ["teleport"]


def test_each_flag_named_in_the_mapping_is_one_the_cli_has() -> None:
    for command in CLI_EQUIVALENTS:
        words = command.split()
        if words[-1].startswith("--"):
            base = " ".join(words[:2] if words[0] in SUBCOMMANDS else words[:1])
            assert words[-1].lstrip("-").replace("-", "_") in _flags(base), command


SUBCOMMANDS: dict[str, dict[str, Any]] = {"jobs": jobs.ACTIONS, "serve": serve.ACTIONS}
"""Commands whose actions have parsers of their own."""

RENAMED = {
    "entrypoint": "task",
    "detach_run": "detach",
    "idle_minutes_to_autostop": "idle_minutes",
    "accelerator": "name",
    "names": "pools",
    "pool_name": "name",
    "rest": "pool",
}
"""A CLI flag's dest → its SDK parameter, where the names differ."""

NOT_PARAMETERS = {
    "help": "argparse's",
    "json": "the CLI's output format; the SDK returns records",
    "yes": "the CLI's prompts; calling the method is the decision",
    "action": "picks the method (CLI_EQUIVALENTS)",
    "pool_action": "picks the method (CLI_EQUIVALENTS)",
    "target": "picks the method: ssh_pools or ssh_command",
    "dryrun": "`launch --dryrun` is the method `plan`",
    "status": "`logs --status` is `job_status`, `jobs logs --status` is `jobs_status`",
    "terminate": "`leaks --terminate` is `terminate_leaks`",
    "cancel": "`autostop --cancel` is `autostop(..., idle_minutes=None)`",
    "follow": "`daemon logs -f` keeps a terminal printing; a program calls `daemon_log` again",
    "print": "`daemon install --print`; install is CLI-only",
    "token": "`api login --token`; login is CLI-only (a program sets STIX_API_TOKEN)",
    "ip": "`status --ip`: `head_ip` of the record `status` returns",
    "endpoints": "`status --endpoints`: `head_ip` and `ports` of the record `status` returns",
    "endpoint": "`status --endpoint PORT`: `head_ip` and `ports` of the record `status` returns",
    "verbose": "`serve status -v`: more fields of the records `serve_status` returns",
}
"""CLI flags with no SDK parameter, and why."""


def _task_flags() -> set[str]:
    """Flags that override the task (`--cpus`, `--env`, ...): the SDK takes the Task itself."""
    from stixctl import taskargs

    parser = Parser(prog="x")
    taskargs.add_task_flags(parser)
    return {a.dest for a in parser._actions}


def _flags(base: str) -> set[str]:
    words = base.split()
    if words[0] in SUBCOMMANDS:
        add = SUBCOMMANDS[words[0]][words[1]][1]
    else:
        add = main.COMMANDS[words[0]][1]
    parser = Parser(prog=base)
    add(parser)
    return {a.dest for a in parser._actions}


def flags_without_parameters(flags_of: Callable[[str], set[str]]) -> dict[str, list[str]]:
    """Per command (`launch`, `jobs pool`): its flags that none of its SDK methods takes."""
    methods: dict[str, set[str]] = {}
    for command, method in CLI_EQUIVALENTS.items():
        words = [w for w in command.split() if not w.startswith("--")]
        base = " ".join(words[:2] if words[0] in SUBCOMMANDS else words[:1])  # one parser each
        methods.setdefault(base, set()).add(method)
    task_flags = _task_flags()
    out = {}
    for base, names in sorted(methods.items()):
        params = {p for n in names for p in inspect.signature(getattr(Client, n)).parameters}
        lacking = sorted(
            dest
            for dest in flags_of(base) - task_flags
            if RENAMED.get(dest, dest) not in params and dest not in NOT_PARAMETERS
        )
        if lacking:
            out[base] = lacking
    return out


def test_every_flag_of_a_command_is_a_parameter_of_its_sdk_methods() -> None:
    """Else: add the parameter to Client and AsyncClient (sdk_ops builds the request), or say
    in NOT_PARAMETERS why a program has no use for it."""
    assert flags_without_parameters(_flags) == {}


def test_a_flag_added_without_an_sdk_parameter_fails_the_parity_check() -> None:
    def more(base: str) -> set[str]:
        return _flags(base) | ({"teleport_to"} if base == "launch" else set())

    assert flags_without_parameters(more) == {"launch": ["teleport_to"]}


@pytest.mark.parametrize("command", sorted(CLI_EQUIVALENTS))
def test_sync_and_async_methods_exist_and_take_the_same_arguments(command: str) -> None:
    method = CLI_EQUIVALENTS[command]
    sync, asynchronous = getattr(Client, method), getattr(AsyncClient, method)
    assert not inspect.iscoroutinefunction(sync)
    streams = inspect.signature(asynchronous).return_annotation.startswith("AsyncIterator")
    assert inspect.iscoroutinefunction(asynchronous) or streams, method
    assert inspect.signature(sync).parameters == inspect.signature(asynchronous).parameters


def test_the_two_clients_have_the_same_public_methods() -> None:
    def public(cls: type) -> set[str]:
        return {n for n, v in vars(cls).items() if callable(v) and not n.startswith("_")}

    assert public(Client) == public(AsyncClient)
    assert set(CLI_EQUIVALENTS.values()) <= public(Client)


def test_the_readme_table_names_every_sdk_method_beside_its_command() -> None:
    readme = (REPO / "README.md").read_text()
    for command, method in CLI_EQUIVALENTS.items():
        assert f"| `stixctl {command}` | `{method}` |" in readme, command


def test_the_sdk_imports_without_yaml_or_the_daemon() -> None:
    code = (
        "import sys\n"
        "sys.modules['yaml'] = None  # importing it now fails\n"
        "from stixctl.sdk import AsyncClient, Client, Task\n"
        "print(sorted(n for n in ('stixd', 'anyio', 'aiosqlite') if n in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_reply_of_the_wrong_kind_or_shape_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="answered OkReply to Status"):
        ops.status((), False, False).finish(m.OkReply())
    table = m.Table(text="Pool p", rows=[{"pool": "p", "status": "READY"}])
    with pytest.raises(ProtocolError, match="report row this client cannot read"):
        ops.pool_status("p").finish(table)
    assert ops.pool_down("p", False).finish(table).rows == [r.PoolRef(pool="p")]


# -- clusters, jobs and the daemon's reports, on `local` ------------------------------------


def started(stix: Stix) -> tuple[Client, AsyncClient]:
    """Both clients on a daemon started with the test's environment (never a second one)."""
    stix.run("daemon", "start", check=True)
    return Client(stix.home, autostart=False), AsyncClient(stix.home, autostart=False)


def test_clusters_and_their_jobs_through_both_clients(stix: Stix, tmp_path: Path) -> None:
    c, a = started(stix)
    task = Task(run="echo hi-$SKYPILOT_NODE_RANK", resources=Resources(cpus="1+"))
    plan, aplan = c.plan(task), run(a.plan(task))
    assert plan.no_fit_reason is None and "local" in plan.text and aplan.text == plan.text
    assert c.plan([task, task]).no_fit_reason is None  # a pipeline of two
    gpus = Task(run="true", resources=Resources(accelerators="H100:8"))
    assert c.plan(gpus).no_fit_reason and run(a.plan(gpus)).no_fit_reason

    config = tmp_path / "team.yaml"
    config.write_text("autostop:\n  default_idle_minutes: 30\n")
    assert c.launch(task, "sdkc", detach=False, config=[config]).job_status == "SUCCEEDED"
    assert c.status("sdkc")[0].autostop_idle_minutes == 30
    assert "".join(c.logs("sdkc", 1, tail=1, node=0)) == "hi-0\n"
    assert collect(a.logs("sdkc", 1, follow=True)) == "hi-0\n"
    sleeper = run(a.exec("sdkc", "sleep 60"))
    assert sleeper.job_id is not None
    wait_until(lambda: c.job_status("sdkc", sleeper.job_id) == "RUNNING")
    assert run(a.job_status("sdkc", sleeper.job_id)) == "RUNNING"
    assert run(a.cancel("sdkc", [sleeper.job_id])) == [sleeper.job_id]
    wait_until(lambda: c.job_status("sdkc", sleeper.job_id) == "CANCELLED")
    assert c.queue("sdkc", all=True) == run(a.queue("sdkc", all=True))
    assert [j.status for j in c.queue("sdkc")] == ["CANCELLED", "SUCCEEDED"]

    history = c.events("sdkc")
    assert any(e.to_state == "UP" for e in history)
    assert len(run(a.events("sdkc", limit=1))) == 1
    [local] = c.check(["local"])
    assert local.infra == "local" and local.enabled and run(a.check(["local"])) == [local]
    assert [row.name for row in c.cost_report().rows] == ["sdkc"]
    assert [row.name for row in run(a.cost_report(all=True, days=1)).rows] == ["sdkc"]

    shell = c.ssh_command("sdkc", command="echo $HOME")
    assert run(a.ssh_command("sdkc", command="echo $HOME")) == shell
    out = subprocess.run(
        shell.argv, cwd=shell.cwd, env={**os.environ, **shell.env}, capture_output=True, text=True
    )
    assert out.stdout.strip() == str(stix.node_dir("sdkc"))

    c.autostop("sdkc", 45)
    assert c.status("sdkc")[0].autostop_idle_minutes == 45
    run(a.autostop("sdkc", None))
    assert run(a.status("sdkc"))[0].autostop_idle_minutes is None
    run(a.stop(all=True))
    assert c.status("sdkc")[0].status == "STOPPED"
    c.start("sdkc")
    assert run(a.status(["sdkc"]))[0].status == "UP"
    run(a.down("sdkc", purge=True))
    assert c.status() == [] and run(a.status()) == []


def test_errors_are_the_stix_errors_of_the_cli(stix: Stix) -> None:
    c, a = started(stix)
    with pytest.raises(ClusterNotFound):
        c.job_status("nope")
    with pytest.raises(ClusterNotFound):
        collect(a.logs("nope"))
    with pytest.raises(ClusterNotFound):
        run(a.events("nope"))
    with pytest.raises(InvalidRequest, match="must be a number"):
        c.show_gpus("A100:many")
    with pytest.raises(InvalidRequest, match="name the managed jobs to cancel"):
        run(a.jobs_cancel())
    with pytest.raises(JobNotFound):
        c.jobs_cancel([7])
    with pytest.raises(JobNotFound):
        collect(a.jobs_logs(7))
    with pytest.raises(InvalidConfig, match="does not exist"):
        c.launch("echo hi", "never", config=[stix.home / "missing.yaml"])
    assert c.status(all=True) == []
    with pytest.raises(InvalidRequest, match="tail must be from 0"):
        c.daemon_log(tail=-1)


def test_validate_and_bad_numbers_need_no_daemon(
    stix: Stix, task_file: Callable[[str], Path]
) -> None:
    c, a = Client(stix.home, autostart=False), AsyncClient(stix.home, autostart=False)
    good = task_file("run: echo ok\n")
    bad = task_file("resources:\n  cpus: lots\nrun: echo ok\n")
    missing = task_file("envs:\n  TOKEN: null\nrun: echo $TOKEN\n")
    reports = c.validate([good, bad, missing])
    assert [x.valid for x in reports] == [True, False, True]
    assert reports[1].errors and "cpus" in reports[1].errors[0]
    assert reports[2].warnings and "TOKEN" in reports[2].warnings[0]
    assert run(a.validate([good, bad, missing])) == reports
    assert c.validate(missing, env={"TOKEN": "x"})[0].warnings == []
    # numbers out of bounds are refused here, as the CLI's are, before any daemon is started
    with pytest.raises(InvalidRequest):
        Client(stix.home).cost_report(days=0)
    with pytest.raises(InvalidRequest):
        run(AsyncClient(stix.home).show_gpus("A100:inf"))
    assert stix.daemon_pid() is None


def test_the_daemon_itself_through_both_clients(stix: Stix) -> None:
    c, a = Client(stix.home, autostart=False), AsyncClient(stix.home, autostart=False)
    with pytest.raises(DaemonUnavailable):
        c.daemon_status()
    with pytest.raises(DaemonUnavailable):
        run(a.daemon_status())
    assert c.daemon_stop() is False
    info = run(a.daemon_start())
    assert info.pid == stix.daemon_pid() and Path(info.home) == stix.home
    assert c.daemon_start().pid == info.pid  # already running: the same daemon
    assert c.daemon_status() == run(a.daemon_status())
    assert c.daemon_log(tail=5) == run(a.daemon_log(tail=5)) and len(c.daemon_log(tail=5)) <= 5
    assert c.daemon_log(tail=1000)  # it logged its start
    assert run(a.daemon_stop()) is True
    assert stix.daemon_pid() is None and c.daemon_stop() is False
    info = c.daemon_start()
    assert c.daemon_stop() is True


def test_leaks_and_ssh_pools_on_a_machine_with_no_cloud(stix: Stix) -> None:
    c, a = started(stix)
    found = c.leaks()
    assert isinstance(found, m.LeakList) and found.leaks == []
    assert run(a.terminate_leaks()).terminated == [] and c.terminate_leaks(["i-0"]).terminated == []
    with pytest.raises(InvalidRequest, match="no SSH node pools"):
        c.ssh_pools("status")
    # a host where nothing listens: probed, reported, not ready
    (stix.home / "ssh_node_pools.yaml").write_text(
        "box:\n  user: nobody\n  hosts: [{ip: 127.0.0.1, port: 9}]\n"
    )
    report = c.ssh_pools("up", "box")
    [host] = report.rows
    assert isinstance(host, r.SshHost) and (host.pool, host.reachable, host.ok) == (
        "box",
        False,
        False,
    )
    assert not report.ok and host.error
    status = run(a.ssh_pools("status"))
    assert [(x.pool, x.host) for x in status.rows] == [("box", host.host)] and status.ok


@needs_catalogs
def test_show_gpus_and_catalog_status_are_typed_rows(stix: Stix) -> None:
    stix.env["STIX_CATALOG_DIR"] = str(SHARED)
    c, a = started(stix)
    report = c.show_gpus("A100:8")
    offers = [x for x in report.rows if isinstance(x, r.GpuOfferRow)]
    aws = [x for x in offers if x.cloud == "aws" and x.accelerator == "A100"]
    assert aws and aws[0].instance_type == "p4d.24xlarge" and aws[0].count == 8
    assert run(a.show_gpus("A100", 8)) == report
    common = c.show_gpus()
    assert any(isinstance(x, r.GpuCountRow) and x.accelerator == "A100" for x in common.rows)
    assert "COMMON_GPU" in common.text
    clouds = [x.cloud for x in c.catalog_status().rows]
    assert "aws" in clouds and [x.cloud for x in run(a.catalog_status()).rows] == clouds


@pytest.fixture
def mirror() -> Iterator[str]:
    """A catalog mirror on 127.0.0.1 serving the shared files, as the public URL would."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(SHARED))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@needs_catalogs
def test_catalog_update_reports_each_file(stix: Stix, mirror: str) -> None:
    stix.env["STIX_CATALOG_URL"] = mirror
    c, a = started(stix)
    [fetched] = [x for x in c.catalog_update(["hyperbolic"]).rows if "hyperbolic" in x.file]
    assert fetched.ok and fetched.size and fetched.age_seconds is not None
    report = run(a.catalog_update(["nebius"]))
    assert report.ok and any("nebius/vms.csv" in x.file for x in report.rows)
    assert {"hyperbolic", "nebius"} <= {x.cloud for x in c.catalog_status().rows}


# -- managed jobs and pools, on the `fake` infra ---------------------------------------------


def fake_task(name: str) -> Task:
    return Task(
        name=name,
        run="python train.py",
        resources=Resources(infra="fake"),
        envs={"STIX_FAKE_RUN_SECONDS": "3600"},
    )


def states(c: Client) -> dict[int, str]:
    return {j.job_id: j.status for j in c.jobs_queue(all=True)}


def test_managed_jobs_through_both_clients(stix: Stix, task_file: Callable[[str], Path]) -> None:
    fake_daemon(stix)
    c, a = started(stix)
    path = task_file(
        "name: mj\nresources:\n  infra: fake\nenvs:\n  STIX_FAKE_RUN_SECONDS: '3600'\n"
        "run: python train.py\n"
    )
    first = c.jobs_launch(path)
    assert (first.job_id, first.name) == (1, "mj")
    second = run(a.jobs_launch(fake_task("amj")))
    assert (second.job_id, second.name) == (2, "amj")
    wait_until(lambda: states(c) == {1: "RUNNING", 2: "RUNNING"}, timeout=30, interval=0.1)
    [job] = [j for j in run(a.jobs_queue()) if j.job_id == 1]
    assert isinstance(job, m.ManagedJobRecord) and job.infra == "fake/fake-1"
    assert c.jobs_status(1) == "RUNNING" and run(a.jobs_status(name="amj")) == "RUNNING"
    assert "".join(c.jobs_logs(1, controller=True))
    assert collect(a.jobs_logs(name="amj", controller=True))

    cancelled = c.jobs_cancel([1])
    assert [x.job_id for x in cancelled.rows] == [1] and cancelled.rows[0].message
    assert [x.job_id for x in run(a.jobs_cancel(name="amj")).rows] == [2]
    wait_until(lambda: states(c) == {1: "CANCELLED", 2: "CANCELLED"}, timeout=30, interval=0.1)
    assert c.jobs_queue(skip_finished=True) == [] and run(a.jobs_queue(skip_finished=True)) == []
    assert c.jobs_status() == "CANCELLED"  # the latest job
    with pytest.raises(JobNotFound, match="no managed job named 'nope'"):
        run(a.jobs_status(name="nope"))


def test_pools_through_both_clients(stix: Stix) -> None:
    # a pool's workers on `local`: the fake infra's workers never finish their setup
    c, a = started(stix)
    assert c.pool_apply(Task(name="p", resources=Resources(cpus="1+"), pool={"workers": 1}))

    def ready() -> r.PoolRecord | None:
        rows = c.pool_status().rows
        return rows[0] if rows and rows[0].status == "READY" else None

    record = wait_until(ready, timeout=60, interval=0.1)
    assert record.pool == "p" and [w.worker for w in record.workers] == ["p-0"]
    assert run(a.pool_status("p")).rows == [record]
    launched = run(a.jobs_launch(Task(run="sleep 600"), pool="p", num_jobs=2))
    assert launched.job_ids == [1, 2]

    def busy() -> bool:
        [pool] = c.pool_status("p").rows
        return pool.queued_jobs == [2] and pool.workers[0].job_id == 1

    wait_until(busy, timeout=60, interval=0.1)
    assert [x.job_id for x in c.jobs_cancel(all=True).rows] == [1, 2]
    wait_until(lambda: set(states(c).values()) == {"CANCELLED"}, timeout=60, interval=0.1)
    down = run(a.pool_down("p"))
    assert down.rows == [r.PoolRef(pool="p")] and down.text
    wait_until(lambda: c.pool_status().rows == [], timeout=60, interval=0.1)
    assert c.pool_down(all=True).rows == []
