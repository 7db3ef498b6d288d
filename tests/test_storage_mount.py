"""MOUNT and MOUNT_CACHED on the local infra: rclone and FUSE for real against each store's
emulator (S3 on moto, GCS on fake-gcs-server, Azure on azurite). A job reads and writes through
both modes; the moment a MOUNT_CACHED job is SUCCEEDED its file is in the bucket; `down` leaves
no FUSE mount behind; a node without rclone is told how to install it in one sentence; a mount's
S3 keys are renewed under its running rclone (moto refusing the old ones), by a daemon restarted
after ``kill -9`` too. R2 mounts get Cloudflare's temporary keys for their one bucket (from
tests/fake_r2_api.py; moto refuses them on any other bucket), renewed the same way."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest

from stixd.agent import mount as agent_mount
from stixd.agent.protocol import RequestError
from stixd.providers.shared.fuse_mounts import fuse_mounts_under
from stixd.storage.mount import SESSION_KEYS, node_keys
from stixd.storage.stores import LABEL_STORAGE, RcloneRemote, StoreKind, open_stores
from stixd.storage.stores import gcs as gcs_store
from stixd.storage.stores import s3 as s3_store
from tests import fake_r2_api
from tests.conftest import Stix, reap, wait_until
from tests.fake_gcs_sts import FakeSts, served
from tests.stores_bed import (
    Emulator,
    azurite,
    fake_gcs,
    gcs_bucket_holding,
    moto_s3,
    s3_client,
)

__all__ = ["azurite", "fake_gcs", "moto_s3"]  # the module's emulator fixtures

EMULATORS = {"s3": "moto_s3", "gcs": "fake_gcs", "azure": "azurite"}


def keys_in(emu: Emulator, store: str, bucket: str) -> set[str]:
    """The bucket's keys as the emulator lists them right now, read by a client of this test
    (not the daemon's)."""

    async def listing() -> set[str]:
        stores = open_stores(emu.config, emu.env, "testhome")
        try:
            return {o.key async for o in stores.bucket(StoreKind(store), bucket).objects()}
        finally:
            await stores.aclose()

    return anyio.run(listing)


def mount_pids(node: Path) -> set[int]:
    records = (node / ".stix" / agent_mount.MOUNTS_DIR).glob(f"*/{agent_mount.RECORD}")
    return {int(json.loads(r.read_text())["pid"]) for r in records}


def bucket_exists(emu: Emulator, store: str, bucket: str) -> bool:
    async def ask() -> bool:
        stores = open_stores(emu.config, emu.env, "testhome")
        try:
            return await stores.bucket(StoreKind(store), bucket).exists()
        finally:
            await stores.aclose()

    return anyio.run(ask)


@pytest.mark.parametrize("store", ["s3", "gcs", "azure"])
def test_each_store_says_when_a_bucket_was_made_by_its_own_clock(
    store: str, request: pytest.FixtureRequest
) -> None:
    """The leak reconciler's grace runs from this (tests/test_storage_life.py shows the grace)."""
    import time

    emu: Emulator = request.getfixturevalue(EMULATORS[store])

    async def ask() -> tuple[float | None, float | None]:
        stores = open_stores(emu.config, emu.env, "testhome")
        try:
            bucket = stores.bucket(StoreKind(store), f"stix-born-{store}")
            await bucket.create({})
            made = await bucket.created()
            await bucket.delete()
            return made, await bucket.created()
        finally:
            await stores.aclose()

    before = time.time()
    made, after_delete = anyio.run(ask)
    assert made is not None and before - 60 <= made <= time.time() + 60  # same machine's clock
    assert after_delete is None


@pytest.fixture(scope="module")
def r2_api(moto_s3: Emulator) -> Iterator[str]:
    """The fake Cloudflare API (one process for the module), minting R2 keys moto keeps to
    their bucket: its base URL."""
    with fake_r2_api.r2_api_process(moto_s3) as url:
        yield url


def r2_node_keys(node_state: Path, dest: str) -> dict[str, str]:
    """The keys the node's rclone reads for the mount at ``dest`` (``~/x``), as rclone's SDK
    reads them (``credential_process``'s answer)."""
    for folder in (node_state / agent_mount.MOUNTS_DIR).iterdir():
        if record_of(folder)["dest"].endswith(dest.removeprefix("~")):
            found: dict[str, str] = json.loads((folder / agent_mount.KEYS).read_text())
            return found
    raise AssertionError(f"no mount at {dest} on the node")


def moto_scope(emu: Emulator, key_id: str) -> dict[str, Any] | None:
    """The bucket (and end) moto keeps a minted R2 key to; None for a key it does not keep."""
    found: dict[str, Any] | None = json.loads(emu.scoped.read_text() or "{}").get(key_id)
    return found


@pytest.fixture
def sx(stix: Stix, request: pytest.FixtureRequest) -> Iterator[tuple[Stix, Emulator, str]]:
    """A stix home whose daemon reaches one store's emulator, its nodes on the host's network
    (the emulator listens on the host's loopback). Whatever the test leaves mounted under the
    home is unmounted before the home is removed, even when the test fails."""
    store = str(request.param)
    emu: Emulator = request.getfixturevalue(EMULATORS[store])
    stix.env.update({k: v for k, v in emu.env.items() if k != "HOME"})
    stix.env["STIX__LOCAL__NETWORK"] = "host"
    if store == "s3":  # R2 too: S3's API at its own endpoint, the same moto here, and
        stix.env["R2_ENDPOINT_URL"] = emu.url  # its nodes' keys from the fake Cloudflare API
        stix.env["STIX__STORAGE__R2__API_ENDPOINT"] = request.getfixturevalue("r2_api")
        stix.env["STIX__STORAGE__R2__ACCOUNT_ID"] = fake_r2_api.ACCOUNT
        stix.env["CLOUDFLARE_API_TOKEN"] = fake_r2_api.TOKEN
    if store == "gcs":  # the emulator's project (its config names it; the daemon reads env)
        stix.env["GOOGLE_CLOUD_PROJECT"] = emu.config["gcs"]["project"]
    try:
        yield stix, emu, store
    finally:
        with contextlib.suppress(subprocess.TimeoutExpired):
            stix.run("down", "-a", "-y", timeout=60)
        for point in fuse_mounts_under(stix.home):
            subprocess.run(["fusermount3", "-uz", point], capture_output=True, check=False)


@pytest.mark.slow
@pytest.mark.parametrize("sx", ["s3", "gcs", "azure"], indirect=True)
def test_a_job_reads_and_writes_through_mount_and_mount_cached_and_down_unmounts(
    sx: tuple[Stix, Emulator, str], tmp_path: Path, task_file: Callable[[str], Path]
) -> None:
    stix, emu, store = sx
    data = tmp_path / "data"
    data.mkdir()
    (data / "in.txt").write_text("from the bucket\n")
    mount_bucket, cached_bucket = f"stix-mnt-{store}", f"stix-mc-{store}"
    r2 = 2 if store == "s3" else 0  # R2's two mount modes beside S3's (the same emulator)
    r2_mount = (
        f"""
  ~/r:
    name: stix-mc-r2
    source: {data}
    store: r2
    mode: MOUNT_CACHED
  ~/s:
    name: stix-mnt-r2
    source: {data}
    store: r2
    mode: MOUNT
"""
        if r2
        else ""
    )
    r2_run = (
        "  cat ~/r/in.txt ~/s/in.txt\n"
        "  echo through-r2 > ~/r/out-r.txt && echo through-r2 > ~/s/out-s.txt\n"
        if r2
        else ""
    )
    task = task_file(
        f"""
file_mounts:{r2_mount}
  ~/m:
    name: {mount_bucket}
    source: {data}
    store: {store}
    mode: MOUNT
  ~/c:
    name: {cached_bucket}
    source: {data}
    store: {store}
    mode: MOUNT_CACHED
    config:
      mount_cached:
        vfs_write_back: 3s
run: |
  set -e
  cat ~/m/in.txt ~/c/in.txt
  echo through-mount > ~/m/out-m.txt
  echo through-cache > ~/c/out-c.txt
{r2_run}"""
    )
    done = stix.run("launch", "-c", "mnt", str(task), "-y", "-d", timeout=180)
    assert done.returncode == 0, done.stderr
    scheme = {"gcs": "gs"}.get(store, store)  # as a task names the bucket
    assert f"Mounted {scheme}://{cached_bucket}" in done.stdout + done.stderr
    home = stix.node_dir("mnt")
    points = [str(home / d) for d in ("c", "m", "r", "s")[: 2 + r2]]
    assert sorted(fuse_mounts_under(home)) == points

    # the moment the job counts as done, the write-back cache (3 s) has reached the bucket
    wait_until(lambda: stix.job_status("mnt", 1) not in (None, "PENDING", "RUNNING"), timeout=90)
    assert stix.job_status("mnt", 1) == "SUCCEEDED"
    assert "out-c.txt" in keys_in(emu, store, cached_bucket)
    assert "out-m.txt" in keys_in(emu, store, mount_bucket)
    if r2:
        assert "out-r.txt" in keys_in(emu, "r2", "stix-mc-r2")
        assert "out-s.txt" in keys_in(emu, "r2", "stix-mnt-r2")
    logs = stix.run("logs", "mnt", "1", "--no-follow", timeout=30).stdout
    assert logs.count("from the bucket") == 2 + r2
    if r2:  # the job read and wrote R2 on Cloudflare's temporary keys for each bucket alone
        assert "daemon's own R2 keys" not in done.stdout + done.stderr
        state = stix.state_dir("mnt")
        for dest, r2_bucket, other in (
            ("~/s", "stix-mnt-r2", "stix-mc-r2"),
            ("~/r", "stix-mc-r2", "stix-mnt-r2"),
        ):
            keys = r2_node_keys(state, dest)
            assert keys["AccessKeyId"] != "testing" and keys["SessionToken"]
            assert (moto_scope(emu, keys["AccessKeyId"]) or {}).get("bucket") == r2_bucket
            scoped = s3_client(
                emu,
                keys={
                    "access_key_id": keys["AccessKeyId"],
                    "secret_access_key": keys["SecretAccessKey"],
                    "session_token": keys["SessionToken"],
                },
            )
            with pytest.raises(scoped.exceptions.ClientError, match="AccessDenied"):
                scoped.list_objects_v2(Bucket=other)
            scoped.close()

    # a relaunch on the UP cluster keeps the mounts (and their rclone) its jobs may be using
    pids = mount_pids(home)
    again = stix.run("launch", "-c", "mnt", str(task), "-y", "-d", timeout=120)
    assert again.returncode == 0, again.stderr
    assert mount_pids(home) == pids and len(pids) == 2 + r2

    stix.run("down", "mnt", "-y", check=True, timeout=90)
    assert fuse_mounts_under(stix.home) == []
    assert "out-c.txt" in keys_in(emu, store, cached_bucket)  # the bucket outlives the node


@pytest.mark.parametrize("sx", ["s3"], indirect=True)
def test_down_after_the_agent_died_unmounts_and_never_deletes_through_the_mount(
    sx: tuple[Stix, Emulator, str], tmp_path: Path, task_file: Callable[[str], Path]
) -> None:
    stix, emu, store = sx
    data = tmp_path / "keep"
    data.mkdir()
    (data / "kept.txt").write_text("kept\n")
    task = task_file(
        f"""
file_mounts:
  ~/k:
    name: stix-keep-{store}
    source: {data}
    store: {store}
    mode: MOUNT
"""
    )
    # the daemon on a session token: STS makes no federation token of it, so (node_credentials
    # auto) the node gets the daemon's keys, and the launch and the daemon's log say so
    stix.env["AWS_SESSION_TOKEN"] = "daemon-session"
    done = stix.run("launch", "-c", "dead", str(task), "-y", check=True, timeout=120)
    said = "the nodes got the daemon's own S3 keys for bucket 'stix-keep-s3'"
    assert said in done.stdout + done.stderr
    assert "storage_node_credentials" in (stix.home / "stixd.log").read_text()
    home = stix.node_dir("dead")
    assert fuse_mounts_under(home) == [str(home / "k")]
    for pid in stix.agents("dead"):  # its rclone lives on; only the agent could unmount
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not stix.agents("dead"), timeout=10)
    stix.run("down", "dead", "-y", check=True, timeout=90)
    assert fuse_mounts_under(stix.home) == []
    assert keys_in(emu, store, f"stix-keep-{store}") == {"kept.txt"}  # the removal stopped at it


