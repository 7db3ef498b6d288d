"""A task's bucket mounts resolved as SkyPilot resolves them (stixd/storage/plan.py), and the
storage actor's transition table."""

from __future__ import annotations

import http.server
import threading
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, ClassVar, cast

import anyio
import anyio.lowlevel
import msgspec
import pytest

from stixd.actors.storage import STORAGE_TRANSITIONS, SV
from stixd.agent_client import AgentError
from stixd.providers.base import NodeInfo, NodeStatus, Provider
from stixd.storage.plan import (
    MountPlan,
    StorageSpec,
    generated_name,
    plan_mounts,
    split_uri,
    unnamed_stores,
)
from stixd.storage.stores import Bucket
from stixd.storage.stores.base import ObjectInfo
from stixproto.errors import InvalidTask, ProvisionError
from stixproto.states import StorageStatus as S
from stixproto.task import Task


def plans(text: str, configured: tuple[str, ...] = ()) -> list[MountPlan]:
    return plan_mounts(Task.from_yaml(text), cluster="c1", configured=configured)


def test_uri_shorthand_copies_an_existing_bucket_it_never_owns() -> None:
    [p] = plans("file_mounts:\n  /data: s3://some-bucket/sub/dir\n")
    spec = p.storage
    assert (p.dest, spec.store, spec.bucket, spec.prefix) == (
        "/data",
        "s3",
        "some-bucket",
        "sub/dir",
    )
    assert spec.external and spec.mode == "COPY" and spec.persistent


def test_existing_buckets_follow_their_stores_own_name_rules() -> None:
    long_gcs = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 30])  # 222 characters
    got = plans(
        "file_mounts:\n  /g: gs://my_data_bucket/x\n  /s: s3://my.data.bucket\n"
        f"  /l: gs://{long_gcs}\n  /r: r2://a.b-c\n"
        "  /a: https://acct.blob.core.windows.net/my-container-1\n"
        "  /n:\n    name: named\n    source: gs://another_bucket\n    mode: MOUNT\n"
    )
    assert [(p.storage.store, p.storage.bucket) for p in got] == [
        ("gcs", "my_data_bucket"),
        ("s3", "my.data.bucket"),
        ("gcs", long_gcs),
        ("r2", "a.b-c"),
        ("azure", "my-container-1"),
        ("gcs", "another_bucket"),
    ]


def test_azure_https_and_gs_uris_name_their_store() -> None:
    got = plans(
        "file_mounts:\n  /a: https://acct.blob.core.windows.net/cont/x\n  /g: gs://gbucket\n"
    )
    assert [(p.storage.store, p.storage.bucket, p.storage.prefix) for p in got] == [
        ("azure", "cont", "x"),
        ("gcs", "gbucket", ""),
    ]


def test_store_absent_follows_the_task_cloud_then_the_first_configured_then_s3(
    tmp_path: Path,
) -> None:
    mount = f"file_mounts:\n  /d:\n    name: bkt-one\n    source: {tmp_path}\n"
    assert plans(mount)[0].storage.store == "s3"
    assert plans(mount, ("gcs", "azure"))[0].storage.store == "gcs"
    on_azure = mount + "resources:\n  cloud: azure\n"
    assert plans(on_azure, ("gcs", "azure"))[0].storage.store == "azure"
    assert plans(on_azure, ("gcs",))[0].storage.store == "gcs"  # azure not set up here


def test_the_launchs_chosen_cloud_picks_the_store_and_the_new_buckets_region(
    tmp_path: Path,
) -> None:
    text = (
        f"file_mounts:\n  /d:\n    name: bkt-one\n    source: {tmp_path}\n"
        "  /n:\n    name: bkt-two\n    store: s3\n"  # a store named: its default region
        "  /u:\n    source: s3://existing\n    mode: MOUNT\n"  # an existing bucket: where it is
        "resources:\n  cloud: aws\n  region: us-west-2\n"
    )
    task = Task.from_yaml(text)

    def chosen(cloud: str | None, region: str | None, *configured: str) -> list[Any]:
        got = plan_mounts(task, cluster="c1", configured=configured, cloud=cloud, region=region)
        return [(p.storage.store, p.storage.region) for p in got]

    both = ("s3", "gcs")
    assert chosen("gcp", "europe-west4", *both) == [
        ("gcs", "europe-west4"),  # the optimizer's pick, not the requested aws
        ("s3", None),
        ("s3", None),
    ]
    assert chosen("aws", "eu-west-1", *both)[0] == ("s3", "eu-west-1")
    assert chosen("gcp", "europe-west4", "s3")[0] == ("s3", None)  # GCS not set up here
    assert chosen("local", None, "gcs", "s3")[0] == ("s3", None)  # off the clouds: first set up
    assert chosen(None, None, *both)[0] == ("s3", "us-west-2")  # no launch: the task's own


