"""Small SkyPilot habits: validate's exit code, --version, shell completion, --env names,
show-gpus and check on this build, local.max_nodes, zone names, the README's exit codes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.awsbed import AwsBed, aws_fixtures
from tests.conftest import REPO, Stix
from tests.shared_data import needs


def test_validate_json_exits_like_validate_when_a_file_is_invalid(stix: Stix, task_file) -> None:
    good = task_file("run: echo hi\n")
    broken = task_file("run: [\n")
    unknown = task_file("rnu: echo hi\n")
    for bad in (broken, unknown):
        plain = stix.run("validate", str(good), str(bad))
        as_json = stix.run("validate", "--json", str(good), str(bad))
        assert plain.returncode == as_json.returncode == 2, as_json.stderr
        assert [r["valid"] for r in json.loads(as_json.stdout)] == [True, False]
    assert stix.run("validate", "--json", str(good)).returncode == 0


def test_version_prints_the_release_without_a_daemon(stix: Stix) -> None:
    release = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    out = stix.run("--version")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[:2] == ["stixctl", release]
    assert stix.daemon_pid() is None


@pytest.mark.parametrize(
    ("argv", "source"),
    [
        (["launch", "--dryrun", "--env", "1BAD=x", "echo", "hi"], "--env: envs.1BAD"),
        (["exec", "c1", "--env", "A-B=x", "echo", "hi"], "--env: envs.A-B"),
        (["launch", "--dryrun", "--secret", "A.B=x", "echo", "hi"], "--secret: secrets.A.B"),
        (["jobs", "launch", "--env", "=x", "echo", "hi"], "--env: envs.:"),
    ],
)
def test_env_names_on_the_command_line_follow_the_task_file_rule(
    stix: Stix, task_file, argv: list[str], source: str
) -> None:
    refused = stix.run(*argv)
    assert refused.returncode == 2
    line = refused.stderr.strip()
    assert line.startswith(f"stixctl: {source}") and "\n" not in line
    # the same sentence a task file gets for the same name
    name = source.split(".", 1)[1].rstrip(":")
    key = "secrets" if "secret" in source else "envs"
    from_file = stix.run("validate", str(task_file(f"run: echo\n{key}:\n  '{name}': x\n")))
    assert line.split(": ", 2)[2] in from_file.stderr
    assert stix.daemon_pid() is None


def test_env_file_names_are_checked_too(stix: Stix, tmp_path: Path) -> None:
    dotenv = tmp_path / "vars.env"
    dotenv.write_text("GOOD=1\n2BAD=2\n")
    refused = stix.run("launch", "--dryrun", "--env-file", str(dotenv), "echo", "hi")
    assert refused.returncode == 2
    assert f"--env-file {dotenv}: envs.2BAD: not a valid environment variable name" in (
        refused.stderr
    )


# -- completion ----------------------------------------------------------------------------------


@pytest.fixture
def on_path(stix: Stix, tmp_path: Path) -> dict[str, str]:
    """`stixctl` on PATH as this checkout's client, as the completion scripts call it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "stixctl"
    script.write_text(f'#!/bin/sh\nexec {sys.executable} -m stixctl "$@"\n')
    script.chmod(0o755)
    return {**stix.env, "PATH": f"{bin_dir}:{stix.env.get('PATH', '')}"}


def _bash_complete(env: dict[str, str], words: list[str], cwd: Path) -> list[str]:
    quoted = " ".join("'" + w.replace("'", "'\\''") + "'" for w in words)
    script = (
        f"source <(stixctl completion bash); COMP_WORDS=({quoted}); "
        f"COMP_CWORD={len(words) - 1}; _stixctl; printf '%s\\n' \"${{COMPREPLY[@]}}\""
    )
    out = subprocess.run(
        ["bash", "-c", script], env=env, capture_output=True, text=True, timeout=60, cwd=cwd
    )
    assert out.returncode == 0, out.stderr
    return [line for line in out.stdout.splitlines() if line]