def cluster_data(stix: Stix, cluster: str, data: dict[str, Any] | None = None) -> Any:
    """The cluster's stored data (the daemon stopped, to write ``data`` in its place)."""
    with contextlib.closing(sqlite3.connect(stix.home / "state.db")) as db, db:
        if data is not None:
            update = "UPDATE actors SET data=? WHERE kind='cluster' AND id=?"
            db.execute(update, (json.dumps(data), cluster))
        [(text,)] = db.execute("SELECT data FROM actors WHERE kind='cluster' AND id=?", (cluster,))
    return json.loads(text)


@pytest.mark.slow
@pytest.mark.parametrize("sx", ["s3"], indirect=True)
def test_a_mounts_keys_are_renewed_when_due_by_a_daemon_restarted_after_kill_9(
    sx: tuple[Stix, Emulator, str], tmp_path: Path, task_file: Callable[[str], Path]
) -> None:
    """S3's keys and R2's (Cloudflare's temporary credentials for its bucket) alike."""
    stix, emu, store = sx
    data = tmp_path / "renew"
    data.mkdir()
    (data / "r.txt").write_text("renewed\n")
    task = task_file(
        f"""
file_mounts:
  ~/r:
    name: stix-renew-{store}
    source: {data}
    store: {store}
    mode: MOUNT
  ~/q:
    name: stix-renew-r2
    source: {data}
    store: r2
    mode: MOUNT
"""
    )
    stix.run("launch", "-c", "renew", str(task), "-y", check=True, timeout=120)
    stored = cluster_data(stix, "renew")
    entries = sorted(stored["mount_keys"], key=lambda e: e["dest"])
    assert [(e["store"], e["bucket"], e["dest"]) for e in entries] == [
        ("r2", "stix-renew-r2", "~/q"),
        (store, f"stix-renew-{store}", "~/r"),
    ]
    for entry in entries:  # renewed at two thirds of the keys' 12 h
        assert entry["renew_at"] - entry["expires_at"] == pytest.approx(-4 * 3600, abs=5)
    mounts = stix.state_dir("renew") / agent_mount.MOUNTS_DIR
    folders = {record_of(f)["dest"][-1]: f for f in mounts.iterdir()}
    before = {d: record_of(f) for d, f in folders.items()}
    r2_before = r2_node_keys(stix.state_dir("renew"), "~/q")["AccessKeyId"]

    # the daemon dies and stays down past the renewal time: the restarted one renews at once
    stix.kill_daemon()
    due = [{**e, "renew_at": time.time()} for e in entries]
    cluster_data(stix, "renew", {**stored, "mount_keys": due})
    assert "renew" in stix.clusters()  # a daemon again, the cluster's actor re-armed

    def all_renewed() -> bool:  # on the nodes, and then in the cluster's row
        if any(record_of(f)["expires_at"] <= before[d]["expires_at"] for d, f in folders.items()):
            return False
        later = time.time() + 7 * 3600
        return all(e["renew_at"] > later for e in cluster_data(stix, "renew")["mount_keys"])

    wait_until(all_renewed, timeout=60)  # a loaded machine's restart and two renewals
    again = cluster_data(stix, "renew")["mount_keys"]
    assert len(again) == 2
    assert [e["failures"] for e in again] == [0, 0]
    for d, folder in folders.items():
        assert record_of(folder)["pid"] == before[d]["pid"]  # the same rclone: no remount
        assert (stix.node_dir("renew") / d / "r.txt").read_text() == "renewed\n"
    r2_after = r2_node_keys(stix.state_dir("renew"), "~/q")["AccessKeyId"]
    assert r2_after not in (r2_before, "testing")  # fresh temporary keys, for that bucket
    assert (moto_scope(emu, r2_after) or {}).get("bucket") == "stix-renew-r2"
    assert "mount_keys_renewed" in (stix.home / "stixd.log").read_text()
    stix.run("down", "renew", "-y", check=True, timeout=90)
    assert not cluster_data(stix, "renew").get("mount_keys")  # gone with the nodes


