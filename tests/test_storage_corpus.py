"""Every storage file of SkyPilot's corpus (`$STIX_SHARED/compat/skypilot-yamls`) runs on the
local infra against the emulators (moto for S3 and R2, fake-gcs-server for GCS).

Each task of such a file is rewritten only where it cannot run here, keeping every storage
mount's shape (name or its absence, source as a string or a list, store, persistent, mode):

- `resources` become `{infra: local}` (no GPUs, clouds or images here); `num_nodes`, `workdir`,
  `service`, `pool`, `envs`, `secrets` and `config` are dropped after the file's envs are
  substituted into `file_mounts` (SkyPilot's own substitution);
- every bucket name becomes a fresh one of this module; a bucket the file reads by URI
  (`source: s3://...` or the `/dst: gs://...` shorthand) is made and filled first; an env the
  file leaves empty for a bucket gets a fresh bucket;
- a local source of a storage becomes a fresh folder holding one file; plain local file mounts
  (not storage) are dropped;
- `setup` goes, and `run` lists and reads each mount path and writes into it.

A mode the node side of this build does not run (none now; it was MOUNT and MOUNT_CACHED before
rclone on the node) would run as COPY, its test id saying so (`...-MOUNT-as-COPY`). The job must
succeed and print what each mount holds; what it writes through a MOUNT or MOUNT_CACHED mount is
in the bucket once the job is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeGuard

import pytest
import yaml

from stixd.providers.shared.fuse_mounts import fuse_mounts_under
from tests.conftest import Stix, kill_everything_under, wait_until
from tests.shared_data import needs
from tests.stores_bed import Emulator, gcs_server, moto_server, service_account_key

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("STIX_SHARED", REPO.parent / "shared"))
CORPUS = SHARED / "compat" / "skypilot-yamls"

NODE_MODES = ("COPY", "MOUNT", "MOUNT_CACHED")
"""The modes the node side of this build runs; another mode runs as COPY (said in the id)."""
SCHEME_STORE = {"s3": "s3", "r2": "r2", "gs": "gcs"}
STORE_SCHEME = {v: k for k, v in SCHEME_STORE.items()}
DROPPED = ("num_nodes", "workdir", "service", "pool", "envs", "secrets", "config", "setup")
RUN_ID = secrets.token_hex(3)

pytestmark = [pytest.mark.slow, needs(CORPUS, "compat corpus")]


def _fill(section: Any, values: dict[str, str]) -> Any:
    """SkyPilot's substitution (`sky/task.py: _fill_in_env_vars`), on JSON text."""
    text = json.dumps(section)
    pattern = r"\$\{?\b([a-zA-Z_][a-zA-Z0-9_]*)\b\}?"
    return json.loads(re.sub(pattern, lambda m: values.get(m.group(1), m.group(0)), text))


def _is_uri(text: Any) -> TypeGuard[str]:
    return isinstance(text, str) and "://" in text


def _storage_docs(path: Path) -> list[dict[str, Any]]:
    """The task documents of `path` with a storage mount or a bucket URI, envs filled in."""
    found = []
    for doc in yaml.safe_load_all(path.read_text()):
        if not isinstance(doc, dict) or not isinstance(doc.get("file_mounts"), dict):
            continue
        values = {str(k): "" if v is None else str(v) for k, v in (doc.get("envs") or {}).items()}
        mounts = _fill(doc["file_mounts"], values)
        for dest, src in mounts.items():  # an env left empty for a bucket: one of ours
            if isinstance(src, dict) and src.get("source") == "":
                src["source"] = f"s3://empty-env-{dest.strip('/~')}"
        if any(isinstance(v, dict) or _is_uri(v) for v in mounts.values()):
            found.append({**doc, "file_mounts": mounts})
    return found


def storage_files() -> list[Path]:
    return [p for p in sorted(CORPUS.glob("*.y*ml")) if _storage_docs(p)] if CORPUS.is_dir() else []


