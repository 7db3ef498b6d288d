"""What a task means: parsed views, env substitution, overrides, pipelines, secrets, the SDK."""

from __future__ import annotations

import argparse
import json
import textwrap
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml

from stixctl.validate import add_args
from stixproto import accelerators
from stixproto import messages as m
from stixproto.errors import InvalidTask
from stixproto.task import (
    Accelerator,
    Amount,
    Autostop,
    Dag,
    Placement,
    ResourceOverrides,
    Resources,
    Task,
    apply_env_overrides,
    apply_overrides,
    from_yaml,
    launch_problems,
    load_dag_file,
    load_task_file,
    missing_envs,
    missing_secrets,
    redacted,
    resolved_envs,
    to_dict,
    to_yaml,
)
from stixproto.task.resources import (
    accelerator_choice,
    autostop_spec,
    candidates,
    cpus_amount,
    disk_size_gb,
    memory_amount,
    placement,
    port_ranges,
    recovery,
)
from stixproto.task.service import effective_probe, effective_scaling


def task(text: str, **kw: Any) -> Task:
    parsed = from_yaml(textwrap.dedent(text), "t.yaml", **kw)
    assert isinstance(parsed, Task)
    return parsed


def resources(text: str) -> Resources:
    res = task(f"resources: {text}").resources
    assert res is not None
    return res


# -- accelerators ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "candidates", "ordered"),
    [
        ("A100:8", [("A100", 8)], False),
        ("K80:0.5", [("K80", 0.5)], False),
        ("tpu-v2-8", [("tpu-v2-8", 1)], False),
        ("TPU-V5LITEPOD-16", [("tpu-v5litepod-16", 1)], False),
        ("h100-sxm:8", [("H100", 8)], False),
        ("a100-80gb", [("A100-80GB", 1)], False),
        ("{V100: null}", [("V100", 1)], False),
        ("{A100: 2}", [("A100", 2)], False),
        ("{L4, A10g}", [("L4", 1), ("A10G", 1)], False),
        ("{'A100:1', 'T4:1'}", [("A100", 1), ("T4", 1)], False),
        ("['A100-40GB:1', 'T4:1']", [("A100-40GB", 1), ("T4", 1)], True),
        ("[{T4: 1}, 'V100:2', {A100: 1}]", [("T4", 1), ("V100", 2), ("A100", 1)], True),
    ],
)
def test_every_accelerator_shape_parses_to_candidates(
    written: str, candidates: list[tuple[str, float]], ordered: bool
) -> None:
    res = resources(f"{{accelerators: {written}}}")
    choice = accelerator_choice(res)
    assert choice is not None
    assert [(a.name, a.count) for a in choice.candidates] == candidates
    assert choice.ordered is ordered
    assert res.accelerators == yaml.safe_load(written)  # the shape as written is kept


def test_accelerator_lookup_is_case_insensitive_with_aliases_and_tpu_patterns() -> None:
    assert accelerators.lookup("a10g") == "A10G"
    assert accelerators.lookup("H100-SXM") == "H100"
    assert accelerators.lookup("gaudi hl-205") == "Gaudi HL-205"
    assert accelerators.lookup("tpu-v6e-4") == "tpu-v6e-4"
    assert accelerators.lookup("tpu-v6e-0") is None
    assert accelerators.lookup("A1OO") is None
    assert accelerators.suggest("A1OO") == "A100"
    assert accelerators.suggest("h10o") == "H100"
    assert accelerators.suggest("zzzz") is None


def test_the_resources_constructor_takes_an_accelerator_string() -> None:
    res = Resources(accelerators="A100:8", cpus="8+")
    choice = accelerator_choice(res)
    assert choice is not None and choice.candidates == (Accelerator("A100", 8),)
    assert cpus_amount(res) == Amount(8.0, at_least=True)


