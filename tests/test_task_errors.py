"""Every bad task file in tests/bad_tasks gets one sentence naming the key path that is wrong.

The table gives, per file, the key path the message must name, a fragment of what it must say,
and the suggestion it must make (None where there is no near miss to suggest).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from stixproto.errors import InvalidTask, TaskFieldError
from stixproto.task import load_dag_file, load_task_file

BAD = Path(__file__).parent / "bad_tasks"

# file: (key path, what the message says, suggestion)
EXPECTED: dict[str, tuple[str, str, str | None]] = {
    # YAML itself
    "yaml_unclosed_list.yaml": ("", "YAML syntax error at line 3, column 1", None),
    "yaml_bad_indent.yaml": ("", "YAML syntax error at line 3, column 2", None),
    "yaml_tab_indent.yaml": ("", "YAML syntax error at line 2, column 1", None),
    "not_a_map.yaml": ("", "a task must be a map of keys, got a list", None),
    # unknown keys at every closed level
    "unknown_top_level_key.yaml": ("resoures", "unknown key", "resources"),
    "resources_key_at_top_level.yaml": ("accelerators", "unknown key", "resources.accelerators"),
    "unknown_resources_key.yaml": ("resources.cpu", "unknown key", "cpus"),
    "unknown_any_of_key.yaml": ("resources.any_of.1.use_spott", "unknown key", "use_spot"),
    "unknown_storage_key.yaml": ("file_mounts./data.mdoe", "unknown key", "mode"),
    "unknown_service_key.yaml": ("service.replica", "unknown key", "replicas"),
    "unknown_replica_policy_key.yaml": (
        "service.replica_policy.min_replica",
        "unknown key",
        "min_replicas",
    ),
    "unknown_readiness_probe_key.yaml": (
        "service.readiness_probe.initial_delay",
        "unknown key",
        "initial_delay_seconds",
    ),
    "unknown_autostop_key.yaml": ("resources.autostop.idle_minute", "unknown key", "idle_minutes"),
    "unknown_accelerator_args_key.yaml": (
        "resources.accelerator_args.runtime_versoin",
        "unknown key",
        "runtime_version",
    ),
    # accelerators
    "accelerator_typo.yaml": ("resources.accelerators", "unknown accelerator 'A1OO'", "A100"),
    "accelerator_typo_in_set.yaml": ("resources.accelerators", "unknown accelerator 'A10J'", "A10"),
    "accelerator_typo_in_list.yaml": (
        "resources.accelerators.1",
        "unknown accelerator 'V1OO'",
        "V100",
    ),
    "accelerator_bad_count.yaml": (
        "resources.accelerators",
        "expected a count like 'A100:8' or 'K80:0.5', got 'A100:eight'",
        None,
    ),
    "accelerator_zero_count.yaml": (
        "resources.accelerators",
        "expected an accelerator count > 0",
        None,
    ),
    "accelerator_unknown_tpu.yaml": (
        "resources.accelerators",
        "unknown accelerator 'tpu-v9-8'",
        "tpu-v4-8",
    ),
    "accelerators_number.yaml": (
        "resources.accelerators",
        "expected a string, a map or a list, got 8",
        None,
    ),
    "any_of_several_accelerators.yaml": (
        "resources.any_of.0.accelerators",
        "an alternative names one accelerator",
        None,
    ),
    # alternatives and placement
    "nested_any_of.yaml": ("resources.any_of.1.any_of", "cannot be nested", None),
    "any_of_and_ordered.yaml": (
        "resources.ordered",
        "use either any_of or ordered, not both",
        None,
    ),
    "any_of_cpus_list.yaml": (
        "resources.any_of.1.cpus",
        "expected a number or a string, got a list",
        None,
    ),
    "infra_mixed_with_cloud.yaml": (
        "resources.cloud",
        "use either infra or the older cloud/region/zone keys, not both",
        None,
    ),
    "infra_unknown_cloud.yaml": ("resources.infra", "unknown infra 'awss'", "aws"),
    "infra_empty_part.yaml": (
        "resources.infra",
        "without empty parts, got 'aws//us-east-1a'",
        None,
    ),
    "infra_too_many_parts.yaml": ("resources.infra", "at most three parts", None),
    "cloud_unknown.yaml": ("resources.cloud", "unknown infra 'amazon'", None),
    # ports
    "port_out_of_range.yaml": ("resources.ports", "between 1 and 65535, got 70000", None),
    "port_range_backwards.yaml": (
        "resources.ports.1",
        "expected a range low-high, got '9100-9000'",
        None,
    ),
    "port_not_a_number.yaml": ("resources.ports", "expected a port number or a range", None),
    # compute and disks
    "cpus_words.yaml": ("resources.cpus", "got 'four'", None),
    "cpus_negative.yaml": ("resources.cpus", "expected a number > 0, got -2", None),
    "memory_bad_unit.yaml": ("resources.memory", "got '32XB'", None),
    "disk_size_bad_unit.yaml": ("resources.disk_size", "got '1TBB'", None),
    "disk_tier_unknown.yaml": (
        "resources.disk_tier",
        "unknown disk tier 'fastest'; expected one of low, medium, high, ultra, best",
        None,
    ),
    "network_tier_unknown.yaml": ("resources.network_tier", "unknown network tier 'premium'", None),
    "use_spot_not_bool.yaml": ("resources.use_spot", "expected true or false, got 'maybe'", None),
    "labels_not_strings.yaml": ("resources.labels.team", "expected a string, got 42", None),
    "image_id_region_number.yaml": (
        "resources.image_id.us-east-1",
        "expected a string, got 5",
        None,
    ),
    "max_hourly_cost_zero.yaml": (
        "resources.max_hourly_cost",
        "expected a number > 0, got 0",
        None,
    ),
    "priority_out_of_range.yaml": ("resources.priority", "between 0 and 1000, got 1001", None),
    # autostop and recovery
    "autostop_bad_string.yaml": ("resources.autostop", "got '10x'", None),
    "autostop_negative.yaml": ("resources.autostop", "expected an integer >= 0, got -5", None),
    "autostop_bad_wait_for.yaml": (
        "resources.autostop.wait_for",
        "unknown wait_for mode 'job'",
        "jobs",
    ),
    "job_recovery_typo.yaml": (
        "resources.job_recovery",
        "unknown recovery strategy 'EAGER_NEXT_REGON'",
        "EAGER_NEXT_REGION",
    ),
    "job_recovery_exit_code.yaml": (
        "resources.job_recovery.recover_on_exit_codes.1",
        "between 0 and 255, got 300",
        None,
    ),
    "job_recovery_negative_restarts.yaml": (
        "resources.job_recovery.max_restarts_on_errors",
        "expected an integer >= 0, got -1",
        None,
    ),
    "job_and_spot_recovery.yaml": ("resources.spot_recovery", "not both", None),
    # task level
    "num_nodes_negative.yaml": ("num_nodes", "expected an integer >= 1, got -1", None),
    "num_nodes_words.yaml": ("num_nodes", "expected an integer, got 'two'", None),
    "num_nodes_too_large.yaml": (
        "num_nodes",
        "the number 99999999999999999999999 is too large",
        None,
    ),
    "cpus_infinite.yaml": ("resources.cpus", "expected a finite number, got inf", None),
    "env_name_leading_digit.yaml": ("envs.1ST_VAR", "not a valid environment variable name", None),
    "env_name_with_dash.yaml": ("envs.MY-VAR", "not a valid environment variable name", None),
    "env_value_list.yaml": ("envs.ARGS", "got a list", None),
    "secret_name_with_space.yaml": (
        "secrets.bad name",
        "not a valid environment variable name",
        None,
    ),
    "run_is_a_list.yaml": ("run", "expected a string, got a list", None),
    "setup_is_a_map.yaml": ("setup", "expected a string, got a map", None),
    "workdir_git_without_url.yaml": ("workdir.url", "required key is missing", None),
    "workdir_number.yaml": ("workdir", "expected a string or a map, got 5", None),
    "inputs_two_paths.yaml": ("inputs", "got 2 entries", None),
    "volume_without_name_or_size.yaml": ("volumes./mnt/data", "expected a volume name", None),
    # file mounts and storage
    "storage_mode_typo.yaml": (
        "file_mounts./data.mode",
        "unknown mode 'mount_cache'; expected one of MOUNT, COPY, MOUNT_CACHED",
        "MOUNT_CACHED",
    ),
    "storage_store_typo.yaml": ("file_mounts./data.store", "unknown store 's4'", None),
    "storage_without_name_or_source.yaml": ("file_mounts./data", "needs a name", None),
    "storage_name_left_empty.yaml": ("file_mounts./outputs.name", "got null", None),
    "bucket_url_unsupported.yaml": (
        "file_mounts./data",
        "unsupported bucket URL 'ftp://host/dataset'",
        None,
    ),
    "mount_source_trailing_slash.yaml": ("file_mounts./data", "paths cannot end with '/'", None),
    "mount_destination_bucket.yaml": ("file_mounts.s3://my-bucket", "not a bucket URL", None),
    # service and pool
    "replicas_and_replica_policy.yaml": (
        "service.replicas",
        "use either replicas (a fixed count) or replica_policy, not both",
        None,
    ),
    "replica_policy_without_min.yaml": (
        "service.replica_policy.min_replicas",
        "required key is missing",
        None,
    ),
    "replica_policy_max_below_min.yaml": (
        "service.replica_policy.max_replicas",
        "expected at least min_replicas (3), got 2",
        None,
    ),
    "readiness_probe_without_slash.yaml": (
        "service.readiness_probe",
        "starting with '/', got 'health'",
        None,
    ),
    "readiness_probe_without_path.yaml": (
        "service.readiness_probe.path",
        "required key is missing",
        None,
    ),
    "readiness_probe_bad_json.yaml": (
        "service.readiness_probe.post_data",
        "expected a JSON object",
        None,
    ),
    "load_balancing_policy_typo.yaml": (
        "service.load_balancing_policy",
        "unknown load balancing policy 'round-robin'",
        "round_robin",
    ),
    "tls_without_certfile.yaml": ("service.tls.certfile", "required key is missing", None),
    "service_and_pool.yaml": ("pool", "a task is either a service or a pool, not both", None),
    "pool_negative_workers.yaml": ("pool.workers", "expected an integer >= 0, got -1", None),
    # pipelines: the document is part of the source
    "pipeline_bad_second_task.yaml": ("resources.cpu", "unknown key", "cpus"),
    "pipeline_unknown_primary_task.yaml": ("primary_tasks.0", "no task named 'trainer'", None),
    "job_group_header_typo.yaml": (
        "primary_task",
        "unknown key in a job-group header",
        "primary_tasks",
    ),
}

DOCUMENT = {
    "pipeline_bad_second_task.yaml": 3,
    "pipeline_unknown_primary_task.yaml": 1,
    "job_group_header_typo.yaml": 1,
}


def test_every_bad_file_has_an_expectation_and_there_are_enough() -> None:
    files = {p.name for p in BAD.glob("*.yaml")}
    assert files == set(EXPECTED)
    assert len(files) >= 40


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bad_task_names_the_key_path(name: str) -> None:
    path, says, suggestion = EXPECTED[name]
    with pytest.raises(InvalidTask) as caught:
        load_dag_file(BAD / name)
    message = caught.value.message
    source = str(BAD / name)
    if name in DOCUMENT:
        source += f" (document {DOCUMENT[name]})"
    assert message.startswith(f"{source}: {path + ': ' if path else ''}"), message
    assert says in message
    if suggestion is None:
        assert "did you mean" not in message
    else:
        assert message.endswith(f"(did you mean '{suggestion}'?)"), message
    assert "\n" not in message and "Traceback" not in message
    if path:
        assert isinstance(caught.value, TaskFieldError) and caught.value.path == path


def test_a_pipeline_given_to_launch_is_named_as_one(tmp_path: Path) -> None:
    text = (BAD / "pipeline_unknown_primary_task.yaml").read_text()
    group = tmp_path / "group.yaml"
    group.write_text(text.replace("primary_tasks: [trainer]", "primary_tasks: [workers]"))
    with pytest.raises(InvalidTask, match=r"is a pipeline of 2 tasks \(controller, workers\)"):
        load_task_file(group)


VALIDATE = (
    "import argparse, sys\n"
    "from stixctl.validate import add_args\n"
    "parser = argparse.ArgumentParser(prog='stixctl validate')\n"
    "add_args(parser)\n"
    "args = parser.parse_args(sys.argv[1:])\n"
    "sys.exit(args.fn(None, args))\n"
)


def test_validate_prints_one_line_per_error_and_no_traceback(tmp_path: Path) -> None:
    files = [str(BAD / "accelerator_typo.yaml"), str(BAD / "yaml_tab_indent.yaml")]
    proc = subprocess.run(
        [sys.executable, "-c", VALIDATE, *files],
        capture_output=True,
        text=True,
        env={**os.environ, "STIX_HOME": str(tmp_path)},
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines == [
        f"✗ {files[0]}: resources.accelerators: unknown accelerator 'A1OO' (did you mean 'A100'?)",
        f"✗ {files[1]}: YAML syntax error at line 2, column 1: "
        "found character that cannot start any token",
    ]
    assert proc.stdout == ""