def test_an_existing_storage_keeps_its_store_when_the_launch_lands_on_another_cloud(
    tmp_path: Path,
) -> None:
    """SkyPilot reuses an existing storage's store: a record saying s3 (named or nameless) wins
    over the gcp launch's gcs; a store the task names, or a name with no record, does not."""
    text = (
        f"file_mounts:\n  /d:\n    name: bkt-one\n    source: {tmp_path}\n"
        f"  /g:\n    source: {tmp_path}\n"  # nameless: its generated name is its record's
        "  /n:\n    name: bkt-two\n    store: gcs\n"  # named: the task's word
        "  /f:\n    name: bkt-new\n"  # no record: the launch's cloud
    )
    task = Task.from_yaml(text)
    nameless = generated_name("c1", "/g")
    assert unnamed_stores(task, "c1") == ["bkt-one", nameless, "bkt-new"]
    records = {
        name: StorageSpec(name=name, store="s3", bucket=name, region="us-east-2")
        for name in ("bkt-one", nameless, "bkt-two")
    }
    got = plan_mounts(
        task,
        cluster="c1",
        configured=("s3", "gcs"),
        cloud="gcp",
        region="europe-west4",
        records=records,
    )
    assert [(p.storage.store, p.storage.region) for p in got] == [
        ("s3", "us-east-2"),
        ("s3", "us-east-2"),
        ("gcs", None),
        ("gcs", "europe-west4"),
    ]