# -- other resource views ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cpus", "memory", "want_cpus", "want_memory"),
    [
        ("4+", "32+", Amount(4, True), Amount(32, True)),
        (0.5, 0.1, Amount(0.5), Amount(0.1)),
        (2, "1024MB", Amount(2), Amount(1.0)),
        ("8", "64GB+", Amount(8), Amount(64, True)),
        ("16+", "1tb", Amount(16, True), Amount(1024)),
    ],
)
def test_cpus_and_memory_read_as_amount_and_at_least(
    cpus: Any, memory: Any, want_cpus: Amount, want_memory: Amount
) -> None:
    res = Resources(cpus=cpus, memory=memory)
    assert cpus_amount(res) == want_cpus and memory_amount(res) == want_memory


def test_ports_disk_and_placement_views() -> None:
    res = resources("{ports: [8080, '10052-10100'], disk_size: 1TB, infra: AWS/us-east-1}")
    assert port_ranges(res) == [(8080, 8080), (10052, 10100)]
    assert disk_size_gb(res) == 1024
    assert placement(res) == Placement("aws", "us-east-1", None)
    assert port_ranges(Resources(ports=None)) == []
    assert placement(Resources(infra="*/us-east-1")) == Placement(None, "us-east-1", None)
    assert placement(Resources(infra="aws/*/us-east-1a")) == Placement("aws", None, "us-east-1a")
    context = "arn:aws:eks:us-east-1:123456789012:cluster/my-cluster"
    assert placement(Resources(infra=f"k8s/{context}")) == Placement("kubernetes", context)
    assert placement(Resources(cloud="GCP", zone="us-central1-a")) == Placement(
        "gcp", None, "us-central1-a"
    )


@pytest.mark.parametrize(
    ("written", "spec"),
    [
        ("true", Autostop(True, 5)),
        ("false", Autostop(False)),
        ("10", Autostop(True, 10)),
        ("10m", Autostop(True, 10)),
        ("2h", Autostop(True, 120)),
        ("1d", Autostop(True, 1440)),
        ("1w", Autostop(True, 10080)),
        ("{idle_minutes: 3, down: true}", Autostop(True, 3, down=True)),
        ("{down: true, wait_for: JOBS}", Autostop(True, 5, down=True, wait_for="jobs")),
    ],
)
def test_autostop_reads_as_idle_minutes_and_down(written: str, spec: Autostop) -> None:
    assert autostop_spec(resources(f"{{autostop: {written}}}")) == spec


def test_job_recovery_strategies_are_case_insensitive_and_keep_plugin_keys() -> None:
    failover = recovery(resources("{job_recovery: failover}"))
    assert failover is not None and failover.strategy == "FAILOVER"
    rec = recovery(
        resources(
            "{job_recovery: {strategy: DYNAMIC_NODE_SET, min_nodes: 2, recover_on_exit_codes: 33}}"
        )
    )
    assert rec is not None
    assert (rec.strategy, rec.recover_on_exit_codes, rec.extra) == (
        "DYNAMIC_NODE_SET",
        (33,),
        {"min_nodes": 2},
    )
    legacy = recovery(resources("{spot_recovery: EAGER_NEXT_REGION}"))
    assert legacy is not None and legacy.strategy == "EAGER_NEXT_REGION"
    retries = recovery(resources("{job_recovery: {max_restarts_on_errors: 3}}"))
    assert retries is not None and retries.max_restarts_on_errors == 3


def test_alternatives_merge_over_the_base_keys() -> None:
    res = resources(
        "{cloud: gcp, cpus: 2+, any_of: [{zone: us-central1-a}, {region: us-east1, use_spot: yes}]}"
    )
    first, second = candidates(res)
    assert placement(first) == Placement("gcp", None, "us-central1-a") and first.cpus == "2+"
    assert placement(second) == Placement("gcp", "us-east1") and second.use_spot is True
    assert not res.is_ordered and resources("{ordered: [{cpus: 1}]}").is_ordered
    entry_infra = candidates(resources("{cloud: aws, region: us-east-1, any_of: [{infra: gcp}]}"))
    assert placement(entry_infra[0]) == Placement("gcp")


# -- service, storage --------------------------------------------------------------------------