def test_bash_completion_completes_commands_actions_flags_and_choices(
    stix: Stix, on_path: dict[str, str]
) -> None:
    def complete(*words: str) -> list[str]:
        return _bash_complete(on_path, ["stixctl", *words], stix.home)

    assert complete("lau") == ["launch"]
    assert {"launch", "jobs", "status", "show-gpus", "completion"} <= set(complete(""))
    assert complete("jobs", "") == ["launch", "queue", "cancel", "logs", "pool"]
    assert complete("jobs", "pool", "") == ["apply", "status", "down"]
    assert complete("jobs", "launch", "--num") == ["--num-nodes", "--num-jobs"]
    assert complete("launch", "--minimize", "") == ["cost", "time"]
    assert complete("launch", "--gpus", "A100", "--dry") == ["--dryrun"]
    assert complete("completion", "") == ["bash", "zsh", "fish"]
    assert complete("--vers") == ["--version"]
    (stix.home / "mytask.yaml").write_text("run: echo\n")
    assert complete("validate", "myt") == ["mytask.yaml"]
    assert stix.daemon_pid() is None  # a TAB never starts the daemon


def test_bash_completion_offers_the_clusters_of_a_running_daemon(
    stix: Stix, on_path: dict[str, str]
) -> None:
    stix.run("launch", "-y", "-c", "dev-box", "echo", "hi", check=True)
    assert _bash_complete(on_path, ["stixctl", "down", "dev"], stix.home) == ["dev-box"]
    assert _bash_complete(on_path, ["stixctl", "launch", "-c", ""], stix.home) == ["dev-box"]
    assert _bash_complete(on_path, ["stixctl", "ssh", ""], stix.home) == [
        "up",
        "down",
        "status",
        "dev-box",
    ]


@pytest.mark.parametrize(("shell", "check"), [("zsh", ["zsh", "-n"]), ("fish", ["fish", "-n"])])
def test_zsh_and_fish_scripts_are_valid(stix: Stix, shell: str, check: list[str]) -> None:
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed")
    script = stix.run("completion", shell, check=True).stdout
    out = subprocess.run([*check], input=script, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr


def test_completion_refuses_an_unknown_shell(stix: Stix) -> None:
    out = stix.run("completion", "tcsh")
    assert out.returncode == 2 and "invalid choice" in out.stderr


def test_readme_lists_every_exit_code_stixctl_uses() -> None:
    from stixctl import main, signals, validate
    from stixproto import errors

    used = {0, 1, 2, 130, signals.EXIT_FAILED, signals.EXIT_NOT_FINISHED, main.EXIT_NO_FIT}
    used |= set(signals.EXIT_FOR_STATUS.values()) | {validate.EXIT_INVALID}
    used |= {
        cls.exit_code
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, errors.StixError)
    }
    text = (REPO / "README.md").read_text()
    table = text[text.index("### Exit codes") :].split("\n\n")[2]
    listed = {
        int(code)
        for row in table.splitlines()[2:]
        for code in row.split("|")[1].replace("/", " ").split()
    }
    assert used <= listed, f"not in the README's table: {sorted(used - listed)}"


def test_local_max_nodes_refuses_a_bigger_launch_and_the_planner_skips_local(stix: Stix) -> None:
    stix.env["STIX__LOCAL__MAX_NODES"] = "2"
    refused = stix.run("launch", "-y", "-c", "big", "--num-nodes", "3", "echo", "hi")
    assert refused.returncode == 2
    assert refused.stderr.strip() == (
        "stixctl: num_nodes: local runs at most 2 node(s) (local.max_nodes in the config), "
        "the task asks for 3"
    )
    assert "big" not in stix.clusters()
    plan = stix.run("launch", "--dryrun", "--num-nodes", "3", "echo", "hi")
    assert plan.returncode == 5
    assert "local runs at most 2 node(s)" in plan.stdout and "✔" not in plan.stdout
    fits = stix.run("launch", "--dryrun", "--num-nodes", "2", "echo", "hi")
    assert fits.returncode == 0 and "✔" in fits.stdout


