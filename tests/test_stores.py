"""The object stores against their emulators: moto (S3 and R2), fake-gcs-server (GCS) and
azurite (Azure Blob), each started once for this module (tests/stores_bed.py). What a bucket
holds or whether it exists is checked with a bare client where the emulator allows one."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from aiohttp import web

from stixd.storage.mount import renewable
from stixd.storage.stores import (
    LABEL_HOME,
    LABEL_STORAGE,
    AccessDenied,
    BadAnswer,
    Bucket,
    BucketMissing,
    NotOurs,
    RcloneRemote,
    StoreError,
    StoreKind,
    Stores,
    StoreUnreachable,
    configured,
    label_value,
    open_stores,
)
from stixd.storage.stores import azure as azure_store
from stixd.storage.stores import gcs as gcs_store
from stixd.storage.stores import r2 as r2_store
from stixd.storage.stores import s3 as s3_store
from tests import fake_r2_api, stores_bed
from tests.fake_gcs_sts import FakeSts, served
from tests.stores_bed import Emulator, free_port

pytestmark = pytest.mark.anyio
moto_s3 = stores_bed.moto_s3  # one emulator of each per module
fake_gcs = stores_bed.fake_gcs
azurite = stores_bed.azurite

HOME = "0a1b2c3d"
OTHER_HOME = "ffff0000"
EMULATOR = {
    StoreKind.S3: "moto_s3",
    StoreKind.R2: "moto_s3",
    StoreKind.GCS: "fake_gcs",
    StoreKind.AZURE: "azurite",
}
KINDS = [StoreKind.S3, StoreKind.GCS, StoreKind.AZURE]
BIG = 11 << 20  # past S3's multipart threshold (two parts) and, patched, Azure's block one


@pytest.fixture(params=KINDS, ids=[k.value for k in KINDS])
def kind(request: pytest.FixtureRequest) -> StoreKind:
    return StoreKind(request.param)


@pytest.fixture
def emulator(kind: StoreKind, request: pytest.FixtureRequest) -> Emulator:
    emu: Emulator = request.getfixturevalue(EMULATOR[kind])
    return emu


@contextlib.asynccontextmanager
async def opened(emu: Emulator, home: str = HOME) -> AsyncIterator[Stores]:
    stores = open_stores(emu.config, emu.env, home)
    try:
        yield stores
    finally:
        await stores.aclose()


_names = iter(range(10**6))


def fresh(kind: StoreKind) -> str:
    return f"stix-test-{kind.value}-{next(_names)}"


def bare_exists(kind: StoreKind, emu: Emulator, name: str, sas: str = "") -> bool:
    """Whether the emulator holds bucket ``name``, asked with no stix code in the way (Azure:
    through a container SAS made before, since azurite answers nothing unsigned)."""
    if kind in (StoreKind.S3, StoreKind.R2):
        s3 = stores_bed.s3_client(emu)
        try:
            s3.head_bucket(Bucket=name)
        except s3.exceptions.ClientError:
            return False
        finally:
            s3.close()
        return True
    url = f"{emu.url}/storage/v1/b/{name}" if kind is StoreKind.GCS else sas
    try:
        urllib.request.urlopen(url, timeout=10).close()
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return False
        raise
    return True


def make_tree(root: Path) -> None:
    (root / "src" / "pkg").mkdir(parents=True)
    (root / "src" / "pkg" / "a.py").write_text("print('a')\n")
    (root / "src" / "b c.txt").write_text("spaces\n")
    (root / "README").write_text("read me\n")
    (root / "big.bin").write_bytes(bytes(range(256)) * (BIG // 256))
    (root / ".gitignore").write_text("*.log\nbuild/\n")
    (root / "debug.log").write_text("ignored\n")
    (root / "build").mkdir()
    (root / "build" / "out.o").write_text("ignored\n")


SENT_KEYS = {".gitignore", "README", "big.bin", "src/b c.txt", "src/pkg/a.py"}


async def keys_of(bucket: Bucket, prefix: str = "") -> set[str]:
    return {o.key async for o in bucket.objects(prefix)}


async def test_a_bucket_is_made_with_our_labels_listed_as_ours_and_deleted(
    kind: StoreKind, emulator: Emulator, tmp_path: Path
) -> None:
    async with opened(emulator) as stores:
        name = fresh(kind)
        bucket = stores.bucket(kind, name)
        assert not await bucket.exists()
        assert await bucket.labels() is None
        await bucket.create({LABEL_STORAGE: "My.Data"})
        await bucket.create({LABEL_STORAGE: "My.Data"})  # again: ours, so nothing changes
        assert await bucket.exists()
        labels = await bucket.labels()
        assert labels is not None
        assert labels[LABEL_STORAGE] == label_value("My.Data") == "my_data"
        assert labels[LABEL_HOME] == HOME
        assert await bucket.owned()
        assert name in await stores.tagged(kind)
        make_tree(tmp_path)
        await bucket.upload_tree(tmp_path)
        sas = ""
        if kind is StoreKind.AZURE:
            assert isinstance(bucket, azure_store.AzureBucket)
            sas = bucket.container_sas_url(60) + "&restype=container&comp=list"
        assert bare_exists(kind, emulator, name, sas)
        await bucket.delete()
        assert not bare_exists(kind, emulator, name, sas)
        assert not await bucket.exists()
        assert name not in await stores.tagged(kind)
        await bucket.delete()  # already gone: nothing to do


async def test_upload_sends_only_what_changed_and_honours_the_ignore_files(
    kind: StoreKind, emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(azure_store, "SINGLE_PUT", 4 << 20)  # big.bin goes in blocks
    monkeypatch.setattr(azure_store, "BLOCK", 4 << 20)
    make_tree(tmp_path)
    async with opened(emulator) as stores:
        bucket = stores.bucket(kind, fresh(kind))
        await bucket.create({LABEL_STORAGE: "up"})
        first = await bucket.upload_tree(tmp_path, "work")
        assert (first.sent, first.skipped, first.deleted) == (len(SENT_KEYS), 0, 0)
        assert await keys_of(bucket) == {f"work/{k}" for k in SENT_KEYS}
        again = await bucket.upload_tree(tmp_path, "work")  # the digests the store gave
        assert (again.sent, again.skipped, again.bytes_sent) == (0, len(SENT_KEYS), 0)
        async with opened(emulator) as restarted:  # no digests known: files are hashed
            cold = await restarted.bucket(kind, bucket.name).upload_tree(tmp_path, "work")
        assert (cold.sent, cold.skipped) == (0, len(SENT_KEYS))

        (tmp_path / "README").write_text("READ ME\n")  # same size, other bytes
        (tmp_path / "src" / "new.txt").write_text("new\n")
        (tmp_path / "src" / "b c.txt").unlink()
        changed = await bucket.upload_tree(tmp_path, "work", ignore=lambda rel: rel == "big.bin")
        assert (changed.sent, changed.deleted) == (2, 0)  # nothing deleted unless asked
        assert "work/src/b c.txt" in await keys_of(bucket, "work/")

        await bucket.upload_tree(tmp_path, "other")  # another prefix is left alone below
        pruned = await bucket.upload_tree(tmp_path, "work", delete=True)
        assert (pruned.sent, pruned.deleted) == (0, 1)
        assert await keys_of(bucket, "work/") == {
            f"work/{k}" for k in SENT_KEYS - {"src/b c.txt"} | {"src/new.txt"}
        }

        (tmp_path / ".skyignore").write_text("src/\n")  # .skyignore replaces .gitignore
        sky = await bucket.upload_tree(tmp_path, "sky")
        assert await keys_of(bucket, "sky/") == {
            f"sky/{k}" for k in {".gitignore", ".skyignore", "README", "big.bin", "debug.log",
                                 "build/out.o"}
        }  # fmt: skip
        assert sky.skipped == 0
        await bucket.delete()


async def test_signed_urls_download_and_upload_with_a_bare_client(
    kind: StoreKind, emulator: Emulator, tmp_path: Path
) -> None:
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "data file.bin").write_bytes(b"payload" * 1000)
    async with opened(emulator) as stores:
        bucket = stores.bucket(kind, fresh(kind))
        await bucket.create({LABEL_STORAGE: "signed"})
        await bucket.upload_tree(tmp_path)
        get = await bucket.signed_get("dir/data file.bin", 60)
        put = await bucket.signed_put("from-node/out.txt", 60)
        headers = {"x-ms-blob-type": "BlockBlob"} if kind is StoreKind.AZURE else {}
        async with aiohttp.ClientSession() as bare:  # no credentials of any kind
            async with bare.get(get) as answer:
                assert answer.status == 200
                assert await answer.read() == b"payload" * 1000
            async with bare.put(put, data=b"written on a node", headers=headers) as answer:
                assert answer.status in (200, 201), await answer.text()
            async with bare.get(get.replace("dir/data%20file.bin", "dir/other")) as answer:
                assert answer.status in (403, 404)  # a URL opens its own object only
        assert {o.key: o.size async for o in bucket.objects("from-node/")} == {
            "from-node/out.txt": len(b"written on a node")
        }
        await bucket.delete()


async def test_a_bucket_this_home_did_not_make_is_not_ours_and_never_deleted(
    kind: StoreKind, emulator: Emulator
) -> None:
    name = fresh(kind)
    async with opened(emulator, OTHER_HOME) as other, opened(emulator) as stores:
        await other.bucket(kind, name).create({LABEL_STORAGE: "theirs"})
        bucket = stores.bucket(kind, name)
        assert await bucket.exists()
        assert not await bucket.owned()
        assert name not in await stores.tagged(kind)
        with pytest.raises(NotOurs, match=name):
            await bucket.delete()
        with pytest.raises(NotOurs, match=name):
            await bucket.create({LABEL_STORAGE: "mine"})
        assert await bucket.exists()
        labels = await bucket.labels()
        assert labels is not None and labels[LABEL_HOME] == OTHER_HOME
        await other.bucket(kind, name).delete()


async def test_a_missing_bucket_is_one_line_errors_or_none(
    kind: StoreKind, emulator: Emulator, tmp_path: Path
) -> None:
    (tmp_path / "f").write_text("x")
    async with opened(emulator) as stores:
        bucket = stores.bucket(kind, fresh(kind))
        assert await bucket.labels() is None
        assert not await bucket.owned()
        await bucket.delete()
        with pytest.raises(BucketMissing, match=bucket.name) as listing:
            await keys_of(bucket)
        with pytest.raises(BucketMissing):
            await bucket.upload_tree(tmp_path)
        assert "\n" not in str(listing.value)


@contextlib.asynccontextmanager
async def r2_refusing_tags(upstream: str) -> AsyncIterator[str]:
    """``upstream`` (moto) behind the fault proxy (tests/awsfault.py) answering every bucket
    tagging call as R2 does: 501 NotImplemented (R2's S3 API has no bucket tags)."""
    from tests.awsfault import make_app

    port = free_port()
    runner = web.AppRunner(make_app(upstream))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    url = f"http://127.0.0.1:{port}"
    refused = "<Error><Code>NotImplemented</Code><Message>tagging</Message></Error>"
    try:
        async with aiohttp.ClientSession() as session:
            rule = {"query": "tagging", "status": 501, "body": refused}
            async with session.post(f"{url}/_fault", json=rule) as answer:
                assert answer.status == 200
        yield url
    finally:
        await runner.cleanup()


async def test_r2_is_the_s3_api_at_its_own_endpoint_and_keeps_its_labels_in_the_bucket(
    moto_s3: Emulator, tmp_path: Path
) -> None:
    (tmp_path / "f.txt").write_text("r2")
    (tmp_path / s3_store.MARKER).write_text("{}")  # a local file of that name replaces nothing
    r2 = StoreKind.R2
    async with r2_refusing_tags(moto_s3.url) as url:
        config = {**moto_s3.config, "r2": {"endpoint_url": url}}
        stores = open_stores(config, moto_s3.env, HOME)
        other = open_stores(config, moto_s3.env, OTHER_HOME)
        try:
            bucket = stores.bucket(r2, fresh(r2))
            await bucket.create({LABEL_STORAGE: "r2"})
            assert await bucket.labels() == {LABEL_STORAGE: "r2", LABEL_HOME: HOME}
            assert (await bucket.upload_tree(tmp_path)).sent == 1
            assert await keys_of(bucket) == {"f.txt"}  # the labels are no object of the user's
            (tmp_path / "f.txt").rename(tmp_path / "g.txt")
            pruned = await bucket.upload_tree(tmp_path, delete=True)
            assert (pruned.sent, pruned.deleted) == (1, 1) and await bucket.owned()
            assert bucket.name in await stores.tagged(r2)
            assert bucket.name not in await other.tagged(r2)
            with pytest.raises(NotOurs):
                await other.bucket(r2, bucket.name).delete()
            remote = await bucket.rclone_remote()
            conf = remote.keys
            assert (remote.type, conf["provider"], conf["endpoint"]) == ("s3", "Cloudflare", url)
            # no Cloudflare API token here: the daemon's keys, said (scoped ones: further down)
            assert conf["access_key_id"] == "testing"
            assert "no Cloudflare API token" in str(remote.note)
            await bucket.delete()  # its labels too: else the bucket could not go
            assert not bare_exists(r2, moto_s3, bucket.name)
            assert await bucket.labels() is None
        finally:
            await stores.aclose()
            await other.aclose()
    no_endpoint = {k: v for k, v in moto_s3.config.items() if k != "r2"}
    stores = open_stores(no_endpoint, moto_s3.env, HOME)
    with pytest.raises(StoreError, match=r"storage\.r2\.endpoint_url"):
        stores.bucket(StoreKind.R2, "x")
    await stores.aclose()


async def rclone_run(tmp_path: Path, remote: RcloneRemote, *args: str) -> str:
    """The distro's rclone (README command 2) run with nothing but ``remote`` as its config."""
    rclone = shutil.which("rclone")
    assert rclone is not None, "rclone is not installed: run README command 2"
    lines = [f"type = {remote.type}"] + [f"{k} = {v}" for k, v in sorted(remote.keys.items())]
    config = tmp_path / "rclone.conf"
    config.write_text("[r]\n" + "\n".join(lines) + "\n")
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}  # rclone 1.60 bug
    done = await anyio.run_process(
        [rclone, "--config", str(config), "--retries", "1", *args], env=env
    )
    return done.stdout.decode()