def test_named_storage_defaults_and_a_list_source_lands_under_each_name(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    [p] = plans(
        "file_mounts:\n  /d:\n    name: bkt-two\n"
        f"    source: [{tmp_path / 'a'}, {tmp_path / 'b'}]\n"
    )
    spec = p.storage
    assert spec.mode == "MOUNT" and spec.persistent and not spec.external and spec.nested
    assert spec.sources == [str(tmp_path / "a"), str(tmp_path / "b")]
    assert spec.mount_cached == {}  # MOUNT: no MOUNT_CACHED knobs


def test_mount_cached_knobs_are_skypilots_and_map_to_its_rclone_flags() -> None:
    knobs = (
        "transfers: 8\n        buffer_size: 64m\n        vfs_cache_max_age: 1h30m\n"
        "        vfs_read_ahead: 128M\n        vfs_read_chunk_size: 32m\n"
        "        vfs_read_chunk_streams: 0\n        vfs_write_back: +5s\n        read_only: true"
    )
    [p] = plans(
        "file_mounts:\n  /d:\n    name: bkt-x\n    mode: mount_cached\n"
        f"    config:\n      mount_cached:\n        {knobs}\n"
    )
    assert p.storage.mount_cached == {
        "--transfers": "8",
        "--checkers": "16",  # SkyPilot's min(2t, 30 + 1.2t)
        "--buffer-size": "64M",
        "--vfs-cache-max-size": "10G",  # SkyPilot's default when unset
        "--vfs-cache-max-age": "1h30m",  # durations keep their case: M is months
        "--vfs-read-ahead": "128M",
        "--vfs-read-chunk-size": "32M",
        "--vfs-read-chunk-streams": "0",
        "--vfs-write-back": "5s",
        "--read-only": "true",
    }
    [p] = plans(
        "file_mounts:\n  /d:\n    name: bkt-x\n    mode: MOUNT_CACHED\n"
        "    config:\n      mount_cached:\n        read_only: false\n        transfers: 100\n"
    )
    assert p.storage.mount_cached == {
        "--vfs-cache-max-size": "10G",
        "--vfs-write-back": "1s",
        "--transfers": "100",
        "--checkers": "150",
    }


@pytest.mark.parametrize(
    ("preset", "flags"),
    [
        (
            "MODEL_CHECKPOINT_RO",
            {
                "--vfs-read-chunk-streams": "16",
                "--vfs-read-chunk-size": "32M",
                "--read-only": "true",
            },
        ),
        (
            "model_checkpoint_rw",  # case-insensitive, as SkyPilot's enum
            {"--vfs-read-chunk-streams": "16", "--vfs-read-chunk-size": "32M", "--transfers": "8"}
            | {"--checkers": "16"},
        ),
        (
            "DATASET_RO",
            {"--vfs-read-chunk-streams": "0", "--vfs-read-chunk-size": "8M", "--read-only": "true"},
        ),
        (
            "Dataset_RW",
            {"--vfs-read-chunk-streams": "0", "--vfs-read-chunk-size": "8M", "--transfers": "16"}
            | {"--checkers": "32"},
        ),
    ],
)
def test_a_storage_type_preset_sets_skypilots_knobs(preset: str, flags: dict[str, str]) -> None:
    text = f"file_mounts:\n  /d:\n    name: bkt-x\n    mode: MOUNT_CACHED\n    type: {preset}\n"
    defaults = {"--vfs-cache-max-size": "10G", "--vfs-write-back": "1s"}
    assert plans(text)[0].storage.mount_cached == defaults | flags


def test_knobs_the_task_sets_win_over_its_preset() -> None:
    [p] = plans(
        "file_mounts:\n  /d:\n    name: bkt-x\n    mode: MOUNT_CACHED\n    type: DATASET_RO\n"
        "    config:\n      mount_cached: {read_only: false, vfs_read_chunk_size: 16m}\n"
    )
    assert p.storage.mount_cached == {
        "--vfs-cache-max-size": "10G",
        "--vfs-write-back": "1s",
        "--vfs-read-chunk-streams": "0",
        "--vfs-read-chunk-size": "16M",
    }


def test_the_agent_takes_every_knob_flag_and_read_only_as_a_switch(tmp_path: Path) -> None:
    from stixd.agent import mount as agent_mount
    from stixd.agent.protocol import RequestError

    [p] = plans(
        "file_mounts:\n  /d:\n    name: bkt-x\n    mode: MOUNT_CACHED\n"
        "    config:\n      mount_cached:\n        read_only: true\n        transfers: 2\n"
        "        vfs_read_chunk_size: 8M\n        vfs_read_chunk_streams: 4\n"
    )
    spec = agent_mount.parse_mount(
        {
            "dest": "/m",
            "remote": "s3",
            "keys": {},
            "path": "b",
            "mode": "MOUNT_CACHED",
            "flags": p.storage.mount_cached,
        }
    )
    argv = agent_mount._argv(spec, tmp_path, tmp_path / "c", 1)
    tail = argv[argv.index("--vfs-fast-fingerprint") + 1 :]
    assert tail == [
        "--checkers",
        "4",
        "--read-only",
        "--transfers",
        "2",
        "--vfs-cache-max-size",
        "10G",
        "--vfs-read-chunk-size",
        "8M",
        "--vfs-read-chunk-streams",
        "4",
        "--vfs-write-back",
        "1s",
    ]
    [p] = plans(
        "file_mounts:\n  /d:\n    name: bkt-x\n    config:\n      mount: {read_only: true}\n"
    )
    assert p.storage.mount_cached == {"--read-only": "true"}  # SkyPilot's MOUNT read_only
    request = {"dest": "/m", "remote": "s3", "keys": {}, "path": "b", "mode": "MOUNT"}
    spec = agent_mount.parse_mount(request | {"flags": p.storage.mount_cached})
    argv = agent_mount._argv(spec, tmp_path, tmp_path / "c", 1)
    assert argv[argv.index("writes") + 1 :] == ["--read-only"]
    with pytest.raises(RequestError):  # a switch is sent as "true" only
        agent_mount.parse_mount(request | {"flags": {"--read-only": "false"}})


def test_a_nameless_local_source_gets_a_stable_bucket_name(tmp_path: Path) -> None:
    text = f"file_mounts:\n  /d:\n    source: {tmp_path}\n    mode: COPY\n"
    first, again = plans(text)[0].storage, plans(text)[0].storage
    assert first.bucket == again.bucket and first.bucket.startswith("stix-filemounts-c1-")


@pytest.mark.parametrize(
    ("mount", "says"),
    [
        ("/d: oci://b", "not supported by this build"),
        ("/d:\n    name: Bad_Name\n    mode: COPY", "bucket name 'Bad_Name' is not valid"),
        ("/d:\n    name: my_bkt\n    store: gcs", "'my_bkt' is not valid for a new bucket"),
        ("/d:\n    name: my.bkt\n    store: azure", "'my.bkt' is not valid for azure"),
        ("/d: s3://my_bucket", "'my_bucket' is not valid for s3"),
        ("/d: r2://My-Bucket", "'My-Bucket' is not valid for r2"),
        ("/d: s3://a..b", "'a..b' is not valid for s3"),
        ("/d: s3://192.168.5.4", "not valid for s3"),
        ("/d: s3://xn--abc", "not valid for s3"),
        ("/d: gs://a..b", "'a..b' is not valid for gcs"),
        ("/d: gs://a.-b", "not valid for gcs"),
        ("/d: gs://google-data", "not valid for gcs"),
        ("/d: gs://goog-data", "not valid for gcs"),
        (f"/d: gs://{'a' * 64}.b", "not valid for gcs"),  # a part over 63
        (f"/d: gs://{'a' * 64}", "is not valid for gcs"),  # 64+ needs dots
        (f"/d: gs://{'a.' * 111}b", "not valid for gcs"),  # 223 characters
        ("/d: gs://ab", "not valid for gcs"),
        ('/d: "gs://a\\x07b"', "may not hold a control character"),
        (f"/d: gs://{'x' * 10_000}", "... (10000 characters) is not valid"),
        ("/d: https://acct.blob.core.windows.net/a--b", "'a--b' is not valid for azure"),
        ("/d: https://acct.blob.core.windows.net/ab-", "not valid for azure"),
        ("/d: https://acct.blob.core.windows.net/my_c", "not valid for azure"),
        ("/d:\n    source: https://acct.blob.core.windows.net/a.b", "source: bucket name 'a.b'"),
        ("/d:\n    name: bkt-x\n    source: /no/such/dir", "is not a folder on this machine"),
        ("/d:\n    source: s3://b-one\n    store: gcs", "does not match the source"),
    ],
)
def test_mounts_stix_cannot_plan_are_refused_in_one_line(mount: str, says: str) -> None:
    with pytest.raises(InvalidTask) as caught:
        plans(f"file_mounts:\n  {mount}\n")
    assert says in caught.value.message and "\n" not in caught.value.message


@pytest.mark.parametrize(
    ("uri", "says"),
    [
        ("s3://bkt/../x", "may not have '.', '..' or empty parts, got 's3://bkt/../x'"),
        ("r2://bkt/..", "'.', '..' or empty parts"),
        ("gs://bkt/a/./b", "'.', '..' or empty parts"),
        ("s3://bkt/a//b", "'.', '..' or empty parts"),
        ("https://acct.blob.core.windows.net/cont/../x", "'.', '..' or empty parts"),
        ("s3://bkt/a\nb", "may not hold a control character, got 's3://bkt/a\\nb'"),
        ("gs://bkt/a\tb", "control character"),
        ("s3://bkt/a\x7f", "control character"),
        ("s3://bkt\r/a", "control character"),
    ],
)
def test_a_bucket_path_that_names_no_place_in_the_bucket_is_refused_when_read(
    uri: str, says: str
) -> None:
    """``stixctl validate`` (the task reader) refuses it in one line, as the shorthand and as a
    storage's source, before any node is up; the planner refuses it too (a task decoded from
    the wire). A dotted name part (``a.b``, ``..c``) and outer slashes are fine."""
    quoted = msgspec.json.encode(uri).decode()
    for mount in (quoted, f"\n    name: bkt-x\n    source: {quoted}"):
        with pytest.raises(InvalidTask) as caught:
            Task.from_yaml(f"file_mounts:\n  /d: {mount}\n")
        assert says in caught.value.message and "\n" not in caught.value.message
    with pytest.raises(InvalidTask) as caught:
        split_uri(uri, "file_mounts./d")
    assert says in caught.value.message and "\n" not in caught.value.message
    [p] = plans("file_mounts:\n  /d: gs://bkt/a.b/..c/x./\n")
    assert (p.storage.bucket, p.storage.prefix) == ("bkt", "a.b/..c/x.")


CACHED = "name: bkt-x\n    mode: MOUNT_CACHED\n    config:\n      mount_cached:"


@pytest.mark.parametrize(
    ("storage", "says"),
    [
        ("name: bkt-x\n    mount_options: --allow-other", "mount_options: unknown key"),
        (f"{CACHED}\n        nope: 1", "unknown setting 'nope'"),
        (f"{CACHED}\n        dir_cache_time: 10s", "unknown setting 'dir_cache_time'"),
        (f"{CACHED}\n        transfers: 0", "transfers: expected an integer from 1 to 4096, got 0"),
        (f"{CACHED}\n        transfers: -1", "expected an integer from 1 to 4096, got -1"),
        (f"{CACHED}\n        transfers: 1e999", "transfers: expected an integer >= 1, got '1e999'"),
        (f"{CACHED}\n        transfers: .nan", "expected an integer >= 1, got nan"),
        (f"{CACHED}\n        transfers: 1; rm", "expected an integer >= 1, got '1; rm'"),
        (f"{CACHED}\n        transfers: .inf", "expected an integer >= 1, got inf"),
        (f"{CACHED}\n        transfers: 4097", "from 1 to 4096, got 4097"),
        (f"{CACHED}\n        transfers: 99999999999999999999", "is too large"),
        (f"{CACHED}\n        transfers: true", "expected an integer >= 1, got true"),
        (f"{CACHED}\n        vfs_read_chunk_streams: -1", "from 0 to 4096, got -1"),
        (f"{CACHED}\n        vfs_cache_max_size: inf", "expected an rclone size"),
        (f"{CACHED}\n        vfs_cache_max_size: .inf", "expected an rclone size"),
        (f"{CACHED}\n        vfs_cache_max_size: 1e999", "expected an rclone size"),
        (f"{CACHED}\n        vfs_cache_max_size: -1", "expected an rclone size"),
        (f"{CACHED}\n        vfs_cache_max_size: 10", "expected an rclone size"),  # an int
        (f"{CACHED}\n        buffer_size: 10GiB", "expected an rclone size"),
        (f"{CACHED}\n        vfs_read_ahead: {'9' * 10_000!r}", "at most 32 characters"),
        (f"{CACHED}\n        vfs_write_back: {'s' * 10_000}", "at most 32 characters"),
        (f"{CACHED}\n        vfs_write_back: -1", "expected an rclone duration"),
        (f"{CACHED}\n        vfs_write_back: nan", "expected an rclone duration"),
        (f"{CACHED}\n        vfs_write_back: 5 s", "expected an rclone duration"),
        (f"{CACHED}\n        vfs_write_back: 1h", "at most 5m (300s): a job's end and a down"),
        (f"{CACHED}\n        vfs_write_back: 99999h", "vfs_write_back: at most 5m (300s)"),
        (f"{CACHED}\n        vfs_write_back: 4m60.5s", "at most 5m (300s)"),
        (f"{CACHED}\n        vfs_write_back: '301'", "at most 5m (300s)"),
        (f"{CACHED}\n        vfs_write_back: {'9' * 31}s", "at most 5m (300s)"),
        (f"{CACHED}\n        vfs_write_back: .inf", "expected an rclone duration"),
        (f"{CACHED}\n        vfs_write_back: 1e309", "expected an rclone duration"),
        (f"{CACHED}\n        vfs_write_back: inf", "expected an rclone duration"),
        (f"{CACHED}\n        vfs_write_back: -1s", "expected an rclone duration"),
        (f"{CACHED}\n        vfs_cache_max_age: {{a: {{b: 1}}}}", "got a map"),
        (f"{CACHED}\n        read_only: yes please", "read_only: expected true or false"),
        (f"{CACHED}\n        read_only: 1", "expected true or false, got 1"),
        ("name: b-1\n    config:\n      mount_cached: [1]", "expected a map of settings"),
        (
            "name: bkt-x\n    config:\n      mount_cached: {transfers: 2}",
            "config.mount_cached can be set only with mode MOUNT_CACHED, not MOUNT",
        ),
        (
            "name: bkt-x\n    mode: MOUNT_CACHED\n    config:\n      mount: {read_only: true}",
            "config.mount can be set only with mode MOUNT, not MOUNT_CACHED",
        ),
        ("name: b-1\n    config:\n      mount: {read_only: 2}", "expected true or false"),
        ("name: b-1\n    mode: MOUNT_CACHED\n    type: DATASET", "unknown type 'DATASET'"),
        (
            "name: b-1\n    type: DATASET_RO",
            "type can be set only with mode MOUNT_CACHED, not MOUNT",
        ),
        (
            "name: b-1\n    mode: COPY\n    type: DATASET_RO",
            "only with mode MOUNT_CACHED, not COPY",
        ),
        (f"name: b-1\n    mode: MOUNT_CACHED\n    type: {'x' * 10_000}", "unknown type 'xxx"),
        ("name: b-1\n    mode: MOUNT_CACHED\n    type: [DATASET_RO]", "type"),
        ('name: b-1\n    config:\n      mount: {"x\\ny": 1}', r"unknown setting 'x\ny'"),
    ],
)
def test_storage_keys_outside_skypilots_schema_are_refused_when_the_task_is_read(
    storage: str, says: str
) -> None:
    with pytest.raises(InvalidTask) as caught:
        Task.from_yaml(f"file_mounts:\n  /d:\n    {storage}\n")
    assert says in caught.value.message and "\n" not in caught.value.message


def test_a_write_back_up_to_the_cap_is_read_and_the_agent_counts_it_alike() -> None:
    """The task reader and the node agent (which imports nothing of stixproto) read an rclone
    duration the same way and keep the same cap: the agent's flush waits for what the task
    reader let through."""
    from stixd.agent import mount as agent_mount
    from stixproto.task.storage import WRITE_BACK_MAX_S, duration_seconds

    assert agent_mount.WRITE_BACK_MAX_S == WRITE_BACK_MAX_S
    durations = {"5m": 300, "300": 300, "4m59.5s": 299.5, "1h": 3600, "1.5s": 1.5}
    durations |= {"100ms": 0.1, ".5": 0.5, "1w": 604800, "2M": 5184000, "1y": 31536000}
    for text, seconds in durations.items():
        assert duration_seconds(text) == pytest.approx(seconds), text
        assert agent_mount.write_back_s({"--vfs-write-back": text}) == pytest.approx(seconds)
    [p] = plans(f"file_mounts:\n  /d:\n    {CACHED}\n        vfs_write_back: 4m60s\n")
    assert p.storage.mount_cached["--vfs-write-back"] == "4m60s"


def test_the_storage_transition_table_is_exactly_skypilots_states_plus_deleting() -> None:
    settled = (S.READY, S.INIT_FAILED, S.UPLOAD_FAILED)
    expected = {
        **{(s, SV.SYNC): S.INIT for s in settled},
        (S.INIT, SV.READY): S.READY,
        (S.INIT, SV.INIT_FAILED): S.INIT_FAILED,
        (S.INIT, SV.UPLOAD_FAILED): S.UPLOAD_FAILED,
        **{(s, SV.DELETE): S.DELETING for s in (S.INIT, *settled)},
    }
    for state in S:
        for event in SV:
            assert STORAGE_TRANSITIONS.get((state, event)) == expected.get((state, event))


@pytest.mark.parametrize("key", ["../escape.txt", "a/../../b", "/etc/passwd", "", "a/./b"])
def test_the_agent_refuses_an_object_key_that_would_leave_the_mount(key: str) -> None:
    from stixd.agent.fetch import parse_items
    from stixd.agent.protocol import RequestError

    with pytest.raises(RequestError) as caught:
        parse_items({"dest": "/tmp/m", "items": [[key, "http://127.0.0.1:1/x"]]})
    assert caught.value.code == "bad_request"


@pytest.mark.anyio
async def test_the_agent_fetches_signed_urls_into_place(tmp_path: Path) -> None:
    from stixd.agent.fetch import fetch

    served = tmp_path / "served"
    (served / "o").mkdir(parents=True)
    (served / "o" / "1.txt").write_text("one")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    def handler(*args: object) -> Quiet:
        return Quiet(*args, directory=str(served))  # type: ignore[arg-type]

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/o/1.txt"
        dest = tmp_path / "mnt"
        got = await fetch({"dest": str(dest), "items": [["deep/x.txt", url]], "workers": 2})
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    assert got == {"files": 1, "bytes": 3}
    assert (dest / "deep" / "x.txt").read_text() == "one"
    assert [p.name for p in (dest / "deep").iterdir()] == ["x.txt"]  # no partial file left


class _Misbehaving(http.server.BaseHTTPRequestHandler):
    """Serves ``/ok/…`` (200), ``/flaky/…`` (a 500 on the first GET of each path, then 200),
    ``/cut/…`` (a body cut short, every time), ``/moved/…`` (a redirect to ``/ok/moved``) and
    anything else as 404; counts GETs and keeps the Authorization header by path."""

    hits: Counter[str] = Counter()
    auth: ClassVar[dict[str, str | None]] = {}

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.hits[self.path] += 1
        self.auth[self.path] = self.headers.get("Authorization")
        if self.path.startswith("/moved/"):
            self.send_response(302)
            self.send_header("Location", "/ok/moved")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path.startswith("/flaky/") and self.hits[self.path] == 1:
            self.send_error(500)
        elif self.path.startswith(("/ok/", "/flaky/")):
            self._body(b"two", len(b"two"))
        elif self.path.startswith("/cut/"):
            self._body(b"short", 100)
            self.close_connection = True
        else:
            self.send_error(404)

    def _body(self, data: bytes, length: int) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture(scope="module")
def misbehaving() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Misbehaving)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.mark.anyio
async def test_the_agent_sends_a_bearer_token_with_each_get_and_never_on_a_redirect(
    misbehaving: str, tmp_path: Path
) -> None:
    from stixd.agent.fetch import fetch, parse_bearer
    from stixd.agent.protocol import RequestError

    items = [["a", f"{misbehaving}/ok/tok"], ["b", f"{misbehaving}/moved/tok"]]
    got = await fetch({"dest": str(tmp_path), "items": items, "workers": 1, "bearer": "ya29.t"})
    assert got == {"files": 2, "bytes": 6} and (tmp_path / "b").read_text() == "two"
    seen = _Misbehaving.auth
    assert seen["/ok/tok"] == seen["/moved/tok"] == "Bearer ya29.t"
    assert seen["/ok/moved"] is None  # where a redirect points is not sent the token
    for bad in ("t\r\nX-Evil: 1", "", "a b", 5, "t\u00e9", "t" * 5000):
        with pytest.raises(RequestError, match="bearer"):
            parse_bearer({"bearer": bad})


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    from stixd.agent import fetch

    monkeypatch.setattr(fetch, "BACKOFF_S", (0.01, 0.01))