def test_check_names_every_infra_and_says_which_this_build_lacks(stix: Stix) -> None:
    from stixd.planner.catalog import KNOWN_CLOUDS

    rows = {c["infra"]: c for c in stix.json("check")}
    assert [*rows][:3] == ["local", "ssh", "aws"] and "fake" not in rows
    assert rows["local"]["enabled"] is True
    assert {*KNOWN_CLOUDS, "kubernetes"} <= set(rows)
    lacking = [name for name, c in rows.items() if c["reason"] == "not supported in this build yet"]
    assert {"gcp", "azure", "nebius"} <= set(lacking)
    assert not {"local", "ssh", "aws", "kubernetes"} & set(lacking)
    text = stix.run("check", check=True).stdout
    assert "INFRA" in text and "\naws " in text
    assert f"Not supported in this build yet: {', '.join(lacking)}" in text
    assert stix.run("check", "gcp", check=True).stdout.strip() == (
        "Not supported in this build yet: gcp"
    )


def test_check_lists_the_fake_infra_only_when_it_is_enabled(stix: Stix) -> None:
    stix.env["STIX__FAKE__ENABLED"] = "true"
    rows = {c["infra"]: c for c in stix.json("check")}
    assert rows["fake"]["reason"] != "not supported in this build yet"


def test_show_gpus_infra_local_lists_this_machine_without_a_catalog(stix: Stix) -> None:
    import os

    rows = stix.json("show-gpus", "--infra", "local")
    assert len(rows) == 1
    machine = rows[0]
    assert machine["type"] == "machine" and machine["infra"] == "local"
    assert machine["vcpus"] == os.cpu_count() and machine["memory_gib"] > 0
    assert machine["accelerator"] is None and machine["price"] == 0.0
    text = stix.run("show-gpus", "--infra", "local", check=True).stdout
    assert text.splitlines()[0].split() == ["INFRA", "vCPUs", "HOST_MEM", "GPUS", "HOURLY_PRICE"]
    assert text.splitlines()[1].split()[:2] == ["local", str(os.cpu_count())]
    missing = stix.run("show-gpus", "A100:8", "--infra", "local", check=True).stdout
    assert "'A100' not found on local: this machine has no accelerators" in missing
    assert not (stix.home / "catalogs").exists()  # nothing was fetched for it


# -- zone names --------------------------------------------------------------------------------

aws_server, aws = aws_fixtures()
SHARED_CATALOGS = Path(os.environ.get("STIX_CATALOG_DIR") or REPO.parent / "shared" / "catalogs")


@needs(SHARED_CATALOGS / "v8" / "aws", "shared catalogs")
def test_spot_rows_of_a_plan_show_zone_names_where_the_account_mapping_is_known(
    stix: Stix,
) -> None:
    stix.env["STIX_CATALOG_DIR"] = str(SHARED_CATALOGS)
    argv = ("launch", "--dryrun", "--all-clouds", "--gpus", "A100:8", "--use-spot", "echo")

    def aws_zone() -> str:
        reply = json.loads(stix.run(*argv, "--json", check=True).stdout)
        return next(c["zone"] for c in reply["candidates"] if c["cloud"] == "aws")

    zone_id = aws_zone()
    assert zone_id.startswith("use1-az")  # the catalog's: an ID
    mapping = stix.home / "catalogs" / "v8" / "aws" / "az_mappings.csv"
    mapping.parent.mkdir(parents=True)
    mapping.write_text(f"AvailabilityZoneName,AvailabilityZone\nus-east-1x,{zone_id}\n")
    assert aws_zone() == "us-east-1x"
    row = next(line for line in stix.run(*argv, check=True).stdout.splitlines() if "AWS" in line)
    assert "us-east-1x" in row and zone_id not in row


@pytest.mark.anyio
async def test_the_aws_provider_keeps_the_accounts_zone_names(aws: AwsBed, tmp_path: Path) -> None:
    from stixd.planner.catalog import open_catalog
    from stixd.planner.zone_names import zone_names_of
    from stixd.providers.aws import AwsProvider

    env = {**aws.env, "HOME": "/nonexistent", "AWS_CONFIG_FILE": "/nonexistent/config"}
    provider = AwsProvider(tmp_path, env)
    assert (await provider.check()).enabled
    await provider.aclose()
    told = aws.ec2("describe_availability_zones")["AvailabilityZones"]
    names = zone_names_of(open_catalog(tmp_path, {}), ["aws"])["aws"]
    assert names == {z["ZoneId"]: z["ZoneName"] for z in told} and names