def _modes(path: Path) -> list[str]:
    return [
        str(m.get("mode") or "MOUNT").upper()
        for doc in _storage_docs(path)
        for m in doc["file_mounts"].values()
        if isinstance(m, dict)
    ]


def _case_id(path: Path) -> str:
    forced = sorted({m for m in _modes(path) if m not in NODE_MODES})
    return path.stem + "".join(f"-{m}-as-COPY" for m in forced)


class Bed:
    """The module's daemon home and emulators, and the fresh bucket names it hands out."""

    def __init__(self, stix: Stix, s3: Emulator, gcs: Emulator, work: Path) -> None:
        self.stix, self.s3, self.gcs, self.work = stix, s3, gcs, work
        self.names: dict[str, str] = {}
        self.count = 0

    def fresh(self, old: str) -> str:
        if old not in self.names:
            self.count += 1
            self.names[old] = f"stixc-{RUN_ID}-{self.count}"
        return self.names[old]

    def emulator(self, store: str) -> Emulator:
        return self.gcs if store == "gcs" else self.s3

    def fill(self, store: str, bucket: str, objects: dict[str, bytes]) -> None:
        """Make `bucket` on its emulator (as someone else's) holding `objects`."""
        from stixd.storage.stores import StoreKind, open_stores

        emu = self.emulator(store)
        source = Path(tempfile.mkdtemp(dir=self.work))
        for key, body in objects.items():
            (source / key).parent.mkdir(parents=True, exist_ok=True)
            (source / key).write_bytes(body)

        async def put() -> None:
            stores = open_stores(emu.config, emu.env, "f" * 8)
            try:
                found = stores.bucket(StoreKind(store), bucket)
                if not await found.exists():
                    await found.create({})
                await found.upload_tree(source)
            finally:
                await stores.aclose()

        asyncio.run(put())


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    home = Path(tempfile.mkdtemp(prefix="stx", dir="/tmp"))
    work = tmp_path_factory.mktemp("corpus")
    with moto_server() as s3, gcs_server() as gcs:
        stix = Stix(home)
        stix.env.update({k: v for k, v in {**s3.env, **gcs.env}.items() if k != "HOME"})
        stix.env["R2_ENDPOINT_URL"] = s3.url  # R2 is the same S3 API at its own endpoint
        stix.env["GOOGLE_CLOUD_PROJECT"] = "stix-test"
        stix.env["GOOGLE_APPLICATION_CREDENTIALS"] = str(service_account_key(work / "sa.json"))
        stix.env["STIX__LOCAL__NETWORK"] = "host"  # nodes reach the emulators on loopback
        try:
            yield Bed(stix, s3, gcs, work)
        finally:
            with contextlib.suppress(subprocess.TimeoutExpired):
                stix.run("down", "-a", "-y", timeout=90)
            for point in fuse_mounts_under(home):  # a failed test's mounts, before the rmtree
                subprocess.run(["fusermount3", "-uz", point], capture_output=True, check=False)
            with contextlib.suppress(subprocess.TimeoutExpired):
                subprocess.run(
                    [sys.executable, "-m", "stixctl", "daemon", "stop"],
                    env=stix.env,
                    capture_output=True,
                    timeout=30,
                )
            kill_everything_under(home)
            shutil.rmtree(home, ignore_errors=True)


def _node_path(dest: str) -> str:
    """Where the job finds a mount: the local infra puts `~/x` and `/x` in the node's home."""
    return "$HOME/" + dest.lstrip("~").lstrip("/")


def _uri_kinds(mounts: list[dict[str, Any]]) -> dict[str, bool]:
    """Each bucket URI the file reads → whether it names one object (a file) rather than a
    folder: a path inside a bucket that no other URI of the file goes under."""
    uris = set()
    for doc in mounts:
        for src in doc["file_mounts"].values():
            uri = src.get("source") if isinstance(src, dict) else src
            if _is_uri(uri):
                uris.add(uri.rstrip("/"))
    return {
        u: bool(u.split("://", 1)[1].partition("/")[2])
        and not any(o.startswith(u + "/") for o in uris)
        for u in uris
    }