@pytest.mark.anyio
@pytest.mark.usefixtures("quick_retries")
async def test_the_agent_tries_a_500_again_and_the_object_lands(
    tmp_path: Path, misbehaving: str
) -> None:
    from stixd.agent.fetch import fetch

    url = f"{misbehaving}/flaky/{tmp_path.name}"
    got = await fetch({"dest": str(tmp_path), "items": [["a/b.txt", url]], "workers": 1})
    assert got == {"files": 1, "bytes": 3}
    assert (tmp_path / "a" / "b.txt").read_text() == "two"
    assert _Misbehaving.hits[url.removeprefix(misbehaving)] == 2
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["b.txt"]


@pytest.mark.anyio
@pytest.mark.usefixtures("quick_retries")
async def test_a_download_that_keeps_breaking_leaves_no_partial_and_names_its_key(
    tmp_path: Path, misbehaving: str
) -> None:
    from stixd.agent.fetch import fetch
    from stixd.agent.protocol import RequestError

    cut = f"/cut/{tmp_path.name}"
    gone = f"/gone/{tmp_path.name}"
    items = [["d/cut.bin", misbehaving + cut], ["d/ok.txt", f"{misbehaving}/ok/x"]]
    with pytest.raises(RequestError) as caught:
        await fetch({"dest": str(tmp_path), "items": items, "workers": 2})
    assert caught.value.code == "fetch_failed"
    message = str(caught.value)
    assert "\n" not in message and message.startswith("1 object(s) not fetched; d/cut.bin: ")
    assert _Misbehaving.hits[cut] == 3  # tried, then twice again
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["ok.txt"]

    with pytest.raises(RequestError) as caught:  # a refusal is final at once
        await fetch({"dest": str(tmp_path), "items": [["e/gone", misbehaving + gone]]})
    assert "e/gone: HTTP Error 404" in str(caught.value)
    assert _Misbehaving.hits[gone] == 1
    assert list((tmp_path / "e").iterdir()) == []


