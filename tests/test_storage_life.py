"""A storage's life beyond one launch, against a real S3 (moto) reached through the daemon's
config ``storage:`` section: a non-persistent bucket goes with the `down` of the last cluster
that mounted it (a persistent one stays), a managed job keeps its bucket across a recovery and
drops it when it ends, the periodic leak reconciler deletes an unowned bucket of this home's
(never another home's, never an owned one), and a `kill -9` between a delete's bucket removal
and its record removal leaves no ghost after the restart."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stixd.config import ConfigError, load_config
from stixd.providers.local.node import kill_marked
from stixd.providers.shared.fuse_mounts import fuse_mounts_under
from tests.conftest import Stix, wait_until
from tests.stores_bed import Emulator, moto_s3
from tests.test_managed_jobs import kill_node, managed
from tests.test_storage import buckets, s3, storages

__all__ = ["moto_s3"]  # the module's one emulator


@pytest.mark.parametrize(
    ("layer", "problem"),
    [
        ({"s3": {"endpoint_url": "ftp://x"}}, "storage.s3.endpoint_url"),
        ({"s3": {"endpoint_url": "http://a\nb"}}, "storage.s3.endpoint_url"),
        ({"s3": {"bucket": "x"}}, "storage.s3.bucket: unknown key"),
        ({"gcs": {"project": "UPPER CASE"}}, "storage.gcs.project"),
        ({"azure": {"account": ["a"]}}, "storage.azure.account"),
        ({"leak_check_minutes": 0}, "storage.leak_check_minutes"),
        ({"delete_leaks": "yes"}, "storage.delete_leaks"),
        ({"s3": "http://x"}, "storage.s3"),
        ({"s3": {"node_credentials_seconds": float("inf")}}, "storage.s3.node_credentials_seconds"),
        ({"s3": {"node_credentials_seconds": 60}}, "storage.s3.node_credentials_seconds"),
        ({"s3": {"node_credentials_seconds": "12h"}}, "storage.s3.node_credentials_seconds"),
        ({"s3": {"node_credentials": "always"}}, "storage.s3.node_credentials"),
        ({"gcs": {"node_credentials": ["scoped"]}}, "storage.gcs.node_credentials"),
        ({"azure": {"node_credentials_seconds": 10**9}}, "storage.azure.node_credentials_seconds"),
    ],
)
def test_a_bad_storage_section_is_refused_in_one_line(
    tmp_path: Path, layer: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path, env={}, overrides=[("client", {"storage": layer})])
    text = str(err.value)
    assert problem in text and "\n" not in text, text


def test_the_storage_section_is_what_the_stores_read(tmp_path: Path) -> None:
    layer = {
        "s3": {"endpoint_url": "http://127.0.0.1:9", "region": "eu-west-1"},
        "gcs": {"project": "p-1", "use_metadata_server": True},
    }
    env = {"STIX__STORAGE__AZURE__ACCOUNT": "acct"}
    cfg = load_config(tmp_path, env=env, overrides=[("client", {"storage": layer})])
    assert cfg.storage.stores() == {
        "s3": {"endpoint_url": "http://127.0.0.1:9", "region": "eu-west-1"},
        "r2": {},
        "gcs": {"project": "p-1", "use_metadata_server": True},
        "azure": {"account": "acct"},
    }


@pytest.fixture
def sx(stix: Stix, moto_s3: Emulator) -> Iterator[Stix]:
    """A home whose daemon finds the emulator in its config file (only the credentials come
    from the environment), with a leak reconciler that deletes at once."""
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_PROFILE"):
        stix.env.pop(name, None)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        stix.env[name] = moto_s3.env[name]
    stix.env["STIX__LOCAL__NETWORK"] = "host"  # the emulator is on the host's loopback
    (stix.home / "config.yaml").write_text(
        "storage:\n"
        f"  s3: {{endpoint_url: '{moto_s3.url}', region: us-east-1}}\n"
        "  leak_check_minutes: 0.01\n"
        "  leak_min_age_minutes: 0\n"
        "  delete_leaks: true\n"
    )
    try:
        yield stix
    finally:  # a mount a failed test left behind goes before the home does
        for point in fuse_mounts_under(stix.home):
            subprocess.run(["fusermount3", "-uz", point], capture_output=True, check=False)


def plant(emu: Emulator, home: Path | None, name: str) -> None:
    """A bucket labelled as ``home``'s (made by stix there) that no storage of it records."""
    from stixd.storage.stores import LABEL_STORAGE, StoreKind, home_id, open_stores

    async def make() -> None:
        stores = open_stores(emu.config, emu.env, home_id(home) if home else "0" * 8)
        try:
            await stores.bucket(StoreKind.S3, name).create({LABEL_STORAGE: name})
        finally:
            await stores.aclose()

    asyncio.run(make())