@pytest.mark.slow
@pytest.mark.parametrize("sx", ["s3"], indirect=True)
def test_start_mounts_the_buckets_a_stop_unmounted(
    sx: tuple[Stix, Emulator, str], tmp_path: Path, task_file: Callable[[str], Path]
) -> None:
    """A stop unmounts every bucket (flushing it); `start` mounts them again with fresh keys
    and their renewal armed, so a job after it reads and writes the bucket, not an empty
    folder where it was. An `exec`'d job (its task declares no mount) counts as done only once
    its writes through the cluster's mounts are in the bucket."""
    stix, emu, store = sx
    data = tmp_path / "life"
    data.mkdir()
    (data / "in.txt").write_text("still the bucket\n")
    bucket = f"stix-life-{store}"
    task = task_file(
        f"""
file_mounts:
  ~/m:
    name: {bucket}
    source: {data}
    store: {store}
    mode: MOUNT
  ~/c:
    name: {bucket}
    source: {data}
    store: {store}
    mode: MOUNT_CACHED
    config:
      mount_cached:
        vfs_write_back: 3s
  ~/g:
    name: stix-gone-{store}
    source: {data}
    store: {store}
    mode: MOUNT
"""
    )
    stix.run("launch", "-c", "life", str(task), "-y", check=True, timeout=120)
    stix.run("stop", "life", "-y", check=True, timeout=90)
    assert fuse_mounts_under(stix.home) == [] and not cluster_data(stix, "life")["mount_keys"]
    # a storage deleted while the cluster is stopped is not mounted again, and said
    stix.run("storage", "delete", f"stix-gone-{store}", "-y", check=True, timeout=60)
    started = stix.run("start", "life", "-y", timeout=120)
    assert started.returncode == 0, started.stderr
    assert f"Storage stix-gone-{store} was deleted" in started.stdout + started.stderr
    home = stix.node_dir("life")
    assert sorted(fuse_mounts_under(home)) == [str(home / "c"), str(home / "m")]
    keys = cluster_data(stix, "life")["mount_keys"]  # renewed again, as at launch
    assert sorted(k["dest"] for k in keys) == ["~/c", "~/m"]
    run = "set -e; cat ~/m/in.txt; echo back > ~/m/new.txt; echo cached > ~/c/cached.txt"
    stix.run("exec", "life", "-d", run, check=True)
    wait_until(lambda: stix.job_status("life", 1) not in (None, "PENDING", "RUNNING"), timeout=60)
    assert stix.job_status("life", 1) == "SUCCEEDED"
    assert keys_in(emu, store, bucket) == {"in.txt", "new.txt", "cached.txt"}  # flushed first
    assert "still the bucket" in stix.run("logs", "life", "1", "--no-follow", timeout=30).stdout
    stix.run("down", "life", "-y", check=True, timeout=90)
    assert not cluster_data(stix, "life").get("bucket_mounts")  # gone with the nodes


