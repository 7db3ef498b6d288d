"""Task files through the CLI: validate, --env/--secret, resource flags, launch --dryrun."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tests.conftest import REPO, Stix
from tests.shared_data import needs

SHARED = Path(os.environ.get("STIX_SHARED") or REPO.parent / "shared")
CATALOGS = Path(os.environ.get("STIX_CATALOG_DIR") or SHARED / "catalogs")
CORPUS = SHARED / "compat" / "skypilot-yamls"


def needs_shared(test: Any) -> Any:
    return needs(CATALOGS / "v8", "shared catalogs")(needs(CORPUS, "compat corpus")(test))


def test_validate_judges_files_without_a_daemon(stix: Stix, task_file) -> None:
    good = task_file("name: ok\nrun: echo hi\n")
    warn = task_file("run: echo $NEEDED\nenvs:\n  NEEDED: null\nworkdir: /no/such/dir\n")
    bad = task_file("resources:\n  accelerators: A1OO:8\n")
    ok = stix.run("validate", str(good), str(warn))
    assert ok.returncode == 0, ok.stderr
    assert "envs.NEEDED" in ok.stderr and "/no/such/dir" in ok.stderr  # warnings, not errors
    failed = stix.run("validate", str(good), str(bad))
    assert failed.returncode == 2
    assert "resources.accelerators: unknown accelerator 'A1OO' (did you mean 'A100'?)" in (
        failed.stderr
    )
    report = json.loads(stix.run("validate", "--json", str(good), str(bad)).stdout)
    assert [r["valid"] for r in report] == [True, False]
    assert stix.daemon_pid() is None  # validate never started the daemon


@needs_shared
def test_validate_every_corpus_file(stix: Stix) -> None:
    files = sorted(str(p) for p in CORPUS.glob("*.y*ml"))
    out = stix.run("validate", "--json", *files, timeout=120)
    report = json.loads(out.stdout)
    assert out.returncode == 0 and all(r["valid"] for r in report)
    assert len(report) == len(files)


def test_launch_refuses_what_validate_warns_about_with_the_same_sentence(
    stix: Stix, task_file
) -> None:
    path = task_file("run: echo token=$TOKEN\nsecrets:\n  TOKEN: null\n")
    warned = stix.run("validate", str(path))
    refused = stix.run("launch", "-c", "s", str(path))
    assert refused.returncode == 2
    sentence = refused.stderr.strip().removeprefix("stixctl: ")
    assert "secrets.TOKEN" in sentence and "--secret TOKEN" in sentence
    assert sentence.split(": ", 1)[-1] in warned.stderr
    ok = stix.run("launch", "-c", "s", "--secret", "TOKEN=abc", str(path), check=True)
    assert "token=abc" in ok.stdout


def test_env_override_substitutes_into_file_mounts(stix: Stix, tmp_path: Path, task_file) -> None:
    (tmp_path / "data-b.txt").write_text("bee")
    path = task_file(
        f"envs:\n  WHICH: a\nfile_mounts:\n  ~/in.txt: {tmp_path}/data-$WHICH.txt\n"
        "run: cat ~/in.txt\n"
    )
    out = stix.run("launch", "-c", "sub", "--env", "WHICH=b", str(path), check=True)
    assert "bee" in out.stdout


def test_resource_flags_override_the_file(stix: Stix, task_file) -> None:
    path = task_file("resources:\n  cpus: 1+\nrun: echo fine\n")
    too_big = stix.run("launch", "-c", "big", "--cpus", "4096", str(path))
    assert too_big.returncode == 2 and "resources.cpus" in too_big.stderr
    nodes = stix.run("launch", "-c", "two", "--num-nodes", "2", str(path), check=True)
    assert nodes.stdout.count("fine") == 2


def test_dryrun_on_the_local_infra_launches_nothing(stix: Stix) -> None:
    out = stix.run("launch", "--dryrun", "-c", "dry", "examples/hello.yaml", cwd=REPO, check=True)
    assert "local" in out.stdout and "✔" in out.stdout
    assert stix.clusters() == {}
    plan = json.loads(stix.run("launch", "--dryrun", "--json", "echo", check=True).stdout)
    assert plan["chosen"]["cloud"] == "local" and plan["chosen"]["hourly_cost"] == 0
    gpu = stix.run("launch", "--dryrun", "--gpus", "A100:8", "echo")
    assert gpu.returncode == 5 and "nothing fits" in gpu.stderr


@needs_shared
def test_dryrun_all_clouds_json_for_a_task_and_a_pipeline(stix: Stix) -> None:
    stix.env["STIX_CATALOG_DIR"] = str(CATALOGS)
    one = stix.run(
        "launch", "--dryrun", "--all-clouds", "--json", str(CORPUS / "llm__vllm__service.yaml")
    )
    plan = json.loads(one.stdout)
    assert set(plan["chosen"]) == {
        "cloud",
        "region",
        "zone",
        "instance_type",
        "accelerators",
        "use_spot",
        "hourly_cost",
    }
    assert plan["candidates"] and plan["candidates"][0] == plan["chosen"]
    pipe = json.loads(
        stix.run(
            "launch",
            "--dryrun",
            "--all-clouds",
            "--json",
            str(CORPUS / "llm__gpt-2__gpt2-pipeline.yaml"),
            check=True,
        ).stdout
    )
    assert isinstance(pipe["chosen"], list) and len(pipe["chosen"]) == 2
    spot = json.loads(
        stix.run(
            "launch",
            "--dryrun",
            "--all-clouds",
            "--json",
            "--gpus",
            "A100:8",
            "--use-spot",
            "echo",
            check=True,
        ).stdout
    )
    assert spot["chosen"]["use_spot"] is True and spot["chosen"]["accelerators"] == "A100:8"
    none = stix.run("launch", "--dryrun", "--all-clouds", "--gpus", "H100:16", "echo")
    assert none.returncode == 5 and "H100:16 is not offered" in none.stderr
