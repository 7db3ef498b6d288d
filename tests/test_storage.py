"""Storage on the local infra against a real S3 (moto): COPY onto the node through signed URLs,
`storage ls` after a bucket is deleted elsewhere, `storage delete` removing the bucket (and
only forgetting one stix did not make), another user's launch refused its storage, a failed
launch leaving no bucket, and `kill -9` of stixd in the middle of an upload leaving none after
the restart."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from stixd.actors.storage import StorageActor
from stixd.app import App
from stixd.runtime.mailbox import Envelope, reply_channel
from stixd.storage.plan import StorageSpec
from stixd.store.db import Row
from tests import stores_bed
from tests.app_support import app_on_store
from tests.conftest import Stix, reap, wait_until
from tests.fake_gcs_sts import FakeSts, served
from tests.stores_bed import Emulator, azurite, fake_gcs, moto_s3, s3_client

__all__ = ["azurite", "fake_gcs", "moto_s3"]  # the module's emulator fixtures


def s3(emu: Emulator) -> Any:
    return s3_client(emu)


def buckets(emu: Emulator) -> set[str]:
    return {b["Name"] for b in s3(emu).list_buckets()["Buckets"]}


@pytest.fixture
def sx(stix: Stix, moto_s3: Emulator) -> Iterator[Stix]:
    """A stix home whose daemon reaches the moto server (and no real cloud). Its nodes share
    the host's network: the emulator listens on the host's loopback, which a node in its own
    namespace cannot reach (a real store's endpoint it can)."""
    stix.env.update({k: v for k, v in moto_s3.env.items() if k != "HOME"})
    stix.env["STIX__LOCAL__NETWORK"] = "host"
    yield stix


def launch(sx: Stix, task: Path, cluster: str, *extra: str) -> Any:
    return sx.run("launch", "-c", cluster, str(task), "-y", *extra, timeout=120)


def storages(sx: Stix) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in sx.json("storage", "ls")["storages"]}


def test_copy_mode_puts_the_bucket_on_the_node_and_ls_delete_follow_the_real_bucket(
    sx: Stix, moto_s3: Emulator, tmp_path: Path, task_file: Callable[[str], Path]
) -> None:
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "a.txt").write_text("alpha\n")
    (data / "sub" / "b.txt").write_text("beta\n")
    s3(moto_s3).create_bucket(Bucket="theirs-copy")
    s3(moto_s3).put_object(Bucket="theirs-copy", Key="in/c.txt", Body=b"gamma\n")
    sx.env["R2_ENDPOINT_URL"] = moto_s3.url  # R2: S3's API at its own endpoint (moto here)
    task = task_file(
        f"""
file_mounts:
  ~/data:
    name: stix-copy-1
    source: {data}
    store: s3
    mode: COPY
  ~/r2:
    name: stix-copy-r2
    source: {data}/sub
    store: r2
    mode: COPY
  ~/theirs: s3://theirs-copy/in
run: cat ~/data/a.txt ~/data/sub/b.txt ~/theirs/c.txt ~/r2/b.txt && echo out > ~/data/written.txt
"""
    )
    done = launch(sx, task, "cp1")
    assert done.returncode == 0, done.stderr
    assert "stix-copy-1" in buckets(moto_s3)
    keys = {o["Key"] for o in s3(moto_s3).list_objects_v2(Bucket="stix-copy-1")["Contents"]}
    assert keys == {"a.txt", "sub/b.txt"}
    wait_until(lambda: sx.job_status("cp1", 1) in ("SUCCEEDED", "FAILED"), timeout=60)
    logs = sx.run("logs", "cp1", "1", "--no-follow", timeout=30).stdout
    assert "alpha" in logs and logs.count("beta") == 2 and "gamma" in logs
    home = sx.node_dir("cp1")
    assert (home / "data" / "written.txt").read_text() == "out\n"
    assert sx.job_status("cp1", 1) == "SUCCEEDED"

    listed = storages(sx)
    assert set(listed) == {"stix-copy-1", "stix-copy-r2"}  # a URI shorthand is never recorded
    assert listed["stix-copy-r2"]["store"] == "r2" and listed["stix-copy-r2"]["created"]
    sx.run("storage", "delete", "stix-copy-r2", "-y", check=True)
    assert "stix-copy-r2" not in buckets(moto_s3)
    listed = storages(sx)
    assert listed["stix-copy-1"]["status"] == "READY" and listed["stix-copy-1"]["created"]
    assert not listed["stix-copy-1"]["missing"]

    # a bucket deleted behind stix's back shows so
    client = s3(moto_s3)
    for key in keys:
        client.delete_object(Bucket="stix-copy-1", Key=key)
    client.delete_bucket(Bucket="stix-copy-1")
    assert storages(sx)["stix-copy-1"]["missing"]
    assert "MISSING" in sx.run("storage", "ls", check=True).stdout

    # delete forgets it (nothing left to delete in the store)
    sx.run("storage", "delete", "stix-copy-1", "-y", check=True)
    assert storages(sx) == {}
    sx.run("down", "cp1", "-y", check=True, timeout=60)