async def rclone_lists(tmp_path: Path, name: str, remote: RcloneRemote) -> list[str]:
    return (await rclone_run(tmp_path, remote, "lsf", "-R", f"r:{name}")).split()


async def test_rclone_reads_and_writes_the_bucket_with_its_remote(
    kind: StoreKind, emulator: Emulator, tmp_path: Path
) -> None:
    """The distro's rclone (README command 2), configured with nothing but ``rclone_remote``,
    lists the bucket and writes into it."""
    (tmp_path / "up").mkdir()
    (tmp_path / "up" / "x.txt").write_text("from the daemon")
    (tmp_path / "node.txt").write_text("from a node")
    async with opened(emulator) as stores:
        bucket = stores.bucket(kind, fresh(kind))
        await bucket.create({LABEL_STORAGE: "rc"})
        await bucket.upload_tree(tmp_path / "up")
        remote = await bucket.rclone_remote()
        conf = remote.keys
        assert remote.note is None
        if kind is StoreKind.S3:  # STS credentials for this bucket, not the daemon's keys
            assert conf["access_key_id"] != "testing" and conf["session_token"]
            assert remote.valid_s == 12 * 3600
        if kind is StoreKind.AZURE:  # a week (rclone cannot renew it); no append or tag rights
            assert remote.valid_s == 7 * 24 * 3600 and "sp=rwdl&" in conf["sas_url"]
        assert await rclone_lists(tmp_path, bucket.name, remote) == ["x.txt"]
        await rclone_run(
            tmp_path, remote, "copyto", str(tmp_path / "node.txt"), f"r:{bucket.name}/node.txt"
        )
        assert await keys_of(bucket) == {"x.txt", "node.txt"}
        if kind is StoreKind.AZURE:  # the container SAS opens that container only
            other = conf["sas_url"].replace(f"/{bucket.name}?", "/some-other-container?")
            url = other + "&restype=container&comp=list"
            async with aiohttp.ClientSession() as bare, bare.get(url) as answer:
                assert answer.status == 403
        await bucket.delete()