def test_service_defaults_and_shorthands() -> None:
    bare = task("service: {replicas: 2}\nrun: serve\n").service
    assert bare is not None
    probe = effective_probe(bare)
    assert (probe.path, probe.method, probe.initial_delay_seconds, probe.timeout_seconds) == (
        "/",
        "GET",
        1200,
        15,
    )
    assert (
        effective_scaling(bare).min_replicas,
        effective_scaling(bare).max_replicas,
        bare.lb_policy,
    ) == (
        2,
        2,
        "least_load",
    )
    full = task(
        """
        service:
          readiness_probe:
            path: /v1/models
            post_data: {model: m}
            headers: {Authorization: Bearer x}
          replica_policy: {min_replicas: 0, max_replicas: 3, target_qps_per_replica: 2.5}
          load_balancing_policy: ROUND_ROBIN
        """
    ).service
    assert full is not None
    assert effective_probe(full).method == "POST" and effective_probe(full).headers == {
        "Authorization": "Bearer x"
    }
    scaling = effective_scaling(full)
    assert (scaling.min_replicas, scaling.max_replicas, scaling.autoscales) == (0, 3, True)
    assert (scaling.upscale_delay_seconds, scaling.downscale_delay_seconds) == (300, 1200)
    assert full.lb_policy == "round_robin"
    string_json = task("service: {readiness_probe: {path: /x, post_data: '{\"a\": 1}'}}").service
    assert string_json is not None and effective_probe(string_json).post_data == {"a": 1}


def test_storage_mode_defaults_to_mount_and_ignores_case() -> None:
    t = task(
        """
        file_mounts:
          /a: {name: bucket-a}
          /b: {source: s3://bucket-b, mode: copy}
          /c: {name: c, source: [./x, ./y], mode: Mount_Cached, persistent: false}
          /d: gs://bucket-d
          /e: https://acct.blob.core.windows.net/container/path
        """
    )
    mounts = t.storage_mounts()
    assert [s.mount_mode for s in mounts.values()] == ["MOUNT", "COPY", "MOUNT_CACHED"]
    assert mounts["/c"].sources() == ["./x", "./y"] and not mounts["/c"].is_persistent
    assert t.copy_mounts() == {
        "/d": "gs://bucket-d",
        "/e": "https://acct.blob.core.windows.net/container/path",
    }


# -- substitution ----------------------------------------------------------------------------


SUBSTITUTING = """
envs:
  BUCKET: my-bucket
  SIZE: 7
  MODEL: llama
  UNSET: null
secrets:
  TOKEN: s3cret
workdir: ~/code/$MODEL
file_mounts:
  /ckpt/${SIZE}b: s3://weights/${MODEL}-${SIZE}b
  /data:
    name: $BUCKET-data
    source:
      - ~/data/${MODEL}
  /out: $UNSET/out
  /keep: ${NOT_AN_ENV}/x
volumes:
  /mnt/v: ${BUCKET}-vol
service:
  readiness_probe:
    path: /v1/models
    post_data: {model: $MODEL}
    headers: {Authorization: Bearer $TOKEN}
  replicas: 1
setup: echo $MODEL
run: echo ${MODEL}
"""


def test_envs_are_substituted_where_skypilot_substitutes_them() -> None:
    t = task(SUBSTITUTING)
    assert t.envs == {"BUCKET": "my-bucket", "SIZE": "7", "MODEL": "llama", "UNSET": None}
    assert t.workdir == "~/code/llama"
    assert t.file_mounts["/ckpt/7b"] == "s3://weights/llama-7b"
    data = t.storage_mounts()["/data"]
    assert data.name == "my-bucket-data" and data.source == ["~/data/llama"]
    assert t.file_mounts["/out"] == "$UNSET/out" and t.file_mounts["/keep"] == "${NOT_AN_ENV}/x"
    assert t.volumes == {"/mnt/v": "my-bucket-vol"}
    assert t.service is not None
    assert effective_probe(t.service).post_data == {"model": "llama"}
    assert effective_probe(t.service).headers == {"Authorization": "Bearer s3cret"}
    assert (t.setup, t.run) == ("echo $MODEL", "echo ${MODEL}")