def test_storage_delete_removes_the_bucket_stix_made_and_only_forgets_one_it_did_not(
    sx: Stix, moto_s3: Emulator, tmp_path: Path, task_file: Callable[[str], Path]
) -> None:
    data = tmp_path / "d"
    data.mkdir()
    (data / "x.bin").write_bytes(os.urandom(1024))
    s3(moto_s3).create_bucket(Bucket="theirs-named")
    task = task_file(
        f"""
file_mounts:
  ~/mine:
    name: stix-del-mine
    source: {data}
    mode: COPY
  ~/theirs:
    name: theirs-named
    source: s3://theirs-named
    mode: COPY
"""
    )
    done = launch(sx, task, "del1")
    assert done.returncode == 0, done.stderr
    listed = storages(sx)
    assert listed["stix-del-mine"]["created"] and not listed["theirs-named"]["created"]
    shown = sx.run("storage", "ls", check=True).stdout.splitlines()  # SkyPilot's columns
    assert shown[0].split() == ["NAME", "UPDATED", "STORE", "COMMAND", "STATUS"]
    assert "S3" in shown[1].split() and "stixctl launch -c del1" in shown[1]
    verbose = sx.run("storage", "ls", "-v", check=True).stdout  # stix's own, commands in full
    assert "BUCKET" in verbose and "PERSISTENT" in verbose and "stixctl launch -c del1" in verbose
    # without -y, -a asks first naming every storage (as `sky storage delete -a`); "n" keeps all
    no = sx.run("storage", "delete", "-a", input="n\n")
    assert no.returncode == 1, no.stderr
    assert "Deleting 2 storage(s): stix-del-mine, theirs-named" in no.stderr
    assert "only forgotten, their buckets kept: theirs-named" in no.stderr
    assert set(storages(sx)) == {"stix-del-mine", "theirs-named"}
    # -a deletes the bucket stix made and forgets (never deletes) the one it did not, by name;
    # a storage made while it asks was not asked about, so it stays
    asking = subprocess.Popen(
        [sys.executable, "-m", "stixctl", "storage", "delete", "-a"],
        env=sx.env,
        cwd=sx.home,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert asking.stdin is not None and asking.stderr is not None
    said = b""
    for _ in range(600):  # at most 60 s for the question
        if b"Proceed?" in said:
            break
        if select.select([asking.stderr], [], [], 0.1)[0]:
            chunk = os.read(asking.stderr.fileno(), 4096)
            if not chunk:  # it ended without asking: said below
                break
            said += chunk
    assert b"Deleting 2 storage(s)" in said, said
    late = tmp_path / "late"
    late.mkdir()
    (late / "l.txt").write_text("late\n")
    mount = f"{{name: stix-del-late, source: {late}, mode: COPY}}"
    made = launch(sx, task_file(f"file_mounts:\n  ~/late: {mount}\n"), "del1")
    assert made.returncode == 0, made.stderr
    out, err = asking.communicate(b"y\n", timeout=120)
    assert asking.returncode == 0, err
    assert b"Deleted 2 storage(s): stix-del-mine, theirs-named" in out
    assert b"Forgot storage theirs-named; its bucket s3://theirs-named was not" in err
    assert "stix-del-mine" not in buckets(moto_s3)
    assert "theirs-named" in buckets(moto_s3)
    assert set(storages(sx)) == {"stix-del-late"}
    # globs as `sky storage delete "imagenet*"`; a name that fails is said, the others go on
    done = sx.run("storage", "delete", "nosuch", "stix-del-*", "-y")
    assert done.returncode == 1, done.stderr
    assert "Failed: no storage 'nosuch'" in done.stderr
    assert "Deleted 1 storage(s): stix-del-late" in done.stdout
    assert storages(sx) == {} and "stix-del-late" not in buckets(moto_s3)
    assert "theirs-named" in buckets(moto_s3)
    sx.run("down", "del1", "-y", check=True, timeout=60)


def test_over_http_a_launch_naming_another_users_storage_is_refused(
    sx: Stix, moto_s3: Emulator, tmp_path: Path, task_file: Callable[[str], Path]
) -> None:
    from tests.test_http_api import Remote, make_token, serve_http

    url = serve_http(sx)
    alice = Remote(sx, url, make_token(sx, "alice", "user"))
    bob = Remote(sx, url, make_token(sx, "bob", "user"))
    data = tmp_path / "a"
    data.mkdir()
    (data / "a.txt").write_text("alice's\n")
    task = task_file(
        f"""
file_mounts:
  ~/data:
    name: stix-alices
    source: {data}
    mode: COPY
"""
    )
    made = alice.run("launch", "-c", "al1", str(task), "-y")
    assert made.returncode == 0, made.stderr
    before = sx.json("storage", "ls")["storages"]
    assert [(s["name"], s["owner"]) for s in before] == [("stix-alices", "alice")]
    (data / "b.txt").write_text("bob's\n")
    refused = bob.run("launch", "-c", "bo1", str(task), "-y")
    assert refused.returncode != 0
    assert "storage stix-alices belongs to alice" in refused.stderr, refused.stderr
    assert sx.json("storage", "ls")["storages"] == before  # owner, spec and state unchanged
    keys = {o["Key"] for o in s3(moto_s3).list_objects_v2(Bucket="stix-alices")["Contents"]}
    assert keys == {"a.txt"}  # nothing of bob's uploaded
    # nor by the bucket's URI: as a named MOUNT (it would get the keys) or the COPY shorthand
    for mount in ("{name: bobs, source: s3://stix-alices, mode: MOUNT}", "s3://stix-alices"):
        uri = task_file(f"file_mounts:\n  ~/data: {mount}\nrun: ls ~/data\n")
        refused = bob.run("launch", "-c", "bo2", str(uri), "-y")
        assert refused.returncode == 7, refused.stderr
        assert "bucket s3://stix-alices (storage stix-alices) belongs to alice" in refused.stderr
    gone = bob.run("storage", "delete", "stix-alices", "-y")
    assert gone.returncode != 0 and "stix-alices" in buckets(moto_s3)
    for who, cluster in ((bob, "bo1"), (alice, "al1")):
        who.run("down", cluster, "-y")


def test_a_failed_launch_leaves_no_bucket_it_made(
    sx: Stix, moto_s3: Emulator, tmp_path: Path, task_file: Callable[[str], Path]
) -> None:
    data = tmp_path / "f"
    data.mkdir()
    (data / "f.txt").write_text("f\n")
    task = task_file(
        f"""
file_mounts:
  ~/made:
    name: stix-fail-made
    source: {data}
    persistent: false
    mode: COPY
  ~/gone: s3://no-such-bucket-here
run: echo never
"""
    )
    failed = launch(sx, task, "fail1")
    assert failed.returncode != 0
    assert "no-such-bucket-here" in failed.stderr
    assert "stix-fail-made" not in buckets(moto_s3)
    assert storages(sx) == {}


@pytest.mark.slow
def test_kill_9_mid_upload_leaves_no_leaked_bucket_after_restart(
    sx: Stix, moto_s3: Emulator, tmp_path: Path, task_file: Callable[[str], Path]
) -> None:
    data = tmp_path / "big"
    data.mkdir()
    for i in range(400):
        (data / f"f{i:04d}.bin").write_bytes(os.urandom(16 * 1024))
    task = task_file(
        f"""
file_mounts:
  ~/big:
    name: stix-kill-upload
    source: {data}
    mode: COPY
run: echo never
"""
    )
    sx.env["STIX__STORAGE__LEAK_MIN_AGE_MINUTES"] = "0"  # a leaked bucket is reported at once
    proc = sx.popen("launch", "-c", "kill1", str(task), "-y")
    try:
        wait_until(lambda: "stix-kill-upload" in buckets(moto_s3), timeout=60, interval=0.02)
        sx.kill_daemon()
    finally:
        reap(proc)
        proc.communicate(timeout=30)
    sx.run("status", check=True, timeout=60)  # the daemon starts again and reconciles

    def settled() -> dict[str, Any] | None:
        found = storages(sx).get("stix-kill-upload")
        return found if found and found["status"] != "INIT" else None

    record = wait_until(settled, timeout=90)
    history = sx.json("events", "--kind", "storage", "stix-kill-upload")
    assert any("restarted during the upload" in e["why"] for e in history), history
    # the cut upload's bucket was removed; the resumed launch (if it got that far) made it anew
    if record["status"] == "READY":
        listed = s3(moto_s3).list_objects_v2(Bucket="stix-kill-upload", MaxKeys=1000)
        assert listed["KeyCount"] == 400
    else:
        assert record["status"] == "INIT_FAILED", record
        assert "stix-kill-upload" not in buckets(moto_s3)
    leaks = json.loads(sx.run("leaks", "--json", check=True, timeout=60).stdout)
    assert [x for x in leaks["leaks"] if x["kind"] == "bucket"] == []
    sx.run("down", "kill1", "-y", timeout=60)
    sx.run("storage", "delete", "stix-kill-upload", "-y", check=True)
    assert "stix-kill-upload" not in buckets(moto_s3)


def bucket_exists(emu: Emulator, kind: str, name: str) -> bool:
    import asyncio

    from stixd.storage.stores import StoreKind, open_stores

    async def look() -> bool:
        stores = open_stores(emu.config, emu.env, "0" * 8)
        try:
            return await stores.bucket(StoreKind(kind), name).exists()
        finally:
            await stores.aclose()

    return asyncio.run(look())


@pytest.mark.parametrize(("store", "fixture"), [("gcs", "fake_gcs"), ("azure", "azurite")])
def test_copy_mode_on_gcs_and_azure_reads_on_the_node_and_delete_removes_the_bucket(
    stix: Stix,
    store: str,
    fixture: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    task_file: Callable[[str], Path],
) -> None:
    emu: Emulator = request.getfixturevalue(fixture)
    stix.env.update({k: v for k, v in emu.env.items() if k != "HOME"})
    stix.env["GOOGLE_CLOUD_PROJECT"] = "stix-test"  # the daemon's config has no storage: yet
    if store == "gcs":  # GCS signs URLs with a service-account key (the emulator never checks)
        key = stores_bed.service_account_key(tmp_path / "sa.json")
        stix.env["GOOGLE_APPLICATION_CREDENTIALS"] = str(key)
    stix.env["STIX__LOCAL__NETWORK"] = "host"
    data = tmp_path / "src"
    (data / "deep").mkdir(parents=True)
    (data / "deep" / "hello.txt").write_text(f"hello from {store}\n")
    name = f"stix-copy-{store}"
    task = task_file(
        f"""
file_mounts:
  ~/in:
    name: {name}
    source: {data}
    store: {store}
    mode: COPY
run: cat ~/in/deep/hello.txt
"""
    )
    done = launch(stix, task, f"cp-{store}")
    assert done.returncode == 0, done.stderr
    assert bucket_exists(emu, store, name)
    wait_until(lambda: stix.job_status(f"cp-{store}", 1) == "SUCCEEDED", timeout=60)
    logs = stix.run("logs", f"cp-{store}", "1", timeout=30).stdout
    assert f"hello from {store}" in logs
    assert storages(stix)[name]["store"] == store
    stix.run("storage", "delete", name, "-y", check=True)
    assert not bucket_exists(emu, store, name)
    stix.run("down", f"cp-{store}", "-y", check=True, timeout=60)


def test_a_gcs_copy_on_gcloud_user_credentials_reads_with_a_read_only_bucket_token(
    stix: Stix, fake_gcs: Emulator, tmp_path: Path, task_file: Callable[[str], Path]
) -> None:
    """With gcloud's user credentials (ADC) there is no key to sign URLs: the `gs://` COPY
    shorthand still puts the bucket on the node, read with a token STS downscoped to reading
    that bucket alone, which no file of the home (nodes, logs) holds; STS refusing fails the
    launch in one line. The fake STS fronts the emulator and admits only its tokens."""
    name = "stix-copy-adc"
    anyio.run(stores_bed.gcs_bucket_holding, fake_gcs, name, "deep/hello.txt", b"via a token\n")
    fake = FakeSts({"daemon-token"})
    with (
        anyio.from_thread.start_blocking_portal() as portal,
        portal.wrap_async_context_manager(served(fake, fake_gcs.url)) as url,
    ):
        adc = tmp_path / "gcloud" / "application_default_credentials.json"
        adc.parent.mkdir()
        user = {"type": "authorized_user", "client_id": "c", "client_secret": "s"}
        adc.write_text(
            json.dumps(user | {"refresh_token": "r", "token_uri": f"{url}/oauth2/token"})
        )
        for gone in ("GOOGLE_APPLICATION_CREDENTIALS", "STORAGE_EMULATOR_HOST"):
            stix.env.pop(gone, None)
        stix.env |= {
            "CLOUDSDK_CONFIG": str(adc.parent),
            "GOOGLE_CLOUD_PROJECT": "stix-test",
            "STIX__STORAGE__GCS__API_ENDPOINT": url,
            "STIX__STORAGE__GCS__STS_ENDPOINT": f"{url}/v1/token",
            "STIX__LOCAL__NETWORK": "host",
        }
        task = task_file(f"file_mounts:\n  ~/in: gs://{name}\nrun: cat ~/in/deep/hello.txt\n")
        done = launch(stix, task, "cp-adc")
        assert done.returncode == 0, done.stderr
        wait_until(lambda: stix.job_status("cp-adc", 1) == "SUCCEEDED", timeout=60)
        assert "via a token" in stix.run("logs", "cp-adc", "1", timeout=30).stdout
        viewer = ["inRole:roles/storage.objectViewer"]
        handed = [t for t, role in fake.roles.items() if role == viewer]
        assert handed and all(fake.issued[t][0] == {name} for t in handed)
        assert not [r for r in fake.refused if name in r]
        for path in (p for p in stix.home.rglob("*") if p.is_file() and not p.is_symlink()):
            text = path.read_bytes()
            assert not [t for t in handed if t.encode() in text], path
        fake.exchanging = False
        refused = launch(stix, task, "cp-adc-2")
        assert refused.returncode != 0
        said = [line for line in refused.stderr.splitlines() if "no read-only token" in line]
        assert len(said) == 1 and "permission" in said[0], refused.stderr
        for cluster in ("cp-adc", "cp-adc-2"):
            stix.run("down", cluster, "-y", timeout=60)


def test_a_bucket_mount_on_the_fake_infra_is_answered_as_a_node_answers_it(
    sx: Stix, moto_s3: Emulator, task_file: Callable[[str], Path]
) -> None:
    """The fake infra (benchmarks, failover tests) keeps no files: a COPY or MOUNT of a bucket
    is accepted there as a real node accepts it, not refused as an op it does not know."""
    sx.env.update({"STIX__FAKE__ENABLED": "true", "STIX__FAKE__RUN_SECONDS": "0"})
    s3(moto_s3).create_bucket(Bucket="theirs-fake")
    s3(moto_s3).put_object(Bucket="theirs-fake", Key="a.txt", Body=b"alpha\n")
    task = task_file(
        """
resources:
  infra: fake
file_mounts:
  ~/copied: s3://theirs-fake
  ~/mounted:
    source: s3://theirs-fake
    mode: MOUNT_CACHED
run: "true"
"""
    )
    done = launch(sx, task, "fk1")
    assert done.returncode == 0, done.stderr
    assert "unknown op" not in done.stderr


@pytest.mark.slow
def test_a_cancelled_managed_job_leaves_only_its_persistent_buckets(
    sx: Stix, moto_s3: Emulator, tmp_path: Path, task_file: Callable[[str], Path]
) -> None:
    """`jobs cancel` during the upload of its bucket (STARTING) and while RUNNING, and `down`
    during a plain launch's upload: the non-persistent bucket goes (and the storage's record),
    cut mid-upload, the persistent one stays."""
    from tests.test_managed_jobs import managed

    small = tmp_path / "small"
    small.mkdir()
    (small / "x.txt").write_text("x\n")
    big = tmp_path / "big"
    big.mkdir()
    for i in range(800):
        (big / f"f{i:04d}.bin").write_bytes(os.urandom(8 * 1024))

    def job(tag: str, source: Path) -> Path:
        return task_file(
            f"""
name: {tag}
file_mounts:
  ~/keep:
    name: {tag}-keep
    source: {small}
    mode: COPY
  ~/tmp:
    name: {tag}-tmp
    source: {source}
    persistent: false
    mode: COPY
run: sleep 300
"""
        )

    def ended(job_id: int) -> bool:
        return managed(sx, job_id)["status"] == "CANCELLED"

    # 1: cancelled while its non-persistent bucket is being uploaded
    sx.run("jobs", "launch", "-d", "-y", str(job("mjup", big)), check=True, timeout=60)
    wait_until(
        lambda: (
            storages(sx).get("mjup-tmp", {}).get("status") == "INIT"
            and "mjup-tmp" in buckets(moto_s3)
        ),
        timeout=60,
        interval=0.05,
    )
    assert managed(sx, 1)["status"] == "STARTING"
    sx.run("jobs", "cancel", "-y", "1", check=True, timeout=60)
    # 2: cancelled while RUNNING
    sx.run("jobs", "launch", "-d", "-y", str(job("mjrun", small)), check=True, timeout=60)
    wait_until(lambda: managed(sx, 2)["status"] == "RUNNING", timeout=90, interval=0.2)
    sx.run("jobs", "cancel", "-y", "2", check=True, timeout=60)

    # 3: a plain launch interrupted by `down` during the upload (Ctrl-C of its client leaves
    # a launch running, as SkyPilot's)
    proc = sx.popen("launch", "-c", "lup", str(job("lup", big)), "-y")
    try:
        wait_until(
            lambda: (
                storages(sx).get("lup-tmp", {}).get("status") == "INIT"
                and "lup-tmp" in buckets(moto_s3)
            ),
            timeout=60,
            interval=0.05,
        )
        sx.run("down", "lup", "-y", check=True, timeout=60)
    finally:
        reap(proc)
        proc.communicate(timeout=30)

    wait_until(lambda: ended(1) and ended(2), timeout=90, interval=0.3)
    gone = {"mjup-tmp", "mjrun-tmp", "lup-tmp"}
    kept = {"mjup-keep", "mjrun-keep", "lup-keep"}
    wait_until(lambda: not gone & buckets(moto_s3), timeout=60, interval=0.3)
    wait_until(lambda: not gone & set(storages(sx)), timeout=30, interval=0.3)
    assert kept <= buckets(moto_s3)
    assert kept <= set(storages(sx))
    cut = sx.json("events", "--kind", "storage", "lup-tmp")
    assert "went away during the upload" in cut[1]["why"], cut
    upload = sx.json("events", "--kind", "storage", "mjup-tmp")
    assert [e["to_state"] for e in upload if e["to_state"]] == ["INIT", "UPLOAD_FAILED", "DELETING"]
    assert "went away during the upload" in upload[1]["why"], upload  # cut, not finished
    for name in sorted(kept):
        sx.run("storage", "delete", name, "-y", check=True)


# -- the storage actor in-process (no daemon) on the module's moto: its record's cases --------


@asynccontextmanager
async def storage_app(home: Path, emu: Emulator) -> AsyncIterator[App]:
    """The app on ``home``'s store, its object stores on ``emu`` (no actor runs on its own)."""
    from stixd.storage.stores import open_stores

    home.mkdir(exist_ok=True)
    async with app_on_store(home) as app:
        app.stores = open_stores(emu.config, emu.env, app.home_id())
        try:
            yield app
        finally:
            await app.stores.aclose()


async def storage_actor(app: App, spec: StorageSpec) -> StorageActor:
    """The actor of ``spec``'s record (inserted INIT, as a launch inserts it, if new)."""
    from stixd.actors.specs import encode
    from stixd.actors.storage import STORAGE, StorageData

    row = await app.store.get(STORAGE, spec.name)
    if row is None:
        fresh = Row(
            kind=STORAGE,
            id=spec.name,
            state="INIT",
            version=0,
            spec=encode(spec),
            data=encode(StorageData()),
        )
        row = await app.store.insert(fresh, "created", "test")
    return StorageActor(row, app)


async def tell(actor: StorageActor, payload: Any) -> None:
    await actor.handle(Envelope(payload=payload))


def local_spec(name: str, source: Path, **fields: Any) -> StorageSpec:
    return StorageSpec(name=name, store="s3", bucket=name, sources=[str(source)], **fields)


def test_a_restart_during_a_re_sync_keeps_the_bucket_and_its_objects(
    moto_s3: Emulator, tmp_path: Path
) -> None:
    """A relaunch or recovery sends a READY storage back to INIT to upload again; a daemon
    killed then (or stopped: nothing ends the sync) must not take the bucket for one the cut
    sync made: the bucket and what is in it (a job's checkpoints) stay."""
    from stixd.actors.storage import SV, Ensure

    data = tmp_path / "src"
    data.mkdir()
    (data / "a.txt").write_text("a\n")
    spec = local_spec("stix-resync-kept", data)

    async def scenario() -> tuple[str, str]:
        async with storage_app(tmp_path / "home", moto_s3) as app:
            actor = await storage_actor(app, spec)
            await tell(actor, Ensure(spec, "c1"))
            assert actor.state.value == "READY"
            # the relaunch's sync, cut right after it wrote INIT (as `_ensure` writes it)
            await actor.transition(SV.SYNC, "launch on c2")
        async with storage_app(tmp_path / "home", moto_s3) as app:  # the restarted daemon
            again = await storage_actor(app, spec)
            await again.reconcile()
            return again.state.value, str(again.data.last_error)

    state, why = anyio.run(scenario)
    assert state == "UPLOAD_FAILED" and "kept" in why, why
    body = s3(moto_s3).get_object(Bucket="stix-resync-kept", Key="a.txt")["Body"].read()
    assert body == b"a\n"
    s3(moto_s3).delete_object(Bucket="stix-resync-kept", Key="a.txt")
    s3(moto_s3).delete_bucket(Bucket="stix-resync-kept")


def test_a_delete_of_a_bucket_whose_labels_changed_forgets_it_and_leaves_the_bucket(
    moto_s3: Emulator, tmp_path: Path
) -> None:
    """The bucket stix made had its tag set replaced (or was deleted and its name made again
    by someone else): a delete leaves it as is and forgets the record, never stuck DELETING."""
    from stixd.actors.storage import STORAGE, Ensure, Remove

    data = tmp_path / "src"
    data.mkdir()
    (data / "a.txt").write_text("a\n")
    spec = local_spec("stix-relabelled", data)

    async def scenario() -> tuple[str, bool]:
        async with storage_app(tmp_path / "home", moto_s3) as app:
            actor = await storage_actor(app, spec)
            await tell(actor, Ensure(spec, "c1"))
            assert actor.data.created
            s3(moto_s3).put_bucket_tagging(
                Bucket="stix-relabelled", Tagging={"TagSet": [{"Key": "team", "Value": "x"}]}
            )
            send, receive = reply_channel()
            await actor.handle(Envelope(payload=Remove(), reply=send))
            async with receive:
                said = [item async for item in receive]
            return str(said[-1]), await app.store.get(STORAGE, spec.name) is None

    said, forgotten = anyio.run(scenario)
    assert forgotten and "left as is" in said, said
    assert "stix-relabelled" in buckets(moto_s3)
    s3(moto_s3).delete_object(Bucket="stix-relabelled", Key="a.txt")
    s3(moto_s3).delete_bucket(Bucket="stix-relabelled")


def test_a_named_storage_on_a_bucket_whose_tags_are_unreadable_is_ready(
    moto_s3: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A public or cross-account bucket one may read but not tag (GetBucketTagging denied;
    moto has no bucket policies to deny it, so its tag read is refused here): a storage
    reading it by URI is READY, and only forgotten by its delete."""
    from stixd.actors.storage import Ensure
    from stixd.storage.stores import AccessDenied
    from stixd.storage.stores.s3 import S3Bucket

    s3(moto_s3).create_bucket(Bucket="stix-untaggable")

    async def denied(self: S3Bucket) -> dict[str, str] | None:
        raise AccessDenied(f"s3://{self.name}: GetBucketTagging denied")

    monkeypatch.setattr(S3Bucket, "labels", denied)
    spec = StorageSpec(name="untag", store="s3", bucket="stix-untaggable", external=True)

    async def scenario() -> str:
        async with storage_app(tmp_path / "home", moto_s3) as app:
            actor = await storage_actor(app, spec)
            await tell(actor, Ensure(spec, "c1"))
            return str(actor.state.value)

    assert anyio.run(scenario) == "READY"
    s3(moto_s3).delete_bucket(Bucket="stix-untaggable")


def test_a_failed_launch_drops_only_its_cluster_from_a_storage_another_launch_mounts(
    moto_s3: Emulator, tmp_path: Path
) -> None:
    """Two launches at once each found no record and each counted the storage as made; the one
    that fails releases it: its cluster is dropped, the bucket stays for the other; the last
    one's failure deletes it (not persistent)."""
    from stixd.actors.specs import data_or_none
    from stixd.actors.storage import STORAGE, Ensure, StorageData
    from stixd.actors.storage_use import ask_storage, plans_for, release_storage
    from stixproto.task import Task

    data = tmp_path / "src"
    data.mkdir()
    (data / "a.txt").write_text("a\n")
    task = Task.from_yaml(
        f"file_mounts:\n  ~/d:\n    name: stix-shared-made\n    source: {data}\n"
        "    store: s3\n    persistent: false\n    mode: COPY\n"
    )

    async def scenario() -> tuple[list[str], bool]:
        async with storage_app(tmp_path / "home", moto_s3) as app:
            for cluster in ("c1", "c2"):
                [plan] = await plans_for(app, task, cluster, None, None)
                await storage_actor(app, plan.storage)  # the record, as the launch writes it
                await ask_storage(app, plan.storage.name, Ensure(plan.storage, cluster))
            await release_storage(app, task, ["stix-shared-made"], "c1", None, None)
            row = await app.store.get(STORAGE, "stix-shared-made")
            assert row is not None and "stix-shared-made" in buckets(moto_s3)
            kept = (data_or_none(row, StorageData) or StorageData()).clusters
            await release_storage(app, task, ["stix-shared-made"], "c2", None, None)
            return kept, await app.store.get(STORAGE, "stix-shared-made") is None

    kept, forgotten = anyio.run(scenario)
    assert kept == ["c2"] and forgotten
    assert "stix-shared-made" not in buckets(moto_s3)


def test_a_recovery_s_launch_uploads_nothing_and_keeps_the_record_s_source(
    moto_s3: Emulator, tmp_path: Path
) -> None:
    """A managed job's recovery plans its task without the local sources (SkyPilot uploads
    them once): the object the job changed keeps the job's content, and `storage ls` still
    shows the source; a URI source is kept as written."""
    from stixd.actors.storage import Ensure
    from stixd.actors.storage_use import plans_for
    from stixd.storage.plan import without_local_sources
    from stixproto.task import Storage, Task

    data = tmp_path / "src"
    data.mkdir()
    (data / "w.txt").write_text("local\n")
    task = Task.from_yaml(
        f"file_mounts:\n  ~/d:\n    name: stix-recovered\n    source: {data}\n"
        "    store: s3\n  ~/u:\n    name: uri\n    source: s3://some-bucket/x\n"
    )
    again = without_local_sources(task)
    uri = again.file_mounts["~/u"]
    assert isinstance(uri, Storage) and uri.source == "s3://some-bucket/x"

    async def scenario() -> list[str]:
        async with storage_app(tmp_path / "home", moto_s3) as app:
            [plan, _] = await plans_for(app, task, "c1", None, None)
            actor = await storage_actor(app, plan.storage)
            await tell(actor, Ensure(plan.storage, "c1"))
            s3(moto_s3).put_object(Bucket="stix-recovered", Key="w.txt", Body=b"job\n")
            [plan, _] = await plans_for(app, again, "c1", None, None)
            await tell(actor, Ensure(plan.storage, "c1"))
            assert actor.state.value == "READY"
            return actor.spec.sources

    assert anyio.run(scenario) == [str(data)]
    assert s3(moto_s3).get_object(Bucket="stix-recovered", Key="w.txt")["Body"].read() == b"job\n"
    s3(moto_s3).delete_object(Bucket="stix-recovered", Key="w.txt")
    s3(moto_s3).delete_bucket(Bucket="stix-recovered")


def test_a_relaunch_on_another_cloud_keeps_the_storage_s_store(
    moto_s3: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A storage naming no store made on aws (s3) and launched again on gcp (a managed job's
    recovery that moved, or a relaunch elsewhere) keeps its s3 bucket: planned from its record,
    not refused by its actor for a gcs bucket."""
    from stixd.actors import storage_use
    from stixd.actors.storage import Ensure
    from stixproto.task import Task

    monkeypatch.setattr(storage_use, "configured_stores", lambda app: ["s3", "gcs"])
    data = tmp_path / "src"
    data.mkdir()
    task = Task.from_yaml(f"file_mounts:\n  ~/d:\n    name: stix-moved\n    source: {data}\n")

    async def scenario() -> list[tuple[str, str | None, str]]:
        said = []
        async with storage_app(tmp_path / "home", moto_s3) as app:
            for cloud in ("aws", "gcp"):
                chosen = (cloud, "us-east-1" if cloud == "aws" else "europe-west4")
                [plan] = await storage_use.plans_for(app, task, "c1", None, None, chosen)
                actor = await storage_actor(app, plan.storage)
                await tell(actor, Ensure(plan.storage, "c1"))
                said.append((plan.storage.store, plan.storage.region, actor.state.value))
        return said

    assert anyio.run(scenario) == [("s3", "us-east-1", "READY"), ("s3", "us-east-1", "READY")]
    assert "stix-moved" in buckets(moto_s3)
    s3(moto_s3).delete_bucket(Bucket="stix-moved")


def test_the_leak_reconciler_spares_a_bucket_a_launch_recorded_after_its_scan(
    moto_s3: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A launch writes its storage row for a bucket between the reconciler's scan and its
    delete: the rows are read again before each delete, and the bucket is now the launch's."""
    from stixd.control import storage_cmds
    from stixd.storage.stores import LABEL_STORAGE, StoreKind

    for key, value in moto_s3.env.items():  # the stores the reconciler scans: set up here
        monkeypatch.setenv(key, value)
    scan = storage_cmds.leaked_buckets
    spec = StorageSpec(name="stix-leak-race", store="s3", bucket="stix-leak-race")

    async def scenario() -> tuple[list[str], list[str]]:
        async with storage_app(tmp_path / "home", moto_s3) as app:
            bucket = app.object_stores().bucket(StoreKind.S3, spec.bucket)
            await bucket.create({LABEL_STORAGE: spec.name})  # this home's, and no row owns it

            async def then_a_launch(app: App, min_age_s: float = 0.0) -> list[tuple[str, str]]:
                found = await scan(app, 0.0)
                await storage_actor(app, spec)  # the launch's row, written after the scan
                return found

            monkeypatch.setattr(storage_cmds, "leaked_buckets", then_a_launch)
            records, deleted = await storage_cmds.bucket_leaks(app, terminate=True)
            return [r.id for r in records], deleted

    found, deleted = anyio.run(scenario)
    assert found == ["s3://stix-leak-race"] and deleted == []
    assert "stix-leak-race" in buckets(moto_s3)
    s3(moto_s3).delete_bucket(Bucket="stix-leak-race")


def test_a_damaged_storage_row_is_listed_deletable_and_owns_its_bucket(
    moto_s3: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two storages whose rows were damaged (a field of the wrong type; a spec that is no JSON
    object): `storage ls` lists each failed with why, their buckets are no leaks, and `storage
    delete` removes each: the bucket its spec still names and its labels prove its own goes,
    the other is left to the leak scan."""
    import sqlite3

    from stixd.actors.storage import Ensure
    from stixd.control import storage_cmds
    from stixproto import messages as m

    for key, value in moto_s3.env.items():  # the stores the leak scan looks at
        monkeypatch.setenv(key, value)
    data = tmp_path / "src"
    data.mkdir()
    (data / "a.txt").write_text("a\n")
    names = ("stix-hurt-named", "stix-hurt-lost")

    async def make() -> None:
        async with storage_app(tmp_path / "home", moto_s3) as app:
            for name in names:
                spec = local_spec(name, data)
                await tell(await storage_actor(app, spec), Ensure(spec, "c1"))

    anyio.run(make)
    hurt = {"name": names[0], "store": "s3", "bucket": names[0], "sources": 5}
    with sqlite3.connect(tmp_path / "home" / "state.db") as db:
        db.execute("UPDATE actors SET spec=? WHERE id=?", (json.dumps(hurt), names[0]))
        db.execute("UPDATE actors SET spec='[1, 2]' WHERE id=?", (names[1],))

    async def restarted() -> tuple[Any, ...]:
        said: list[Any] = []

        async def emit(item: Any) -> None:
            said.append(item)

        async with storage_app(tmp_path / "home", moto_s3) as app:
            leaks_before = await storage_cmds.leaked_buckets(app)
            listed = await storage_cmds.storage_ls(app, m.StorageLs())
            gone = await storage_cmds.storage_delete(app, m.StorageDelete(names=[*names]), emit)
            left = await storage_cmds.storage_ls(app, m.StorageLs())
            return leaks_before, listed, gone, said, left, await storage_cmds.leaked_buckets(app)

    leaks_before, listed, gone, said, left, leaks_after = anyio.run(restarted)
    assert leaks_before == []
    shown = {s.name: s for s in listed.storages}
    assert set(shown) == set(names)
    for name in names:
        assert f"remove it with `stixctl storage delete {name}`" in str(shown[name].last_error)
    assert (shown[names[0]].store, shown[names[0]].bucket) == ("s3", names[0])
    from stixctl.storage import render

    assert f"* {names[1]}: quarantined: " in render(list(listed.storages))  # the table says why
    assert gone.deleted == [*names] and gone.failed == [], gone
    assert left.storages == []
    notes = " ".join(str(getattr(x, "message", x)) for x in said)
    assert f"Its bucket s3://{names[0]} was deleted" in notes, notes
    assert names[0] not in buckets(moto_s3)
    assert leaks_after == [("s3", names[1])]  # known by its labels only: the leak scan's now
    s3(moto_s3).delete_object(Bucket=names[1], Key="a.txt")
    s3(moto_s3).delete_bucket(Bucket=names[1])