class _CountingBucket:
    """A fake bucket (a store here would only add a server): lists the keys it holds and
    records each signing in ``events``, beside the agents' fetches."""

    kind = "s3"
    name = "b"

    def __init__(self, sizes: dict[str, int], events: list[tuple[str, ...]]) -> None:
        self.sizes = sizes
        self.events = events

    async def objects(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        for key, size in self.sizes.items():
            if key.startswith(prefix):
                yield ObjectInfo(key, size, "")

    async def signed_get(self, key: str, seconds: int) -> str:
        self.events.append(("sign", key))
        return f"http://127.0.0.1:1/{key}?expires={seconds}"


class _RecordingNodes:
    """A fake provider whose nodes' agents record each fetch (the real agent is tested above)."""

    name = "fake"

    def __init__(self, events: list[tuple[str, ...]], fail_rank: int | None = None) -> None:
        self.events = events
        self.fail_rank = fail_rank

    def resolve_dest(self, node: NodeInfo, dest: str) -> Path:
        return Path(f"/n{node.rank}{dest}")

    def connector(self, node: NodeInfo) -> _RecordingNodes._Agent:
        return self._Agent(self, node.rank)

    class _Agent:
        def __init__(self, nodes: _RecordingNodes, rank: int) -> None:
            self.nodes, self.rank = nodes, rank

        async def call(self, op: str, *, deadline: float = 10.0, **fields: Any) -> dict[str, Any]:
            keys = tuple(key for key, _ in fields["items"])
            self.nodes.events.append((op, str(self.rank), fields["dest"], *keys))
            await anyio.lowlevel.checkpoint()  # the other node's fetch runs meanwhile
            if self.rank == self.nodes.fail_rank:
                raise AgentError("fetch_failed", f"1 object(s) not fetched; {keys[0]}: cut")
            return {"files": len(keys), "bytes": 0}


def _nodes(count: int) -> list[NodeInfo]:
    return [NodeInfo(r, "127.0.0.1", NodeStatus.RUNNING, "/s", "/w", "/h") for r in range(count)]


@pytest.mark.anyio
async def test_copy_signs_each_batch_just_before_every_node_fetches_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from stixd.storage import copy

    monkeypatch.setattr(copy, "BATCH", 3)
    monkeypatch.setattr(copy, "BATCH_BYTES", 10)
    sizes = {"p/k0": 4, "p/k1": 4, "p/k2": 4, "p/k3": 1, "p/k4": 1, "p/dir/": 0}
    sizes |= {"p/k5": 1, "p/big": 20, "p/k7": 1, "other": 1}
    events: list[tuple[str, ...]] = []
    bucket = cast(Bucket, _CountingBucket(sizes, events))
    nodes = cast(Provider, _RecordingNodes(events))

    assert await copy.copy_to_nodes(nodes, _nodes(2), bucket, "p/", "/mnt") == 8
    batches = [["k0", "k1"], ["k2", "k3", "k4"], ["k5"], ["big"], ["k7"]]  # count, bytes
    expected: list[tuple[str, ...]] = []
    for keys in batches:  # signed, then fetched by both nodes, before the next is signed
        expected += [("sign", f"p/{k}") for k in keys]
        expected += sorted(("fetch", str(r), f"/n{r}/mnt", *keys) for r in (0, 1))
    got = events[:]
    for at in range(len(got) - 1):  # the two nodes' fetches of a batch in either order
        if got[at][0] == got[at + 1][0] == "fetch":
            got[at : at + 2] = sorted(got[at : at + 2])
    assert got == expected

    events.clear()  # a node that fails ends the copy: the next batch is never signed
    failing = cast(Provider, _RecordingNodes(events, fail_rank=1))
    with pytest.raises(ProvisionError, match=r"^copying s3://b to /mnt on node 1 failed: .* k0"):
        await copy.copy_to_nodes(failing, _nodes(2), bucket, "p", "/mnt")
    assert [e for e in events if e[0] == "sign"] == [("sign", "p/k0"), ("sign", "p/k1")]


@pytest.mark.anyio
async def test_copy_of_one_object_lands_as_the_mount_file_and_of_nothing_as_an_empty_folder() -> (
    None
):
    from stixd.storage.copy import copy_to_nodes

    events: list[tuple[str, ...]] = []
    bucket = cast(Bucket, _CountingBucket({"data/f.bin": 5}, events))
    nodes = cast(Provider, _RecordingNodes(events))
    assert await copy_to_nodes(nodes, _nodes(1), bucket, "data/f.bin", "/mnt/x.bin") == 1
    assert events == [("sign", "data/f.bin"), ("fetch", "0", "/n0/mnt", "x.bin")]
    events.clear()
    assert await copy_to_nodes(nodes, _nodes(1), bucket, "empty", "/mnt/e") == 0
    assert events == [("fetch", "0", "/n0/mnt/e")]