def test_command_line_envs_apply_before_substitution() -> None:
    t = task(SUBSTITUTING, env_overrides={"MODEL": "mistral", "UNSET": "/tmp"})
    assert t.workdir == "~/code/mistral" and t.file_mounts["/out"] == "/tmp/out"
    assert t.envs["MODEL"] == "mistral" and missing_envs(t) == []


def test_an_env_supplied_after_loading_fills_the_places_left_unset(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("envs: {DIR: null}\nworkdir: $DIR\nrun: ls\n")
    t = load_task_file(path)
    assert t.workdir == "$DIR" and missing_envs(t) == ["DIR"]
    assert launch_problems(t)[0] == "envs.DIR: required but not set; pass it with --env DIR=VALUE"
    filled = apply_env_overrides(t, {"DIR": str(tmp_path)})
    assert filled.workdir == str(tmp_path) and launch_problems(filled) == []


def test_secrets_null_missing_and_redacted() -> None:
    t = task("envs: {A: 1}\nsecrets: {TOKEN: null, KEY: abc}\nrun: x\n")
    assert missing_envs(t) == [] and missing_secrets(t) == ["TOKEN"]
    assert launch_problems(t) == [
        "secrets.TOKEN: required but not set; pass it with --secret TOKEN=VALUE"
    ]
    supplied = task(
        "envs: {A: 1}\nsecrets: {TOKEN: null, KEY: abc}\n", secret_overrides={"TOKEN": "t"}
    )
    assert resolved_envs(supplied) == {"A": "1", "TOKEN": "t", "KEY": "abc"}
    shown = redacted(supplied)
    assert shown.secrets == {"TOKEN": "<redacted>", "KEY": "<redacted>"} and shown.envs == {
        "A": "1"
    }
    assert "abc" not in to_yaml(shown)
    names = task("secrets: [HF_TOKEN, secrets:WANDB]\n")
    assert names.secrets == ["HF_TOKEN", "secrets:WANDB"] and redacted(names) == names


# -- overrides ------------------------------------------------------------------------------


OVERRIDES: list[tuple[str, ResourceOverrides, dict[str, Any]]] = [
    # --gpus replaces a whole candidate set or list
    (
        "{accelerators: {A100: 1, T4: 1}}",
        ResourceOverrides(gpus="H100:8"),
        {"accelerators": "H100:8"},
    ),
    (
        "{any_of: [{accelerators: A100}, {accelerators: T4, use_spot: true}]}",
        ResourceOverrides(gpus="L4"),
        {"accelerators": "L4", "any_of": [{}, {"use_spot": True}]},
    ),
    ("{accelerators: A100}", ResourceOverrides(gpus="none"), {}),
    # --infra replaces cloud, region and zone together
    ("{infra: aws/us-east-1}", ResourceOverrides(infra="gcp"), {"infra": "gcp"}),
    ("{cloud: aws, region: us-east-1}", ResourceOverrides(infra="gcp/*"), {"infra": "gcp"}),
    ("{cloud: aws, zone: us-east-1a}", ResourceOverrides(infra="*"), {}),
    (
        "{any_of: [{infra: aws}, {cloud: gcp, cpus: 2}]}",
        ResourceOverrides(infra="k8s/ctx:a/b"),
        {"infra": "kubernetes/ctx:a/b", "any_of": [{}, {"cpus": 2}]},
    ),
    # the older flags replace only their own part
    (
        "{cloud: aws, region: us-east-1}",
        ResourceOverrides(cloud="gcp"),
        {"cloud": "gcp", "region": "us-east-1"},
    ),
    ("{infra: aws/us-east-1}", ResourceOverrides(region="us-west-2"), {"infra": "aws/us-west-2"}),
    (
        "{any_of: [{cloud: aws}, {cloud: gcp}]}",
        ResourceOverrides(region="us-east-1"),
        {"any_of": [{"infra": "aws/us-east-1"}, {"infra": "gcp/us-east-1"}]},
    ),
    # every other flag replaces its key for every candidate
    (
        "{any_of: [{use_spot: true}, {use_spot: false}]}",
        ResourceOverrides(use_spot=False),
        {"use_spot": False, "any_of": [{}, {}]},
    ),
    (
        "{cpus: 4+, memory: 16+, ports: 8080}",
        ResourceOverrides(cpus="none", memory="32", ports=["8080", "9000-9100"]),
        {"memory": "32", "ports": ["8080", "9000-9100"]},
    ),
    ("{ports: [80, 443]}", ResourceOverrides(ports=["none"]), {}),
    (
        "{instance_type: p3.2xlarge, disk_size: 100}",
        ResourceOverrides(instance_type="p4d.24xlarge", disk_size=512, image_id="docker:x"),
        {"instance_type": "p4d.24xlarge", "disk_size": 512, "image_id": "docker:x"},
    ),
]


@pytest.mark.parametrize(("written", "flags", "after"), OVERRIDES)
def test_overrides_merge_like_skypilot(
    written: str, flags: ResourceOverrides, after: dict[str, Any]
) -> None:
    t = task(f"resources: {written}\nrun: x\n")
    merged = apply_overrides(t, flags)
    assert to_dict(merged).get("resources", {}) == after
    for candidate in candidates(merged.resources_or_default()):
        if flags.gpus not in (None, "none"):
            assert candidate.accelerators == flags.gpus
        if flags.use_spot is not None:
            assert candidate.use_spot is flags.use_spot


def test_override_mistakes_name_the_flag() -> None:
    t = task("run: x\n")
    with pytest.raises(InvalidTask) as typo:
        apply_overrides(t, ResourceOverrides(gpus="A1OO:8"))
    assert typo.value.message == (
        "command line: --gpus: unknown accelerator 'A1OO' (did you mean 'A100'?)"
    )
    with pytest.raises(InvalidTask, match="--infra: use either --infra or --cloud, not both"):
        apply_overrides(t, ResourceOverrides(infra="aws", cloud="gcp"))
    with pytest.raises(InvalidTask, match="--num-nodes: expected an integer >= 1, got 0"):
        apply_overrides(t, ResourceOverrides(num_nodes=0))
    assert apply_overrides(t, ResourceOverrides(num_nodes=3)).num_nodes == 3
    assert apply_overrides(t, ResourceOverrides()) == t


# -- pipelines and the SDK ----------------------------------------------------------------------


def test_pipelines_with_and_without_a_header(tmp_path: Path) -> None:
    named = from_yaml("name: pipe\n---\nname: a\nrun: x\n---\nname: b\nrun: y\n")
    assert isinstance(named, Dag) and named.name == "pipe"
    assert [t.name for t in named.tasks] == ["a", "b"]
    bare = from_yaml("name: a\nrun: x\n---\nname: b\nrun: y\n")
    assert isinstance(bare, Dag) and bare.name is None and len(bare.tasks) == 2
    group = from_yaml(
        "name: g\nexecution: parallel\nprimary_tasks: [a]\n---\nname: a\n---\nname: b\n"
    )
    assert isinstance(group, Dag) and group.is_job_group and group.primary_tasks == ["a"]
    single = tmp_path / "one.yaml"
    single.write_text("name: pipe\n---\nname: only\nrun: x\n")
    assert load_task_file(single).name == "only"
    assert load_dag_file(single).name == "pipe"
    plain = tmp_path / "plain.yaml"
    plain.write_text("run: x\n")
    assert load_dag_file(plain).tasks[0].run == "x"


def test_pipeline_env_overrides_reach_every_task(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("name: p\n---\nenvs: {X: null}\nrun: a\n---\nenvs: {X: 1}\nrun: b\n")
    dag = load_dag_file(path, env_overrides={"X": "9"})
    assert [t.envs for t in dag.tasks] == [{"X": "9"}, {"X": "9"}]


def test_shift_builds_pipelines() -> None:
    a, b, c = Task(name="a"), Task(name="b"), Task(name="c")
    assert [t.name for t in (a >> b).tasks] == ["a", "b"]
    assert [t.name for t in (a >> b >> c).tasks] == ["a", "b", "c"]
    named = Dag(name="p", tasks=[b])
    assert (a >> named).name == "p" and [t.name for t in (a >> named).tasks] == ["a", "b"]
    assert [t.name for t in (named >> (b >> c)).tasks] == ["b", "b", "c"]


def test_task_from_yaml_takes_a_path_or_text(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("run: echo hi\nworkdir: .\n")
    assert Task.from_yaml(path).workdir == str(Path.cwd())
    assert Task.from_yaml(str(path)).run == "echo hi"
    assert Task.from_yaml("run: echo text\n").run == "echo text"
    with pytest.raises(InvalidTask, match="pipeline of 2 tasks"):
        Task.from_yaml("run: a\n---\nrun: b\n")


def test_a_full_task_travels_as_msgpack_unchanged() -> None:
    t = task(SUBSTITUTING.replace("UNSET: null", "UNSET: x"))
    t = apply_overrides(t, ResourceOverrides(gpus="A100:1", infra="aws/us-east-1", ports=["80"]))
    request = m.Launch(task=t, cluster="c")
    back = msgspec.msgpack.decode(msgspec.msgpack.encode(request), type=m.Launch)
    assert back.task == t


def test_yaml_output_keeps_scripts_readable() -> None:
    t = task("run: |\n  echo one\n  echo two\nname: x\n")
    text = to_yaml(t)
    assert "run: |" in text and text.index("name:") < text.index("run:")
    assert from_yaml(text) == t
    assert from_yaml("") == Task() and from_yaml("name: only\n") == Task(name="only")


# -- launch problems and `stixctl validate` ----------------------------------------------------


def test_launch_refuses_with_the_sentence_validate_warns_with(tmp_path: Path) -> None:
    from stixd.actors.syncing import validate_mounts

    path = tmp_path / "t.yaml"
    path.write_text("workdir: ./nowhere\nfile_mounts:\n  /d: ./nothing\nrun: ls\n")
    t = load_task_file(path)
    problems = launch_problems(t)
    assert problems == [
        f"workdir: {Path.cwd() / 'nowhere'} is not a directory on this machine",
        f"file_mounts./d: {Path.cwd() / 'nothing'} does not exist on this machine",
    ]
    with pytest.raises(InvalidTask) as refused:
        validate_mounts(t)
    assert refused.value.message == problems[0]


def _validate(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_args(parser)
    return parser.parse_args(list(argv))


def test_validate_reports_json_and_exit_codes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("envs: {TOKEN: null}\nrun: echo\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("resources: {cpu: 2}\n")
    pipe = tmp_path / "pipe.yaml"
    pipe.write_text("name: p\n---\nrun: a\n---\nrun: b\n")
    args = _validate(str(good), str(bad), str(pipe), "--json")
    assert args.fn(tmp_path, args) == 2
    reports = json.loads(capsys.readouterr().out)
    assert reports == [
        {
            "file": str(good),
            "valid": True,
            "errors": [],
            "warnings": [
                f"{good}: envs.TOKEN: required but not set; pass it with --env TOKEN=VALUE"
            ],
            "tasks": 1,
        },
        {
            "file": str(bad),
            "valid": False,
            "errors": [f"{bad}: resources.cpu: unknown key (did you mean 'cpus'?)"],
            "warnings": [],
            "tasks": 0,
        },
        {"file": str(pipe), "valid": True, "errors": [], "warnings": [], "tasks": 2},
    ]
    supplied = _validate(str(good), "--env", "TOKEN=x")
    assert supplied.fn(tmp_path, supplied) == 0
    out = capsys.readouterr()
    assert out.out == f"✓ {good}: valid (1 task)\n" and out.err == ""