class Rewritten:
    def __init__(self) -> None:
        self.doc: dict[str, Any] = {}
        self.expect: dict[str, list[str]] = {}  # node path → text the job must print from it
        self.files: set[str] = set()  # node paths that are one object, not a folder
        self.through: dict[str, tuple[str, str, str]] = {}  # node path → (store, bucket, prefix)
        # of a MOUNT or MOUNT_CACHED storage: what the job writes there reaches the bucket


def rewrite(bed: Bed, doc: dict[str, Any], single: dict[str, bool], tag: str) -> Rewritten:
    out = Rewritten()
    mounts: dict[str, Any] = {}
    for dest, src in doc["file_mounts"].items():
        path = _node_path(dest)
        if isinstance(src, str):
            if not _is_uri(src):
                continue  # a plain local file mount: not storage, and its source is not here
            scheme, _, rest = src.rstrip("/").partition("://")
            bucket, _, prefix = rest.partition("/")
            mounts[dest] = f"{scheme}://{bed.fresh(bucket)}" + (f"/{prefix}" if prefix else "")
            out.expect.setdefault(path, []).append(_token(src))
            if single[src.rstrip("/")]:
                out.files.add(path)
            continue
        storage = dict(src)
        source = storage.get("source")
        if "name" in storage:
            storage["name"] = bed.fresh(str(storage["name"] or f"empty-name-{dest}"))
        if _is_uri(source):
            scheme, _, rest = source.rstrip("/").partition("://")
            bucket, _, prefix = rest.partition("/")
            storage["source"] = f"{scheme}://{bed.fresh(bucket)}" + (f"/{prefix}" if prefix else "")
            if source in single:
                out.expect.setdefault(path, []).append(_token(source))
        elif source is not None:
            folders = []
            for i, _item in enumerate([source] if isinstance(source, str) else source):
                folder = bed.work / f"src-{tag}-{len(mounts)}-{i}"
                folder.mkdir()
                word = f"local-{tag}-{len(mounts)}-{i}"
                (folder / f"{word}.txt").write_text(word + "\n")
                folders.append(str(folder))
                out.expect.setdefault(path, []).append(word)
            storage["source"] = folders[0] if isinstance(source, str) else folders
        mode = str(storage.get("mode") or "MOUNT").upper()
        if mode not in NODE_MODES:
            storage["mode"] = "COPY"
        elif mode != "COPY":
            out.through[path] = _where(bed, storage)
        out.expect.setdefault(path, [])
        mounts[dest] = storage
    lines = ["set -e"]
    for path in out.expect:
        lines.append(f"echo '== {path}'")
        if path in out.files:
            lines.append(f'test -f "{path}" && cat "{path}"')
            continue
        lines.append(f'test -d "{path}" && ls -la "{path}"')
        lines.append(f'find "{path}" -type f | sort | while read -r f; do cat "$f"; done')
        lines.append(f'echo wrote > "{path}/written-{tag}.txt"')
    task = {k: v for k, v in doc.items() if k not in DROPPED}
    task["resources"] = {"infra": "local"}
    task["file_mounts"] = mounts
    task["run"] = "\n".join(lines) + "\n"
    out.doc = task
    return out


def _where(bed: Bed, storage: dict[str, Any]) -> tuple[str, str, str]:
    """(store, bucket, prefix) a rewritten storage mounts; a store left out is the first this
    daemon has set up in SkyPilot's order (S3: moto)."""
    source = storage.get("source")
    if _is_uri(source):
        scheme, _, rest = source.partition("://")
        bucket, _, prefix = rest.partition("/")
        return SCHEME_STORE[scheme], bucket, prefix
    return str(storage.get("store") or "s3"), str(storage["name"]), ""