@pytest.mark.parametrize("sx", ["s3"], indirect=True)
def test_a_launch_on_a_node_without_rclone_fails_in_one_sentence_and_leaves_no_bucket(
    sx: tuple[Stix, Emulator, str], tmp_path: Path, task_file: Callable[[str], Path]
) -> None:
    stix, emu, store = sx
    stix.env["PATH"] = os.path.dirname(sys.executable)  # the node's agent inherits it
    data = tmp_path / "d"
    data.mkdir()
    (data / "x.txt").write_text("x\n")
    task = task_file(
        f"""
file_mounts:
  ~/x:
    name: stix-norclone-{store}
    source: {data}
    store: {store}
    persistent: false
    mode: MOUNT_CACHED
run: echo never
"""
    )
    done = stix.run("launch", "-c", "norc", str(task), "-y", timeout=120)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert "no rclone" in last and "apt-get install -y rclone fuse3" in last, done.stderr
    assert not bucket_exists(emu, store, f"stix-norclone-{store}")  # released with the launch


def test_a_node_without_rclone_is_told_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    request = {
        "dest": str(tmp_path / "m"),
        "remote": "s3",
        "keys": {"provider": "Other"},
        "path": "bucket",
        "mode": "MOUNT_CACHED",
        "flags": {},
    }
    with pytest.raises(RequestError) as caught:
        agent_mount.mount(tmp_path, request)
    assert caught.value.code == "missing_tools"
    message = caught.value.message
    assert "no rclone" in message and "apt-get install -y rclone fuse3" in message
    assert message.count(". ") == 0 and "\n" not in message  # one sentence
    assert not (tmp_path / "m").exists() and not (tmp_path / agent_mount.MOUNTS_DIR).exists()