# -- a bucket's own region; the nodes' credentials ------------------------------------------


async def test_a_bucket_made_elsewhere_is_read_in_its_own_region(
    moto_s3: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """stix's default region is us-east-1; the bucket (a ``s3://`` source) is in eu-west-1:
    its region is asked once, and the client, the signed URLs and rclone all use it."""
    name = fresh(StoreKind.S3)
    bare = stores_bed.s3_client(moto_s3, "eu-west-1")
    bare.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    bare.put_object(Bucket=name, Key="data/in.txt", Body=b"from eu-west-1")
    asked: list[str] = []
    ask = s3_store.S3Clients._ask_region

    async def counted(self: s3_store.S3Clients, bucket: str) -> str | None:
        asked.append(bucket)
        return await ask(self, bucket)

    monkeypatch.setattr(s3_store.S3Clients, "_ask_region", counted)
    try:
        async with opened(moto_s3) as stores:
            bucket = stores.bucket(StoreKind.S3, name)
            assert await bucket.exists()
            assert await keys_of(bucket) == {"data/in.txt"}
            get = await bucket.signed_get("data/in.txt", 60)
            assert "%2Feu-west-1%2Fs3%2F" in get  # X-Amz-Credential's scope
            async with aiohttp.ClientSession() as plain, plain.get(get) as answer:
                assert answer.status == 200 and await answer.read() == b"from eu-west-1"
            remote = await bucket.rclone_remote()
            assert remote.keys["region"] == "eu-west-1"
            assert sorted(await rclone_lists(tmp_path, name, remote)) == ["data/", "data/in.txt"]
            again = stores.bucket(StoreKind.S3, name)  # another Bucket, the same daemon
            assert (await again.rclone_remote()).keys["region"] == "eu-west-1"
            assert asked == [name]  # asked once for the daemon's life
            missing = stores.bucket(StoreKind.S3, fresh(StoreKind.S3))
            assert not await missing.exists()  # no region yet: the default, not remembered
            await missing.create({LABEL_STORAGE: "here"})
            assert (await missing.rclone_remote()).keys["region"] == "us-east-1"
            await missing.delete()
    finally:
        bare.delete_object(Bucket=name, Key="data/in.txt")
        bare.delete_bucket(Bucket=name)
        bare.close()


async def test_a_region_the_store_will_not_tell_is_a_one_line_error() -> None:
    async with hostile("readonly") as server:  # refuses HeadBucket with no region header
        config, env = server.config(StoreKind.S3)
        stores = open_stores(config, env, HOME)
        try:
            with pytest.raises(AccessDenied, match="find its region") as refused:
                await stores.bucket(StoreKind.S3, "b").rclone_remote()
            assert "\n" not in str(refused.value)
            server.mode, server.region = "endless", "../../etc x"  # a region that is none
            with pytest.raises(BadAnswer, match="names no region") as bad:
                await stores.bucket(StoreKind.S3, "b").signed_get("k", 60)
            assert "\n" not in str(bad.value)
        finally:
            await stores.aclose()


async def test_node_credentials_are_sts_ones_for_this_bucket_only(moto_s3: Emulator) -> None:
    config = {**moto_s3.config, "s3": {**moto_s3.config["s3"], "node_credentials_seconds": 1800}}
    sent: list[dict[str, Any]] = []
    stores = open_stores(config, moto_s3.env, HOME)
    try:
        bucket = stores.bucket(StoreKind.S3, "some-bucket", "us-east-1")
        clients: Any = getattr(bucket, "_clients")  # noqa: B009 (the store's STS client)
        sts = await clients._sts_client()
        sts.meta.events.register(
            "before-call.sts.GetFederationToken", lambda params, **_: sent.append(params)
        )
        remote = await bucket.rclone_remote()
        assert remote.valid_s == 1800 and remote.keys["session_token"]
        assert remote.keys["access_key_id"] != "testing"
        [params] = sent
        body = params["body"]
        assert body["DurationSeconds"] == 1800 and body["Name"] == "stix-some-bucket"
        s3, kms = json.loads(body["Policy"])["Statement"]
        assert s3 == {
            "Effect": "Allow",
            "Action": "s3:*",
            "Resource": ["arn:aws:s3:::some-bucket", "arn:aws:s3:::some-bucket/*"],
        }
        assert kms["Resource"] == "*" and kms["Action"] == ["kms:Decrypt", "kms:GenerateDataKey"]
        assert kms["Condition"] == {
            "StringEquals": {"kms:ViaService": "s3.us-east-1.amazonaws.com"}
        }
    finally:
        await stores.aclose()
    assert s3_store.bucket_policy("b", "cn-north-1")["Statement"][0]["Resource"][0] == (
        "arn:aws-cn:s3:::b"
    )


ROLE = "arn:aws:iam::123456789012:role/stix-nodes"


async def test_a_role_allowing_an_hour_gives_the_nodes_an_hour(moto_s3: Emulator) -> None:
    """AWS refuses AssumeRole beyond the role's MaxSessionDuration (an hour when the daemon is
    itself a role's session); moto does not, so this one answer is made up on the way."""
    env = {**moto_s3.env, "AWS_SESSION_TOKEN": "daemon-session"}
    s3 = {**moto_s3.config["s3"], "node_role_arn": ROLE, "node_credentials": "scoped"}
    stores = open_stores({**moto_s3.config, "s3": s3}, env, HOME)
    asked: list[int] = []

    def max_session(params: dict[str, Any], **_: Any) -> Any:
        asked.append(int(params["body"]["DurationSeconds"]))
        if asked[-1] <= 3600:
            return None
        text = "The requested DurationSeconds exceeds the MaxSessionDuration set for this role."
        error = {"Error": {"Code": "ValidationError", "Message": text}}
        return FakeHttp(400), {**error, "ResponseMetadata": {"HTTPStatusCode": 400}}

    try:
        bucket = stores.bucket(StoreKind.S3, "b", "us-east-1")
        clients: Any = getattr(bucket, "_clients")  # noqa: B009 (the store's STS client)
        sts = await clients._sts_client()
        sts.meta.events.register("before-call.sts.AssumeRole", max_session)
        remote = await bucket.rclone_remote()
        assert asked == [12 * 3600, 3600] and remote.valid_s == 3600
        assert remote.keys["session_token"] and remote.note is None
    finally:
        await stores.aclose()


class FakeHttp:
    def __init__(self, status: int) -> None:
        self.status_code = status
        self.headers: dict[str, str] = {}


@pytest.mark.parametrize("mode", ["auto", "scoped", "daemon", "role"])
async def test_a_daemon_on_session_credentials_falls_back_only_as_configured(
    moto_s3: Emulator, mode: str
) -> None:
    """STS gives no federation token for temporary credentials: ``auto`` hands the daemon's
    keys and says so, ``scoped`` refuses in one line, ``daemon`` asks no STS at all; with a
    role to assume, the nodes get that role's credentials for the bucket."""
    env = {**moto_s3.env, "AWS_SESSION_TOKEN": "daemon-session"}
    s3 = {**moto_s3.config["s3"], "node_credentials": "scoped" if mode == "role" else mode}
    if mode == "role":
        s3["node_role_arn"] = ROLE
    stores = open_stores({**moto_s3.config, "s3": s3}, env, HOME)
    try:
        bucket = stores.bucket(StoreKind.S3, "b", "us-east-1")
        if mode == "role":
            remote = await bucket.rclone_remote()
            assert remote.keys["session_token"] not in ("", "daemon-session")
            assert remote.keys["access_key_id"] != "testing" and remote.note is None
            assert remote.valid_s == 12 * 3600
            return
        if mode == "scoped":
            with pytest.raises(StoreError, match="no bucket-scoped credentials") as refused:
                await bucket.rclone_remote()
            assert "\n" not in str(refused.value) and "node_role_arn" in str(refused.value)
            return
        remote = await bucket.rclone_remote()
        assert remote.keys["session_token"] == "daemon-session"
        assert remote.keys["access_key_id"] == "testing" and remote.valid_s is None
        if mode == "daemon":
            assert remote.note is None
        else:
            assert remote.note is not None and "daemon's own S3 keys" in remote.note
            assert "temporary credentials" in remote.note and "\n" not in remote.note
    finally:
        await stores.aclose()


async def test_a_refused_sts_call_falls_back_and_says_why() -> None:
    async with hostile("readonly") as server:  # answers STS (a POST) AccessDenied
        config, env = server.config(StoreKind.S3)
        stores = open_stores(config, env, HOME)
        try:
            remote = await stores.bucket(StoreKind.S3, "b", "us-east-1").rclone_remote()
            assert remote.keys["access_key_id"] == "k" and "session_token" not in remote.keys
            assert remote.note is not None and "GetFederationToken" in remote.note
        finally:
            await stores.aclose()


# -- hostile stores ------------------------------------------------------------------------


class Hostile:
    """A loopback server that answers as a broken store would (a fake: no real store does)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.region = "us-east-1"
        self.pages = 0
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def config(self, kind: StoreKind) -> tuple[dict[str, Any], dict[str, str]]:
        env = {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "HOME": "/nonexistent"}
        return (
            {
                "s3": {"endpoint_url": self.url},
                "gcs": {"endpoint": self.url, "project": "p"},
                "azure": {"account": "acct", "key": "a2V5", "endpoint": f"{self.url}/acct"},
            },
            env,
        )

    async def answer(self, request: web.Request) -> web.Response:
        if self.mode == "garbage":
            return web.Response(text="<html><body>502 bad gateway, maybe", status=200)
        if self.mode == "deep":  # JSON nested past any parser's depth (json: RecursionError)
            return web.Response(text="[" * 100_000, content_type="application/json")
        if self.mode == "readonly":  # lists an empty bucket, refuses every write
            await request.read()
            if request.method != "GET":
                return web.Response(text="<Error><Code>AccessDenied</Code></Error>", status=403)
            if "storage/v1" in request.path:
                return web.json_response({})
            if request.query.get("comp") == "list":
                return web.Response(text="<EnumerationResults><Blobs/></EnumerationResults>")
            return web.Response(
                text="<ListBucketResult><IsTruncated>false</IsTruncated></ListBucketResult>"
            )
        if request.method == "HEAD":  # S3's HeadBucket (a bucket's region), not a page
            return web.Response(headers={"x-amz-bucket-region": self.region})
        self.pages += 1
        token = f"t{self.pages}"
        if "storage/v1" in request.path:
            doc = {"items": [{"name": f"k{self.pages}", "size": "1"}], "nextPageToken": token}
            return web.json_response(doc)
        if request.query.get("comp") == "list":
            xml = (
                f"<EnumerationResults><Blobs/><NextMarker>{token}</NextMarker></EnumerationResults>"
            )
            return web.Response(text=xml, content_type="application/xml")
        xml = (
            "<ListBucketResult><IsTruncated>true</IsTruncated>"
            f"<NextContinuationToken>{token}</NextContinuationToken>"
            f'<Contents><Key>k{self.pages}</Key><Size>1</Size><ETag>"e"</ETag></Contents>'
            "</ListBucketResult>"
        )
        return web.Response(text=xml, content_type="application/xml")


@contextlib.asynccontextmanager
async def hostile(mode: str) -> AsyncIterator[Hostile]:
    server = Hostile(mode)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server.answer)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", server.port).start()
    try:
        yield server
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("mode", ["garbage", "deep"])
async def test_a_store_answering_garbage_is_a_one_line_bad_answer(
    kind: StoreKind, mode: str
) -> None:
    async with hostile(mode) as server:
        config, env = server.config(kind)
        stores = open_stores(config, env, HOME)
        try:
            with pytest.raises(BadAnswer) as bad:
                await keys_of(stores.bucket(kind, "b"))
            assert "\n" not in str(bad.value) and "garbage" in str(bad.value)
        finally:
            await stores.aclose()


async def test_a_refused_upload_is_one_error_not_a_group(kind: StoreKind, tmp_path: Path) -> None:
    for i in range(12):  # more files than workers: every worker fails
        (tmp_path / f"f{i}").write_text("x")
    async with hostile("readonly") as server:
        config, env = server.config(kind)
        config["gcs"]["service_account_file"] = str(
            stores_bed.service_account_key(tmp_path / "sa.json")
        )
        stores = open_stores(config, env, HOME)
        try:
            with pytest.raises(AccessDenied, match="denied"):
                await stores.bucket(kind, "bkt").upload_tree(
                    tmp_path, ignore=lambda r: r == "sa.json"
                )
        finally:
            await stores.aclose()


async def test_a_listing_that_never_ends_is_cut_off(kind: StoreKind) -> None:
    async with hostile("endless") as server:
        config, env = server.config(kind)
        stores = open_stores(config, env, HOME)
        try:
            bucket: Any = stores.bucket(kind, "b")
            bucket.max_pages = 5
            with pytest.raises(BadAnswer, match="did not end in 5 pages"):
                await keys_of(bucket)
            assert server.pages == 5
        finally:
            await stores.aclose()


async def test_a_store_that_is_not_there_is_unreachable(kind: StoreKind) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    config = {
        "s3": {"endpoint_url": url},
        "gcs": {"endpoint": url, "project": "p"},
        "azure": {"account": "acct", "key": "a2V5", "endpoint": f"{url}/acct"},
    }
    env = {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "HOME": "/nonexistent"}
    stores = open_stores(config, env, HOME)
    try:
        with pytest.raises(StoreUnreachable):
            await stores.bucket(kind, "b").exists()
    finally:
        await stores.aclose()


def test_label_values_fit_every_store() -> None:
    assert label_value("My.Data/Set 1") == "my_data_set_1"
    assert len(label_value("x" * 100)) == 63
    assert json.dumps(label_value("ü")) == '"_"'


async def test_gcs_without_credentials_says_what_to_set_and_asks_no_metadata_server(
    tmp_path: Path,
) -> None:
    stores = open_stores({"gcs": {"project": "p"}}, {"HOME": str(tmp_path)}, HOME)
    try:
        with pytest.raises(StoreError, match="GOOGLE_APPLICATION_CREDENTIALS") as missing:
            await stores.bucket(StoreKind.GCS, "b").exists()
        assert "\n" not in str(missing.value)
    finally:
        await stores.aclose()


def test_a_store_is_set_up_when_its_credentials_resolve_from_files_or_environment(
    tmp_path: Path,
) -> None:
    """SkyPilot's "enabled storage clouds": an AWS profile file, Azure's account and key, a GCS
    key file or gcloud's ADC file each count, read without the network; a file written later
    is seen at the next call (the answer is cached on the files' stats)."""
    env = {"HOME": str(tmp_path)}
    assert configured({}, env) == []
    aws = tmp_path / ".aws"
    aws.mkdir()
    keys = "aws_access_key_id = k\naws_secret_access_key = s\n"
    (aws / "credentials").write_text(f"[team]\n{keys}")
    assert configured({}, env) == []  # the default profile has no keys
    assert configured({}, {**env, "AWS_PROFILE": "team"}) == ["s3"]
    (aws / "credentials").write_text(f"[default]\n{keys}")
    assert configured({}, env) == ["s3"]
    azure = {"AZURE_STORAGE_ACCOUNT": "acct", "AZURE_STORAGE_KEY": "a2V5"}
    assert configured({}, {**env, **azure}) == ["s3", "azure"]
    key = tmp_path / "sa.json"
    assert "gcs" not in configured({}, {**env, "GOOGLE_APPLICATION_CREDENTIALS": str(key)})
    key.write_text("{}")
    assert "gcs" in configured({}, {**env, "GOOGLE_APPLICATION_CREDENTIALS": str(key)})
    adc = tmp_path / "gcloud" / "application_default_credentials.json"
    adc.parent.mkdir()
    adc.write_text("{}")
    assert configured({}, {**env, "CLOUDSDK_CONFIG": str(adc.parent)}) == ["s3", "gcs"]
    r2 = {**env, "R2_ENDPOINT_URL": "https://acct.r2.cloudflarestorage.com"}
    assert configured({"azure": {"account": "a", "key": "a2V5"}}, r2) == ["s3", "azure", "r2"]


async def test_a_bucket_whose_labels_are_refused_is_said_and_skipped_not_the_whole_scan(
    moto_s3: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with opened(moto_s3) as stores:
        mine, refused = (stores.bucket(StoreKind.S3, fresh(StoreKind.S3)) for _ in range(2))
        for bucket in (mine, refused):
            await bucket.create({LABEL_STORAGE: bucket.name})
        labels = s3_store.S3Bucket.labels

        async def denied(self: s3_store.S3Bucket) -> dict[str, str] | None:
            if self.name == refused.name:  # as a bucket whose policy denies GetBucketTagging
                raise AccessDenied(f"s3: reading the tags of {self.name} was denied")
            return await labels(self)

        monkeypatch.setattr(s3_store.S3Bucket, "labels", denied)
        said: list[tuple[str, str]] = []
        found = await stores.tagged(StoreKind.S3, lambda name, why: said.append((name, why)))
        monkeypatch.undo()
        assert mine.name in found and refused.name not in found
        assert said == [(refused.name, f"s3: reading the tags of {refused.name} was denied")]
        for bucket in (mine, refused):
            await bucket.delete()


async def test_gcs_downscopes_a_token_to_one_bucket_at_google_sts() -> None:
    """The daemon's access token is exchanged for one its Credential Access Boundary keeps to
    one bucket, as Google's STS takes the request; a token STS does not know is refused in one
    line."""
    fake = FakeSts({"daemon-token"}, lifetime=1800)
    async with served(fake) as url, aiohttp.ClientSession() as session:
        endpoint = f"{url}/v1/token"
        token, valid_s = await gcs_store.downscope(session, endpoint, "daemon-token", 3000, "b-1")
        assert fake.issued[token][0] == {"b-1"} and valid_s == 1800
        sent = json.loads(urllib.parse.unquote(fake.forms[-1]["options"]))
        assert sent == gcs_store.access_boundary("b-1")
        # the source token ends first: so does its downscoped one
        _, shorter = await gcs_store.downscope(session, endpoint, "daemon-token", 600, "b-1")
        assert shorter == 600
        with pytest.raises(AccessDenied, match="invalid or expired") as refused:
            await gcs_store.downscope(session, endpoint, "stolen", 3000, "b-1")
        assert "\n" not in str(refused.value)


async def test_rclone_takes_a_renewed_gcs_token_from_its_config(
    fake_gcs: Emulator, tmp_path: Path
) -> None:
    """rclone 1.60 reaches a bucket with a downscoped access token alone (no refresh token, no
    key) and, when the token nears its end, reads its config file again and takes the newer
    one written there: a running mount can be renewed. The fake GCS in front of the emulator
    lets a token through only for its own bucket and refuses the first once it is replaced."""
    name = f"stix-tok-{next(_names)}"
    await stores_bed.gcs_bucket_holding(fake_gcs, name, "x.txt", b"hi")
    fake = FakeSts({"daemon-token"}, lifetime=16)  # rclone takes it as ended 10 s early
    rclone = shutil.which("rclone")
    assert rclone is not None, "rclone is not installed: run README command 2"
    config, port = tmp_path / "rclone.conf", free_port()

    def write(token: str, valid_s: int) -> None:
        line = gcs_store.rclone_token(token, valid_s, time.time())
        text = "[r]\ntype = google cloud storage\nbucket_policy_only = true\n"
        text += f"endpoint = {gcs_url}/storage/v1/\ntoken = {line}\n"
        (tmp_path / "part").write_text(text)
        os.replace(tmp_path / "part", config)

    async def listed(client: aiohttp.ClientSession, bucket: str) -> tuple[int, str]:
        asked = {"fs": "r:", "remote": bucket}
        async with client.post(f"http://127.0.0.1:{port}/operations/list", json=asked) as got:
            return got.status, await got.text()

    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}  # rclone 1.60 bug
    argv = [rclone, "rcd", "--rc-no-auth", f"--rc-addr=127.0.0.1:{port}", "--config", str(config)]
    async with served(fake, fake_gcs.url) as gcs_url, aiohttp.ClientSession() as client:
        sts = f"{gcs_url}/v1/token"
        first, first_s = await gcs_store.downscope(client, sts, "daemon-token", 3600, name)
        started = time.time()
        write(first, first_s)
        proc = await anyio.open_process(argv, env=env)
        try:
            for _ in range(100):
                with contextlib.suppress(aiohttp.ClientError):
                    if (await listed(client, name))[0] < 500:
                        break
                await anyio.sleep(0.1)
            status, text = await listed(client, name)
            assert status == 200 and "x.txt" in text, text
            status, _ = await listed(client, "other-bucket")
            assert status != 200  # the token is for its bucket alone
            fake.lifetime = 3600
            second, second_s = await gcs_store.downscope(client, sts, "daemon-token", 3600, name)
            write(second, second_s)
            del fake.issued[first]  # replaced: the fake GCS refuses it from now on
            await anyio.sleep(max(0.0, started + first_s - 10 + 1 - time.time()))
            status, text = await listed(client, name)
            assert status == 200 and "x.txt" in text, text
            assert not [r for r in fake.refused if name in r]
        finally:
            proc.terminate()
            await proc.wait()
            await proc.aclose()


async def test_gcs_nodes_get_a_token_scoped_to_their_bucket_unless_told_otherwise(
    tmp_path: Path,
) -> None:
    """``rclone_remote`` hands a node a token downscoped to its bucket, with its lifetime to
    renew it by, and no key; ``node_credentials: daemon`` the key; when STS refuses, ``auto``
    the key with a note saying so and ``scoped`` a one-line error."""
    fake = FakeSts({"daemon-token"}, lifetime=1800)
    async with served(fake) as url:
        key = stores_bed.service_account_key(tmp_path / "sa.json")
        doc = json.loads(key.read_text()) | {"token_uri": f"{url}/oauth2/token"}
        key.write_text(json.dumps(doc))

        async def remote(mode: str) -> RcloneRemote:
            section = {"project": "p", "service_account_file": str(key), "node_credentials": mode}
            stores = open_stores({"gcs": section | {"sts_endpoint": f"{url}/v1/token"}}, {}, HOME)
            try:
                return await stores.bucket(StoreKind.GCS, "b-2").rclone_remote()
            finally:
                await stores.aclose()

        scoped = await remote("auto")
        token = json.loads(scoped.keys["token"])["access_token"]
        assert fake.issued[token][0] == {"b-2"} and scoped.valid_s == 1800
        assert renewable(scoped) and scoped.note is None
        assert not [k for k in scoped.keys if "service_account" in k]
        daemon = await remote("daemon")
        assert daemon.keys["service_account_file"] == str(key) and not renewable(daemon)
        fake.sources = set()  # STS refuses the daemon's token
        fallback = await remote("auto")
        assert "service_account_file" in fallback.keys and "token" not in fallback.keys
        assert fallback.note is not None and "not a token scoped to it" in fallback.note
        with pytest.raises(StoreError, match="node_credentials: auto") as refused:
            await remote("scoped")
        assert "\n" not in str(refused.value)


# -- R2: Cloudflare's temporary credentials, kept to one bucket (tests/fake_r2_api.py) -----


def r2_config(emu: Emulator, api: str, **knobs: Any) -> dict[str, Any]:
    r2 = {**emu.config["r2"], "api_endpoint": api, "api_token": fake_r2_api.TOKEN}
    return {**emu.config, "r2": {**r2, "account_id": fake_r2_api.ACCOUNT, **knobs}}


async def test_r2_nodes_get_temporary_keys_for_their_one_bucket(moto_s3: Emulator) -> None:
    """Fresh keys from Cloudflare's API for each mount, asked as documented; moto (told by the
    fake) takes them on their bucket and refuses them anywhere else."""
    fake = fake_r2_api.FakeR2Api("testing", moto_s3.scoped)
    async with fake_r2_api.served(fake) as api:
        config = r2_config(moto_s3, api, node_credentials_seconds=1800)
        stores = open_stores(config, moto_s3.env, HOME)
        try:
            mine, other = (
                stores.bucket(StoreKind.R2, "stix-r2-mine"),
                stores.bucket(StoreKind.R2, "stix-r2-other"),
            )
            for b in (mine, other):
                await b.create({LABEL_STORAGE: b.name})
            remote = await mine.rclone_remote()
            again = await mine.rclone_remote()
        finally:
            await stores.aclose()
    assert fake.asked[0] == {
        "bucket": "stix-r2-mine",
        "parentAccessKeyId": "testing",
        "permission": "object-read-write",
        "ttlSeconds": 1800,
    }
    assert remote.type == "s3" and remote.keys["provider"] == "Cloudflare"
    assert remote.valid_s == 1800 and remote.note is None and renewable(remote)
    assert remote.keys["access_key_id"] == fake.minted[0] != "testing"
    assert again.keys["access_key_id"] == fake.minted[1] != fake.minted[0]  # fresh each time
    client = stores_bed.s3_client(moto_s3, keys=remote.keys)
    try:
        client.put_object(Bucket="stix-r2-mine", Key="k", Body=b"scoped")
        assert client.get_object(Bucket="stix-r2-mine", Key="k")["Body"].read() == b"scoped"
        for refused in (
            lambda: client.put_object(Bucket="stix-r2-other", Key="k", Body=b"x"),
            lambda: client.list_objects_v2(Bucket="stix-r2-other"),
            client.list_buckets,
        ):
            with pytest.raises(client.exceptions.ClientError, match="AccessDenied"):
                refused()
    finally:
        client.close()


@pytest.mark.parametrize("mode", ["auto", "scoped"])
async def test_r2_api_answers_of_any_kind_end_in_one_line_fallback_or_refusal(
    moto_s3: Emulator, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No token, a wrong one, garbage, a refusal, missing keys, a huge body or no answer at
    all: ``auto`` hands the daemon's keys with one line saying why, ``scoped`` fails in one."""
    monkeypatch.setattr(r2_store, "ASK_WITHIN_S", 1.0)
    fake = fake_r2_api.FakeR2Api("testing", moto_s3.scoped)
    cases: dict[str, tuple[str, dict[str, Any], str]] = {
        "no token": ("ok", {"api_token": None}, "no Cloudflare API token"),
        "wrong token": ("ok", {"api_token": "nope"}, "10000: Authentication error"),
        "no account": ("ok", {"account_id": None}, "no Cloudflare account id"),
        "garbage": ("garbage", {}, "answered garbage (HTTP 200)"),
        "deep": ("deep", {}, "answered garbage (HTTP 200)"),
        "refuse": ("refuse", {}, "10042: R2 temporary credentials are not enabled"),
        "missing": ("missing", {}, "no usable secretAccessKey"),
        "huge": ("huge", {}, "more than 64 KiB"),
        "silent": ("silent", {}, "did not answer within 1 s"),
        "unreachable": ("ok", {"api_endpoint": f"http://127.0.0.1:{free_port()}"}, "unreachable"),
    }
    async with fake_r2_api.served(fake) as api:
        for case, (answers, knobs, said) in cases.items():
            fake.mode = answers
            config = r2_config(moto_s3, api, node_credentials=mode, **knobs)
            config["r2"] = {k: v for k, v in config["r2"].items() if v is not None}
            stores = open_stores(config, moto_s3.env, HOME)
            try:
                bucket = stores.bucket(StoreKind.R2, "stix-r2-hostile")
                with anyio.fail_after(10):
                    if mode == "scoped":
                        with pytest.raises(StoreError) as refused:
                            await bucket.rclone_remote()
                        line = refused.value.message
                        assert "storage.r2.node_credentials: auto" in line, case
                    else:
                        remote = await bucket.rclone_remote()
                        assert remote.keys["access_key_id"] == "testing", case
                        assert remote.valid_s is None, case
                        line = remote.note or ""
                        assert line.startswith("the nodes got the daemon's own R2 keys"), case
            finally:
                await stores.aclose()
            assert said in line and "\n" not in line and len(line) < 500, (case, line)


async def test_the_fake_r2_api_answers_cloudflare_s_own_sdk_as_cloudflare_does(
    tmp_path: Path,
) -> None:
    """The fake, proven with a client stix did not write: Cloudflare's Python SDK gets keys
    from it, and its own typed errors for what Cloudflare refuses."""
    import cloudflare

    fake = fake_r2_api.FakeR2Api("parent-key", tmp_path / "scoped")

    def create(client: cloudflare.Cloudflare, **changed: Any) -> Any:
        asked: dict[str, Any] = {
            "account_id": fake_r2_api.ACCOUNT,
            "bucket": "stix-sdk",
            "parent_access_key_id": "parent-key",
            "permission": "object-read-write",
            "ttl_seconds": 3600,
        }
        return client.r2.temporary_credentials.create(**(asked | changed))

    async with fake_r2_api.served(fake) as api:

        def calls() -> None:
            good = cloudflare.Cloudflare(api_token=fake_r2_api.TOKEN, base_url=api, max_retries=0)
            bad = cloudflare.Cloudflare(api_token="wrong", base_url=api, max_retries=0)
            with good, bad:
                keys = create(good)
                assert keys is not None and keys.access_key_id == fake.minted[0]
                assert keys.secret_access_key and keys.session_token
                scope = json.loads((tmp_path / "scoped").read_text())[keys.access_key_id]
                assert scope["bucket"] == "stix-sdk" and scope["expires_at"] > time.time() + 3500
                with pytest.raises(cloudflare.AuthenticationError):
                    create(bad)
                with pytest.raises(cloudflare.PermissionDeniedError):
                    create(good, account_id="f" * 32)
                for wrong in (
                    {"permission": "everything"},
                    {"ttl_seconds": 604801},
                    {"ttl_seconds": 0},
                    {"parent_access_key_id": "someone-else"},
                    {"bucket": "Not_A_Bucket"},
                ):
                    with pytest.raises(cloudflare.BadRequestError):
                        create(good, **wrong)

        await anyio.to_thread.run_sync(calls)
    assert len(fake.minted) == 1
