"""A storage's life beyond one launch, against a real S3 (moto) reached through the daemon's
config ``storage:`` section: a non-persistent bucket goes with the `down` of the last cluster
that mounted it (a persistent one stays), a managed job keeps its bucket across a recovery and
drops it when it ends, the periodic leak reconciler deletes an unowned bucket of this home's
(never another home's, never an owned one), and a `kill -9` between a delete's bucket removal
and its record removal leaves no ghost after the restart."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stixd.config import ConfigError, load_config
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
    yield stix


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
def test_a_recovered_managed_job_reads_its_bucket_again_and_its_end_deletes_it(
    sx: Stix, moto_s3: Emulator, tmp_path: Path, task_file: Callable[[str], Path]
) -> None:
    sx.env["STIX__DAEMON__HEALTH_CHECK_SECONDS"] = "1"
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
    mode: COPY
run: |
  echo "read=$(cat ~/in/word.txt)" >> {ck}/history
  n=$(cat {ck}/step 2>/dev/null || echo 0)
  while [ $n -lt 6 ]; do n=$((n+1)); echo $n > {ck}/step; sleep 0.4; done
"""
    )
    sx.run("jobs", "launch", "-d", "-y", str(task), check=True, timeout=120)
    wait_until(lambda: (ck / "step").exists() and int((ck / "step").read_text()) >= 2, timeout=60)
    assert kill_node(sx, "mjb-1") > 0
    wait_until(lambda: managed(sx, 1)["recoveries"] == 1, timeout=30, interval=0.2)
    assert "life-mj" in buckets(moto_s3)  # the recovery keeps it
    job = wait_until(
        lambda: (j := managed(sx, 1))["status"] in ("SUCCEEDED", "FAILED") and j,
        timeout=90,
        interval=0.3,
    )
    assert job["status"] == "SUCCEEDED", sx.run("jobs", "logs", "1", "--controller").stdout
    assert (ck / "history").read_text().splitlines() == ["read=bucket-word"] * 2
    wait_until(lambda: "life-mj" not in buckets(moto_s3), timeout=30, interval=0.3)
    assert "life-mj" not in storages(sx)


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