def test_a_gcs_key_file_travels_as_its_content(tmp_path: Path) -> None:
    key = tmp_path / "sa.json"
    key.write_text('{\n  "type": "service_account",\n  "client_email": "a@b"\n}\n')
    keys = node_keys({"service_account_file": str(key), "bucket_policy_only": "true"})
    assert keys == {
        "bucket_policy_only": "true",
        "service_account_credentials": '{"type":"service_account","client_email":"a@b"}',
    }
    agent_mount.parse_mount(  # one line, as the agent's config needs it
        {"dest": "/m", "remote": "google cloud storage", "keys": keys, "path": "b", "mode": "MOUNT"}
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("flags", {"--daemon": "x"}),  # only the mount_cached knobs
        ("flags", {"--vfs-write-back": "1s --allow-root"}),
        ("flags", {"--vfs-write-back": "301s"}),  # over the task reader's cap
        ("keys", {"secret_access_key": "a\n[other]"}),  # no second section smuggled in
        ("path", "bucket/../../etc"),
        ("dest", "relative/path"),
    ],
)
def test_the_mount_op_refuses_what_could_escape_its_config(
    tmp_path: Path, field: str, value: object
) -> None:
    request: dict[str, object] = {
        "dest": str(tmp_path / "m"),
        "remote": "s3",
        "keys": {"provider": "Other"},
        "path": "bucket",
        "mode": "MOUNT",
        "flags": {},
        field: value,
    }
    with pytest.raises(RequestError) as caught:
        agent_mount.parse_mount(request)
    assert caught.value.code == "bad_request"


