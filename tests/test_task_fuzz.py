"""Generated task-like documents give a Task, a Dag or one InvalidTask sentence — nothing else.

The documents mix the real keys of the schema, near misses of them and random words, at every
level, with scalars, lists and maps as values. Bounded and offline.
"""

from __future__ import annotations

from typing import Any

import msgspec
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stixproto.errors import InvalidTask
from stixproto.task import Dag, Resources, Task, from_yaml, task_from_dict, to_yaml
from stixproto.task.model import ReadinessProbe, ReplicaPolicy, Service, Storage

REAL_KEYS = sorted(
    {
        *Task.__struct_fields__,
        *Resources.__struct_fields__,
        *Service.__struct_fields__,
        *ReadinessProbe.__struct_fields__,
        *ReplicaPolicy.__struct_fields__,
        *Storage.__struct_fields__,
        "url",
        "ref",
        "strategy",
        "idle_minutes",
        "execution",
        "primary_tasks",
    }
)


def _near_miss(key: str) -> st.SearchStrategy[str]:
    return st.sampled_from(
        [key[:-1] or key, key + "s", key.replace("_", ""), key.upper(), key[1:] or key]
    )


KEYS = st.one_of(
    st.sampled_from(REAL_KEYS),
    st.sampled_from(REAL_KEYS).flatmap(_near_miss),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz_-/:.0123456789", min_size=1, max_size=12),
)
WORDS = st.sampled_from(
    [
        "A100:8",
        "K80:0.5",
        "tpu-v2-8",
        "A1OO",
        "aws",
        "aws/us-east-1",
        "k8s/ctx:a/b",
        "4+",
        "32GB",
        "10m",
        "8080",
        "10052-10100",
        "MOUNT",
        "copy",
        "s3://bucket",
        "ftp://x",
        "/health",
        "round_robin",
        "failover",
        "",
        "none",
        "~/data",
    ]
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.sampled_from([2**64, -(2**63) - 1, 10**30]),
    st.floats(allow_nan=False, allow_infinity=False),
    WORDS,
    st.text(alphabet=st.characters(blacklist_characters="$", codec="utf-8"), max_size=20),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(KEYS, inner, max_size=5)),
    max_leaves=25,
)
DOCUMENTS = st.dictionaries(KEYS, VALUES, max_size=8)


FUZZ = settings(
    max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)

# Documents that are valid by construction, to exercise the round trip and the mutations.
ENV_NAMES = st.from_regex(r"[A-Z_][A-Z0-9_]{0,8}", fullmatch=True)
VALID_RESOURCES = st.fixed_dictionaries(
    {},
    optional={
        "cpus": st.sampled_from([1, 0.5, "2+", "4"]),
        "memory": st.sampled_from([8, "16+", "1024MB", "1TB"]),
        "accelerators": st.sampled_from(
            ["A100:8", "K80:0.5", "tpu-v2-8", {"L4": None, "A10g": None}, ["T4:1", {"V100": 2}]]
        ),
        "infra": st.sampled_from(["aws", "aws/us-east-1", "*/us-east-1", "k8s/ctx:a/b"]),
        "use_spot": st.booleans(),
        "ports": st.sampled_from([8080, "10052-10100", [80, "81-90"]]),
        "disk_size": st.sampled_from([256, "1TB"]),
        "autostop": st.sampled_from([True, 10, "2h", {"idle_minutes": 3, "down": True}]),
        "job_recovery": st.sampled_from(["failover", {"max_restarts_on_errors": 2}]),
        "any_of": st.sampled_from([[{"use_spot": True}, {"use_spot": False}], [{"cloud": "gcp"}]]),
    },
)
VALID_TASKS = st.fixed_dictionaries(
    {},
    optional={
        "name": st.text(alphabet="abc-", min_size=1, max_size=8),
        "num_nodes": st.integers(min_value=1, max_value=8),
        "resources": VALID_RESOURCES,
        "envs": st.dictionaries(ENV_NAMES, st.one_of(st.none(), st.integers(0, 9), WORDS)),
        "file_mounts": st.dictionaries(
            st.sampled_from(["/data", "~/ckpt", "/out/${X}"]),
            st.sampled_from(["~/data", "s3://bucket/x", {"name": "b", "mode": "copy"}]),
        ),
        "service": st.sampled_from(
            [{"readiness_probe": "/health", "replicas": 2}, {"replica_policy": {"min_replicas": 0}}]
        ),
        "setup": st.text(max_size=30),
        "run": st.text(max_size=30),
    },
)


def _mutated(doc: dict[str, Any], path: list[Any], value: Any) -> dict[str, Any]:
    """`doc` with the value at the first steps of `path` that exist replaced by `value`."""
    out = dict(doc)
    node: Any = out
    for i, step in enumerate(path):
        if not isinstance(node, dict) or not node:
            break
        key = sorted(node, key=str)[step % len(node)]
        if i == len(path) - 1 or not isinstance(node[key], dict):
            node[key] = value
            break
        node[key] = dict(node[key])
        node = node[key]
    return out


@FUZZ
@given(VALID_TASKS)
def test_valid_documents_parse_and_round_trip(doc: dict[str, Any]) -> None:
    task = task_from_dict(doc, "valid.yaml")
    again = from_yaml(to_yaml(task), "again.yaml")
    assert msgspec.to_builtins(again) == msgspec.to_builtins(task)
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(task), type=Task) == task


@FUZZ
@given(VALID_TASKS, st.lists(st.integers(0, 20), min_size=1, max_size=3), VALUES)
def test_a_valid_document_with_one_value_changed_is_a_task_or_one_sentence(
    doc: dict[str, Any], path: list[int], value: Any
) -> None:
    try:
        task_from_dict(_mutated(doc, path, value), "mutated.yaml")
    except InvalidTask as exc:
        assert exc.message.startswith("mutated.yaml: ") and "\n" not in exc.message


@FUZZ
@given(DOCUMENTS)
def test_any_document_is_a_task_or_one_clear_sentence(doc: dict[str, Any]) -> None:
    try:
        task = task_from_dict(doc, "fuzz.yaml")
    except InvalidTask as exc:
        assert exc.message.startswith("fuzz.yaml: ")
        assert "\n" not in exc.message and "Traceback" not in exc.message
        return
    again = from_yaml(to_yaml(task), "again.yaml")
    assert msgspec.to_builtins(again) == msgspec.to_builtins(task)
    msgspec.msgpack.encode(task)  # it can travel to the daemon


@settings(max_examples=150, deadline=None, database=None)
@given(st.lists(DOCUMENTS, min_size=1, max_size=3))
def test_any_yaml_text_is_a_task_a_pipeline_or_one_sentence(docs: list[dict[str, Any]]) -> None:
    text = yaml.safe_dump_all(docs)
    try:
        parsed = from_yaml(text, "fuzz.yaml")
    except InvalidTask as exc:
        assert exc.message.startswith("fuzz.yaml")
        assert "\n" not in exc.message
        return
    assert isinstance(parsed, Task | Dag)