def sql(stix: Stix, query: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with sqlite3.connect(stix.home / "state.db") as db:
        return db.execute(query, args).fetchall()


@pytest.mark.slow
def test_down_of_the_last_cluster_deletes_a_non_persistent_bucket_and_leaks_are_reconciled(
    sx: Stix, moto_s3: Emulator, tmp_path: Path, task_file: Callable[[str], Path]
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("alpha\n")
    task = task_file(
        f"""
file_mounts:
  ~/tmp:
    name: life-scratch
    source: {data}
    persistent: false
    mode: COPY
  ~/keep:
    name: life-keep
    source: {data}
    mode: COPY
  ~/keep2:
    name: life-keep2
    source: {data}
    mode: COPY
run: cat ~/tmp/a.txt ~/keep/a.txt
"""
    )
    for cluster in ("life1", "life2"):
        done = sx.run("launch", "-c", cluster, str(task), "-y", timeout=120)
        assert done.returncode == 0, done.stderr
    assert {"life-scratch", "life-keep", "life-keep2"} <= buckets(moto_s3)

    # the reconciler deletes a leaked bucket of this home's, not another home's nor an owned one
    plant(moto_s3, sx.home, "life-leaked")
    plant(moto_s3, None, "life-elsewhere")
    wait_until(lambda: "life-leaked" not in buckets(moto_s3), timeout=60, interval=0.3)
    assert {"life-scratch", "life-keep", "life-elsewhere"} <= buckets(moto_s3)

    sx.run("down", "life1", "-y", check=True, timeout=60)
    assert storages(sx)["life-scratch"]["status"] == "READY"  # life2 still mounts it
    assert "life-scratch" in buckets(moto_s3)
    sx.run("down", "life2", "-y", check=True, timeout=60)
    wait_until(lambda: "life-scratch" not in storages(sx), timeout=30, interval=0.2)
    assert "life-scratch" not in buckets(moto_s3)
    assert set(storages(sx)) == {"life-keep", "life-keep2"}
    assert {"life-keep", "life-keep2"} <= buckets(moto_s3)
    events = sx.json("events", "--kind", "storage", "life-scratch")
    assert any("its last cluster (life2) is gone" in e["why"] for e in events), events

    # kill -9 after a delete removed the bucket but before it removed the record (life-keep),
    # and after it wrote DELETING but before it touched the bucket (life-keep2)
    sx.kill_daemon()
    s3(moto_s3).delete_object(Bucket="life-keep", Key="a.txt")
    s3(moto_s3).delete_bucket(Bucket="life-keep")
    sql(sx, "UPDATE actors SET state='DELETING' WHERE kind='storage'")
    assert "life-keep" not in storages(sx)  # its bucket is gone: never shown as a ghost
    wait_until(lambda: sql(sx, "SELECT id FROM actors WHERE kind='storage'") == [], timeout=30)
    assert storages(sx) == {}  # the restarted daemon finished both deletes
    events = sx.json("events", "--kind", "storage", "life-keep")
    assert "deleted (finished after a restart)" in events[-1]["why"], events
    log = (sx.home / "stixd.log").read_text()
    assert "life-keep2" not in buckets(moto_s3)
    assert "storage_reconcile_failed" not in log and "storage_prune_failed" not in log
    assert "life-elsewhere" in buckets(moto_s3)


@pytest.mark.slow
def test_a_recovered_managed_job_reads_its_mounted_bucket_and_volume_and_its_end_deletes_it(
    sx: Stix, moto_s3: Emulator, tmp_path: Path, task_file: Callable[[str], Path]
) -> None:
    """One managed job with a MOUNT bucket, a COPY bucket and a volume, its node killed mid-run:
    the recovered run reads the copy again and what the first run wrote through the mount and
    onto the volume (the recovery does not upload the local source again over the object the
    job changed, as SkyPilot uploads it once); the job's end deletes the buckets (not
    persistent) and frees the volume."""
    sx.env["STIX__DAEMON__HEALTH_CHECK_SECONDS"] = "1"
    volume = sx.home / "vol.yaml"
    volume.write_text("name: life-vol\ntype: k8s-hostpath\ninfra: local\n")
    sx.run("volumes", "apply", str(volume), "-y", check=True, timeout=60)
    data = tmp_path / "data"
    data.mkdir()
    (data / "word.txt").write_text("bucket-word\n")
    ck = tmp_path / "ck"
    ck.mkdir()
    task = task_file(
        f"""
name: mjb
file_mounts:
  ~/in:
    name: life-mj
    source: {data}
    persistent: false
    mode: MOUNT
  ~/cp:
    name: life-mjc
    source: {data}
    persistent: false
    mode: COPY
volumes:
  /vol: life-vol
run: |
  set -e
  b=$(ls ~/in | grep -c '^run-' || true)
  v=$(cat ~/vol/runs 2>/dev/null | wc -l)
  echo "read=$(cat ~/in/word.txt) copied=$(cat ~/cp/word.txt) bucket=$b volume=$v" \\
    >> {ck}/history
  echo "$SKYPILOT_TASK_ID" > ~/in/run-$(date +%s%N)
  echo run >> ~/vol/runs
  if [ "$v" -eq 0 ]; then echo job-word > ~/in/word.txt; sleep 300; fi  # killed meanwhile
"""
    )
    sx.run("jobs", "launch", "-d", "-y", str(task), check=True, timeout=120)

    def written() -> bool:  # through the mount into the bucket, and onto the volume
        if "life-mj" not in buckets(moto_s3):
            return False
        found = s3(moto_s3).list_objects_v2(Bucket="life-mj").get("Contents") or []
        runs = sx.home / "volumes" / "life-vol" / "runs"
        word = s3(moto_s3).get_object(Bucket="life-mj", Key="word.txt")["Body"].read()
        return (
            any(o["Key"].startswith("run-") for o in found)
            and runs.exists()
            and word == b"job-word\n"
        )

    wait_until(written, timeout=60, interval=0.3)
    assert kill_node(sx, "mjb-1") > 0
    kill_marked(sx.node_dir("mjb-1").parent)  # its rclone too: a preemption takes the machine
    wait_until(lambda: managed(sx, 1)["recoveries"] == 1, timeout=30, interval=0.2)
    assert {"life-mj", "life-mjc"} <= buckets(moto_s3)  # the recovery keeps them
    job = wait_until(
        lambda: (j := managed(sx, 1))["status"] in ("SUCCEEDED", "FAILED") and j,
        timeout=90,
        interval=0.3,
    )
    assert job["status"] == "SUCCEEDED", sx.run("jobs", "logs", "1", "--controller").stdout
    assert (ck / "history").read_text().splitlines() == [
        "read=bucket-word copied=bucket-word bucket=0 volume=0",
        "read=job-word copied=bucket-word bucket=1 volume=1",
    ]
    wait_until(lambda: not {"life-mj", "life-mjc"} & buckets(moto_s3), timeout=30, interval=0.3)
    assert not {"life-mj", "life-mjc"} & set(storages(sx))
    events = sx.json("events", "--kind", "storage", "life-mj")
    assert not [e for e in events if "restarted" in e["why"]], events  # no restart happened
    assert fuse_mounts_under(sx.home) == []  # the killed node's mount went with its teardown
    wait_until(lambda: volume_status(sx, "life-vol") == "READY", timeout=30)  # freed
    sx.run("volumes", "delete", "life-vol", "-y", check=True)


def volume_status(sx: Stix, name: str) -> str:
    return next(str(v["status"]) for v in sx.json("volumes", "ls") if v["name"] == name)


def test_a_leaked_bucket_is_only_reported_when_the_policy_does_not_delete(
    sx: Stix, moto_s3: Emulator
) -> None:
    config = (sx.home / "config.yaml").read_text()
    (sx.home / "config.yaml").write_text(
        config.replace("delete_leaks: true", "delete_leaks: false")
    )
    sx.run("status", check=True, timeout=60)  # the daemon is up before the bucket is made
    plant(moto_s3, sx.home, "life-reported")
    hint = wait_until(
        lambda: "life-reported" in (out := sx.run("status", check=True).stdout) and out,
        timeout=30,
        interval=0.3,
    )
    assert "1 leaked resource(s) no cluster owns (s3://life-reported)" in hint
    assert "life-reported" in buckets(moto_s3)
    log = (sx.home / "stixd.log").read_text()
    assert "life-reported" in log and "bucket_leak_deleted" not in log
    s3(moto_s3).delete_bucket(Bucket="life-reported")


def test_the_leak_grace_runs_from_the_bucket_s_creation_by_the_store_s_clock(
    sx: Stix, moto_s3: Emulator
) -> None:
    """A bucket of this home's that no storage owns is a leak only once it is older than the
    grace by its own CreationDate: one made an hour ago (backdated by the emulator) goes at
    the first look, one made now stays (an in-flight launch may be about to record it)."""
    config = (sx.home / "config.yaml").read_text()
    (sx.home / "config.yaml").write_text(
        config.replace("leak_min_age_minutes: 0", "leak_min_age_minutes: 30")
    )
    sx.run("status", check=True, timeout=60)  # the daemon is up before the buckets are made
    plant(moto_s3, sx.home, "life-young")
    moto_s3.clock.write_text("3600")
    try:
        plant(moto_s3, sx.home, "life-old")
    finally:
        moto_s3.clock.write_text("0")
    wait_until(lambda: "life-old" not in buckets(moto_s3), timeout=30, interval=0.3)
    assert "life-young" in buckets(moto_s3)  # seen by the same look, and too young
    log = (sx.home / "stixd.log").read_text()
    assert "s3://life-old" in log and "s3://life-young" not in log
    s3(moto_s3).delete_bucket(Bucket="life-young")