def test_flush_reports_a_mount_whose_rclone_is_gone_and_clean_stale_unmounts_it(
    tmp_path: Path,
) -> None:
    folder = tmp_path / agent_mount.MOUNTS_DIR / "abc"
    folder.mkdir(parents=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    record = f'{{"dest": "{tmp_path / "m"}", "bucket": "b", "pid": {dead.pid}, "port": 1}}'
    (folder / agent_mount.RECORD).write_text(record)
    problem = agent_mount.flush_all(tmp_path, timeout=1.0)
    assert problem is not None and "ended before its writes were flushed" in problem
    assert agent_mount.clean_stale(tmp_path) == 1
    assert not folder.exists() and agent_mount.flush_all(tmp_path) is None
    assert os.path.isdir(tmp_path)


def test_a_job_s_end_waits_only_for_the_mounts_its_task_declared(tmp_path: Path) -> None:
    """The daemon hands each node its job's bucket mount paths; the end of a job waits only
    for those: another job's mount (here one that can never flush) does not hold it."""
    from stixd.agent.protocol import parse_submit

    folder = tmp_path / agent_mount.MOUNTS_DIR / "other"
    folder.mkdir(parents=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    other = tmp_path / "other"
    record = {"dest": str(other), "bucket": "b", "pid": dead.pid, "port": 1}
    (folder / agent_mount.RECORD).write_text(json.dumps(record))
    request = {"job_id": 1, "node_rank": 1, "mounts": {"0": [str(other)], "1": ["/m/./mine"]}}
    spec = parse_submit(request, default_rank=0, default_ip="127.0.0.1", cluster="c")
    assert spec.mounts == ["/m/./mine"]
    assert agent_mount.flush_all(tmp_path, timeout=1.0, dests=spec.mounts) is None
    problem = agent_mount.flush_all(tmp_path, timeout=1.0, dests=[f"{other}/"])
    assert problem is not None and "ended before its writes were flushed" in problem


def test_a_flush_waits_for_the_mount_s_write_back_delay_on_top_of_its_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mount whose write-back delay is 90 s uploads a job's file only after it: a job's end
    (and a down) waits for the delay plus its own bound, and says the sum when it gives up; a
    record with no delay (an older agent's) counts the longest allowed. On a fake clock."""
    clock = [0.0]

    class FakeTime:
        @staticmethod
        def monotonic() -> float:
            return clock[0]

        @staticmethod
        def sleep(seconds: float) -> None:
            clock[0] += seconds

    monkeypatch.setattr(agent_mount, "time", FakeTime)
    monkeypatch.setattr(agent_mount, "_serves", lambda pid, folder: True)
    drained_at = [100.0]  # the write-back delay, then the upload
    monkeypatch.setattr(agent_mount, "pending_uploads", lambda r: int(clock[0] < drained_at[0]))
    folder = tmp_path / agent_mount.MOUNTS_DIR / "wb"
    folder.mkdir(parents=True)
    record = {"dest": str(tmp_path / "m"), "bucket": "b", "pid": 1, "port": 1}
    (folder / agent_mount.RECORD).write_text(json.dumps(record | {"write_back_s": 90.0}))
    assert agent_mount.flush_all(tmp_path, timeout=60.0) is None
    clock[0], drained_at[0] = 0.0, 1e9  # never drains: given up after the bound plus the delay
    problem = agent_mount.flush_all(tmp_path, timeout=60.0)
    assert problem is not None and "within 150s" in problem and 150 <= clock[0] < 151
    (folder / agent_mount.RECORD).write_text(json.dumps(record))
    problem = agent_mount.flush_all(tmp_path, timeout=60.0)
    assert problem is not None and f"within {60 + agent_mount.WRITE_BACK_MAX_S:.0f}s" in problem


def test_a_stop_waits_for_the_agent_s_flush_before_it_takes_the_node_away(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The agent answers ``shutdown`` only after flushing its mounts (``unmount_all``: the
    unmount bound plus the write-back delay): a stop giving up sooner would go on to kill it and
    remove the node's folders under writes still pending."""
    from stixd.providers.base import NodeInfo, NodeStatus
    from stixd.providers.local.provider import LocalProvider

    asked: list[float] = []
    provider = LocalProvider(tmp_path)
    running = [True]

    class Agent:
        async def call(self, op: str, *, deadline: float = 10.0, **fields: Any) -> dict[str, Any]:
            asked.append(deadline)
            running[0] = False
            return {}

    async def query(cluster: str) -> list[NodeInfo]:
        status = NodeStatus.RUNNING if running[0] else NodeStatus.STOPPED
        return [NodeInfo(0, "127.0.0.1", status, "", str(tmp_path), str(tmp_path))]

    async def no_leftovers(cluster: str) -> None:
        return None

    monkeypatch.setattr(provider, "query", query)
    monkeypatch.setattr(provider, "connector", lambda node: Agent())
    monkeypatch.setattr(provider, "_kill_leftovers", no_leftovers)
    anyio.run(provider.stop, "c1")
    assert len(asked) == 1
    assert asked[0] > agent_mount.UNMOUNT_FLUSH_S + agent_mount.WRITE_BACK_MAX_S


# -- the node's copy of the keys: private, renewed, and gone with its mount -----------------


def s3_mount_request(
    emu: Emulator, bucket: str, dest: Path, kind: StoreKind = StoreKind.S3
) -> dict[str, object]:
    """What the daemon sends an agent for a MOUNT of ``bucket`` (made, holding ``in.txt``)."""

    async def remote() -> RcloneRemote:
        stores = open_stores(emu.config, emu.env, "testhome")
        try:
            found = stores.bucket(kind, bucket)
            if not await found.exists():
                await found.create({LABEL_STORAGE: bucket})
            return await found.rclone_remote()
        finally:
            await stores.aclose()

    got = anyio.run(remote)
    boto = s3_client(emu)
    boto.put_object(Bucket=bucket, Key="in.txt", Body=b"through scoped keys\n")
    boto.close()
    request: dict[str, object] = {
        "dest": str(dest),
        "remote": got.type,
        "keys": got.keys,
        "path": bucket,
        "mode": "MOUNT",
        "flags": {},
    }
    if got.valid_s is not None:
        request["valid_s"] = got.valid_s
    return request


def only_folder(node_dir: Path) -> Path:
    [folder] = (node_dir / agent_mount.MOUNTS_DIR).iterdir()
    return folder


def record_of(folder: Path) -> dict[str, Any]:
    found: dict[str, Any] = json.loads((folder / agent_mount.RECORD).read_text())
    return found


@pytest.fixture
def node_dir(tmp_path: Path) -> Iterator[Path]:
    """An agent's state folder; whatever a test leaves mounted under ``tmp_path`` goes."""
    found = tmp_path / "node" / ".stix"
    found.mkdir(parents=True, mode=0o700)
    try:
        yield found
    finally:
        agent_mount.unmount_all(found)
        for point in fuse_mounts_under(tmp_path):
            subprocess.run(["fusermount3", "-uz", point], capture_output=True, check=False)


def session_keys(request: dict[str, object]) -> dict[str, str]:
    keys = request["keys"]
    assert isinstance(keys, dict)
    return {k: v for k, v in keys.items() if k in SESSION_KEYS}


def test_an_r2_mount_hides_the_labels_object_from_the_job(
    moto_s3: Emulator, node_dir: Path, tmp_path: Path
) -> None:
    """R2 keeps stix's labels in ``.stix-labels`` at the bucket's root: rclone mounts the root
    excluding it, so the job can neither list, read nor delete it; a sub-path's
    mount (where no marker lies) and an S3 mount keep every name."""
    assert agent_mount.R2_MARKER == s3_store.MARKER
    dest = tmp_path / "node" / "r2"
    bucket = "stix-r2-marker"
    request = s3_mount_request(moto_s3, bucket, dest, StoreKind.R2)
    spec = agent_mount.parse_mount(request)
    argv = agent_mount._argv(spec, tmp_path, tmp_path / "c", 1)
    assert argv[argv.index("--exclude") + 1] == "/.stix-labels"
    for other in ({**spec, "path": f"{bucket}/sub"}, {**spec, "keys": {"provider": "AWS"}}):
        assert "--exclude" not in agent_mount._argv(other, tmp_path, tmp_path / "c", 1)
    assert agent_mount.mount(node_dir, request)["mounted"] is True
    assert sorted(p.name for p in dest.iterdir()) == ["in.txt"]
    with pytest.raises(FileNotFoundError):
        (dest / ".stix-labels").unlink()
    with pytest.raises(FileNotFoundError):
        (dest / ".stix-labels").read_bytes()
    agent_mount.unmount_all(node_dir)  # anything the mount did reaches the bucket first
    labels = s3_client(moto_s3).get_object(Bucket=bucket, Key=".stix-labels")["Body"].read()
    assert json.loads(labels).get(LABEL_STORAGE) == bucket


def test_a_mounts_keys_stay_private_are_renewed_in_place_and_go_with_it(
    moto_s3: Emulator, node_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(agent_mount, "REREAD_S", 1.0)  # rclone's SDK reads the keys each second
    dest = tmp_path / "node" / "data"  # the job's side: nothing of stix's is written there
    bucket = "stix-node-keys"
    request = s3_mount_request(moto_s3, bucket, dest)
    assert agent_mount.mount(node_dir, request) == {"dest": str(dest), "mounted": True}
    assert (dest / "in.txt").read_text() == "through scoped keys\n"  # rclone on STS keys
    folder = only_folder(node_dir)
    config, keys = folder / agent_mount.CONFIG, folder / agent_mount.KEYS
    assert "session_token" not in config.read_text()  # only in the file the SDK re-reads
    first = session_keys(request)
    assert json.loads(keys.read_text())["SessionToken"] == first["session_token"]
    for private in (config, keys, folder / agent_mount.AWS_CONFIG):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(folder.parent.stat().st_mode) == 0o700
    assert list(dest.rglob(agent_mount.CONFIG)) == list(dest.rglob(agent_mount.KEYS)) == []
    before = record_of(folder)
    assert before["expires_at"] > time.time() + 12 * 3600 - 600

    # the first keys are revoked (as if they ended); the daemon sends fresh ones: the same
    # rclone takes them and a write made after lands
    moto_s3.revoked.write_text(first["access_key_id"] + "\n")
    try:
        old = s3_client(moto_s3, keys=first)
        with pytest.raises(old.exceptions.ClientError, match="InvalidAccessKeyId"):
            old.list_objects_v2(Bucket=bucket)
        old.close()
        # (moto's STS answers the same keys every time: these stand for the next ones)
        renewed = {"access_key_id": "STIXRENEWED", "secret_access_key": "s", "session_token": "t"}
        renewal = {"dest": str(dest), "keys": renewed, "valid_s": request["valid_s"]}
        answer = agent_mount.mount_keys(node_dir, renewal)
        assert answer["renewed"] is True and answer["expires_at"] > before["expires_at"]
        (dest / "after.txt").write_text("written after the renewal\n")
        wait_until(lambda: "after.txt" in keys_in(moto_s3, "s3", bucket), timeout=60)
    finally:
        moto_s3.revoked.write_text("")
    assert record_of(folder)["pid"] == before["pid"] and agent_mount.mounted(str(dest))
    assert json.loads(keys.read_text())["AccessKeyId"] == "STIXRENEWED"

    # a launch asking again for the same mount renews its keys in place too: no remount
    again = s3_mount_request(moto_s3, bucket, dest)
    assert agent_mount.mount(node_dir, again)["mounted"] is False
    assert json.loads(keys.read_text())["AccessKeyId"] == session_keys(again)["access_key_id"]
    assert record_of(folder)["pid"] == before["pid"]

    # renewal is for a live, renewable mount only, in bounded, checked input
    elsewhere = {**renewal, "dest": str(tmp_path / "nothing")}
    for bad, code in (
        (elsewhere, "not_mounted"),
        ({**renewal, "keys": {**renewed, "endpoint": "http://x"}}, "bad_request"),
        ({**renewal, "keys": {"access_key_id": "a\nb", "secret_access_key": "s"}}, "bad_request"),
        ({**renewal, "valid_s": 0}, "bad_request"),
        ({**renewal, "dest": "relative"}, "bad_request"),
    ):
        with pytest.raises(RequestError) as refused:
            agent_mount.mount_keys(node_dir, bad)
        assert refused.value.code == code

    # keys a running rclone cannot take afresh (an Azure SAS; here S3 with no keys at all) are
    # kept while they last and mounted afresh by a launch asking again once they end soon
    anon = tmp_path / "node" / "anon"
    settings = request["keys"]
    assert isinstance(settings, dict)
    plain = {k: v for k, v in settings.items() if k not in SESSION_KEYS}
    asked = {**request, "dest": str(anon), "keys": plain}
    assert agent_mount.mount(node_dir, asked)["mounted"] is True
    [other] = [f for f in (node_dir / agent_mount.MOUNTS_DIR).iterdir() if f != folder]
    kept = record_of(other)
    assert kept["renewable"] is False and not (other / agent_mount.KEYS).exists()
    assert agent_mount.mount(node_dir, asked)["mounted"] is False
    (other / agent_mount.RECORD).write_text(json.dumps({**kept, "expires_at": time.time() + 60}))
    assert agent_mount.mount(node_dir, asked)["mounted"] is True
    assert record_of(other)["pid"] != kept["pid"] and not agent_mount._alive(kept["pid"])

    assert agent_mount.unmount_all(node_dir) == 2
    assert not agent_mount.mounted(str(dest))
    assert list(node_dir.rglob(agent_mount.CONFIG)) == list(node_dir.rglob(agent_mount.KEYS)) == []
    assert list((node_dir / agent_mount.MOUNTS_DIR).iterdir()) == []


def test_an_agent_starting_removes_the_keys_of_mounts_no_rclone_serves(
    moto_s3: Emulator, node_dir: Path, tmp_path: Path
) -> None:
    kept = tmp_path / "node" / "kept"
    cut = tmp_path / "node" / "cut"
    agent_mount.mount(node_dir, s3_mount_request(moto_s3, "stix-node-orphans", kept))
    kept_folder = only_folder(node_dir)
    agent_mount.mount(node_dir, s3_mount_request(moto_s3, "stix-node-orphans", cut))
    [cut_folder] = [f for f in (node_dir / agent_mount.MOUNTS_DIR).iterdir() if f != kept_folder]
    rclone = record_of(cut_folder)["pid"]
    (cut_folder / agent_mount.RECORD).unlink()  # an agent stopped before recording its mount
    bare = node_dir / agent_mount.MOUNTS_DIR / "0123456789abcdef"  # a config, no rclone
    bare.mkdir(mode=0o700)
    (bare / agent_mount.CONFIG).write_text("[stix]\ntype = s3\n")
    reused = node_dir / agent_mount.MOUNTS_DIR / "fedcba9876543210"  # its pid is another's
    reused.mkdir(mode=0o700)
    (reused / agent_mount.CONFIG).write_text("[stix]\ntype = s3\n")
    other = subprocess.Popen(["sleep", "60"])
    try:
        record = {"dest": str(tmp_path / "gone"), "pid": other.pid, "port": 1}
        (reused / agent_mount.RECORD).write_text(json.dumps(record))

        assert agent_mount.clean_stale(node_dir) == 3
        assert other.poll() is None  # not an rclone of ours: left alone
    finally:
        reap(other)
        other.wait()
    assert not agent_mount.mounted(str(cut)) and not agent_mount._alive(rclone)
    assert sorted((node_dir / agent_mount.MOUNTS_DIR).iterdir()) == [kept_folder]
    assert agent_mount.mounted(str(kept))  # still served: its jobs keep it
    assert (kept / "in.txt").read_text() == "through scoped keys\n"


def test_a_read_only_preset_mounts_read_only_and_a_knob_rclone_lacks_is_left_out_and_said(
    moto_s3: Emulator, node_dir: Path, tmp_path: Path
) -> None:
    from stixd.storage.plan import plan_mounts
    from stixproto.task import Task

    task = Task.from_yaml(
        "file_mounts:\n  /d:\n    name: stix-node-preset\n    mode: MOUNT_CACHED\n"
        "    type: MODEL_CHECKPOINT_RO\n"
    )
    [plan] = plan_mounts(task, cluster="c1", configured=("s3",))
    dest = tmp_path / "node" / "weights"
    request = s3_mount_request(moto_s3, "stix-node-preset", dest)
    request |= {"mode": "MOUNT_CACHED", "flags": plan.storage.mount_cached}
    reply = agent_mount.mount(node_dir, request)
    streams = "--vfs-read-chunk-streams"  # rclone 1.68's: Debian's 1.60 has none
    lacks = (
        streams
        not in subprocess.run(
            ["rclone", "mount", "--help"], capture_output=True, text=True, check=False
        ).stdout
    )
    assert reply == {"dest": str(dest), "mounted": True} | ({"dropped": [streams]} if lacks else {})
    argv = agent_mount._argv_of(record_of(only_folder(node_dir))["pid"])
    assert ("--read-only" in argv, streams in argv) == (True, not lacks)
    assert (dest / "in.txt").read_text() == "through scoped keys\n"
    with pytest.raises(OSError):
        (dest / "out.txt").write_text("refused")
    assert agent_mount.unmount_all(node_dir) == 1


@pytest.mark.anyio
@pytest.mark.slow
async def test_a_gcs_mount_on_a_bucket_scoped_token_takes_a_renewed_one_in_place(
    fake_gcs: Emulator, node_dir: Path, tmp_path: Path
) -> None:
    """A GCS mount made with a token kept to its bucket (no key on the node) reads through
    it; a renewal writes the next token into the mount's rclone config, and once the first
    ends (the fake GCS refuses it from then on) the same rclone writes with the next."""
    bucket, dest = "stix-node-token", tmp_path / "node" / "gdata"
    await gcs_bucket_holding(fake_gcs, bucket, "in.txt", b"through a scoped token\n")
    fake = FakeSts({"daemon-token"}, lifetime=20)  # rclone takes it as ended 10 s early
    async with served(fake, fake_gcs.url) as url, aiohttp.ClientSession() as client:

        async def mint() -> tuple[str, int]:
            return await gcs_store.downscope(
                client, f"{url}/v1/token", "daemon-token", 3600, bucket
            )

        first, valid_s = await mint()
        started = time.time()
        line = gcs_store.rclone_token(first, valid_s, started)
        keys = {"bucket_policy_only": "true", "endpoint": f"{url}/storage/v1/", "token": line}
        request = {
            "dest": str(dest), "remote": "google cloud storage", "keys": keys,
            "path": bucket, "mode": "MOUNT", "valid_s": valid_s,
        }  # fmt: skip
        answer = await anyio.to_thread.run_sync(agent_mount.mount, node_dir, request)
        assert answer == {"dest": str(dest), "mounted": True}
        read = await anyio.to_thread.run_sync((dest / "in.txt").read_text)  # off this loop
        assert read == "through a scoped token\n"
        folder = only_folder(node_dir)
        pid = record_of(folder)["pid"]
        config = folder / agent_mount.CONFIG
        assert first in config.read_text() and "service_account" not in config.read_text()
        assert stat.S_IMODE(config.stat().st_mode) == 0o600

        fake.lifetime = 3600
        second, second_s = await mint()
        token = gcs_store.rclone_token(second, second_s, 0)  # the node stamps its own end
        renewal = {"dest": str(dest), "keys": {"token": token}, "valid_s": second_s}
        done = await anyio.to_thread.run_sync(agent_mount.mount_keys, node_dir, renewal)
        assert done["renewed"] is True
        text = config.read_text()
        assert second in text and first not in text and "1970" not in text  # its own clock
        del fake.issued[first]  # as if it ended: the fake GCS refuses it from now on
        await anyio.sleep(max(0.0, started + valid_s - 10 + 1 - time.time()))
        await anyio.to_thread.run_sync((dest / "after.txt").write_text, "written after renewal\n")
        await anyio.to_thread.run_sync(
            lambda: wait_until(lambda: "after.txt" in keys_in(fake_gcs, "gcs", bucket), 60)
        )
        assert not [r for r in fake.refused if bucket in r]
        assert record_of(folder)["pid"] == pid and agent_mount.mounted(str(dest))
        for bad in ({"token": "not json"}, {"token": "a\nb"}, {"token": line, "endpoint": "x"}):
            with pytest.raises(RequestError) as refused:
                agent_mount.mount_keys(node_dir, {**renewal, "keys": bad})
            assert refused.value.code == "bad_request"