def keys_in(bed: Bed, store: str, bucket: str) -> set[str]:
    from stixd.storage.stores import StoreKind, open_stores

    emu = bed.emulator(store)

    async def listing() -> set[str]:
        stores = open_stores(emu.config, emu.env, "f" * 8)
        try:
            return {o.key async for o in stores.bucket(StoreKind(store), bucket).objects()}
        finally:
            await stores.aclose()

    return asyncio.run(listing())


def _lands(bed: Bed, store: str, bucket: str, key: str) -> bool:
    """`key` is in the bucket, or is within 30 s (polled; no figure of time is asserted)."""
    with contextlib.suppress(AssertionError):
        return bool(wait_until(lambda: key in keys_in(bed, store, bucket), 30, interval=0.5))
    return False


def _token(uri: str) -> str:
    return "obj-" + re.sub(r"[^a-z0-9]+", "-", uri.lower()).strip("-")[-60:]


def prefill(bed: Bed, single: dict[str, bool]) -> None:
    """Each bucket the file reads by URI, made and holding what the job prints from it."""
    per_bucket: dict[tuple[str, str], dict[str, bytes]] = {}
    for uri, is_file in single.items():
        scheme, _, rest = uri.partition("://")
        bucket, _, prefix = rest.partition("/")
        body = (_token(uri) + "\n").encode()
        key = prefix if is_file else f"{prefix}/stix-corpus/{_token(uri)}.txt".lstrip("/")
        store = SCHEME_STORE[scheme]
        per_bucket.setdefault((store, bed.fresh(bucket)), {})[key] = body
    for (store, bucket), objects in per_bucket.items():
        bed.fill(store, bucket, objects)


@pytest.mark.parametrize("path", storage_files(), ids=_case_id)
def test_corpus_storage_file_runs_on_local_against_the_emulators(bed: Bed, path: Path) -> None:
    docs = _storage_docs(path)
    single = _uri_kinds(docs)
    prefill(bed, single)
    for i, doc in enumerate(docs):
        tag = f"{re.sub(r'[^a-z0-9]', '', path.stem.lower())[-12:]}{i}"
        cluster = f"sc-{tag}"
        plan = rewrite(bed, doc, single, tag)
        task = bed.work / f"{tag}.yaml"
        task.write_text(yaml.safe_dump(plan.doc, sort_keys=False))
        done = bed.stix.run("launch", "-c", cluster, str(task), "-y", timeout=180)
        assert done.returncode == 0, f"{path.name}: {done.stderr}\n{task.read_text()}"

        def ended(name: str = cluster) -> bool:
            return bed.stix.job_status(name, 1) in ("SUCCEEDED", "FAILED")

        wait_until(ended, timeout=90)
        logs = bed.stix.run("logs", cluster, "1", "--no-follow", timeout=30).stdout
        assert bed.stix.job_status(cluster, 1) == "SUCCEEDED", f"{path.name}\n{logs}"
        node = bed.stix.node_dir(cluster)
        for where, words in plan.expect.items():
            assert f"== {where}" in logs, logs
            for word in words:
                assert word in logs, f"{path.name}: {where} lacks {word}\n{logs}"
            on_node = node / where.removeprefix("$HOME/")
            if where in plan.files:
                assert on_node.is_file(), on_node
            else:
                assert (on_node / f"written-{tag}.txt").read_text() == "wrote\n"
        for where, (store, bucket, prefix) in plan.through.items():
            # MOUNT's `--vfs-cache-mode writes` queues a file at FUSE's release, which the
            # kernel sends after close() returns: the write may land just after the job's end
            key = f"{prefix}/written-{tag}.txt".lstrip("/")
            assert _lands(bed, store, bucket, key), f"{path.name}: {where} wrote no {key}\n{logs}"
        bed.stix.run("down", cluster, "-y", check=True, timeout=90)
