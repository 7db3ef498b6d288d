"""A task's storage file mounts, resolved into what the storage actors keep and the nodes get.

SkyPilot's rules, carried over (sky/data/storage.py, sky/task.py 0.14.1):

- ``/dst: s3://bucket/sub`` (the URI shorthand) copies an existing bucket onto the node (COPY);
  stix never creates nor deletes such a bucket.
- ``/dst: {name, source, store, persistent, mode}``: ``source`` is a local folder, a list of
  them (each lands under its own base name), or a bucket URI (then the bucket is not stix's);
  ``name`` alone names a bucket stix creates if it is missing. ``mode`` defaults to MOUNT,
  ``persistent`` to true.
- The store, when absent: the URI's scheme; else the store (and region) of the storage record of
  that name when one exists (SkyPilot reuses an existing storage's store: a relaunch or a managed
  job's recovery on another cloud keeps its bucket); else the store of the cloud the launch chose
  (the optimizer's pick; the task's own cloud when none is given) when stix can reach that store,
  its bucket made in the launch's region; else the first store configured here (S3 when none
  is), in its default region.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping, Sequence

import msgspec

from stixproto import names
from stixproto.errors import InvalidTask
from stixproto.task import Storage, Task
from stixproto.task.storage import (
    bucket_path_problem,
    check_storage_config,
    mount_cached_settings,
)

SCHEMES = {"s3": "s3", "gs": "gcs", "r2": "r2"}
"""URI scheme → store, for the stores this build talks to (Azure is an https URL)."""
AZURE_HOST = ".blob.core.windows.net"
STORE_ORDER = ("s3", "gcs", "azure", "r2")
"""SkyPilot's fallback order among enabled storage clouds (AWS first)."""
CLOUD_STORE = {"aws": "s3", "gcp": "gcs", "azure": "azure", "cloudflare": "r2"}
MODES = ("MOUNT", "COPY", "MOUNT_CACHED")
CACHE_KEYS = {
    "transfers": "--transfers",
    "buffer_size": "--buffer-size",
    "vfs_cache_max_size": "--vfs-cache-max-size",
    "vfs_cache_max_age": "--vfs-cache-max-age",
    "vfs_read_ahead": "--vfs-read-ahead",
    "vfs_read_chunk_size": "--vfs-read-chunk-size",
    "vfs_read_chunk_streams": "--vfs-read-chunk-streams",
    "vfs_write_back": "--vfs-write-back",
    "read_only": "--read-only",
}
"""`config.mount_cached` keys (checked where the task is read: ``stixproto.task.storage``) →
rclone flags, as SkyPilot's ``MountCachedConfig.to_rclone_flags`` maps them."""
CACHE_DEFAULTS = {"--vfs-cache-max-size": "10G", "--vfs-write-back": "1s"}
"""What SkyPilot's MOUNT_CACHED sets when the task does not."""
_NEW_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
"""A bucket stix makes, on any store: 3 to 63 lowercase letters, digits, '-' and '.'."""
_IP = re.compile(r"(?:\d{1,3}\.){3}\d{1,3}")
_S3_RULE = (
    "3 to 63 lowercase letters, digits, '-' or '.', starting and ending with a letter or digit, "
    "no '..', not an IP address"
)
_RULES = {
    "s3": (re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]"), _S3_RULE),
    "r2": (re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]"), _S3_RULE),
    "gcs": (
        re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]"),
        "3 to 222 lowercase letters, digits, '-', '_' or '.', starting and ending with a letter "
        "or digit, at most 63 between dots, no '..', '.-' or '-.', no 'goog' prefix nor "
        "'google', not an IP address",
    ),
    "azure": (
        re.compile(r"(?=[a-z0-9-]{3,63}$)[a-z0-9](?:-?[a-z0-9])*"),
        "3 to 63 lowercase letters, digits or '-', starting with a letter or digit, every '-' "
        "between letters or digits",
    ),
}
"""Each store's own rule for a bucket (container) that exists, as SkyPilot 0.14.1's
``validate_name`` of each store checks it (sky/data/storage.py); R2 is S3-compatible."""


class StorageSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One storage as its actor keeps it (the row's spec) and the nodes mount it."""

    name: str
    """The record's name: the bucket's, or the mount's generated one for a nameless source."""
    store: str
    bucket: str
    prefix: str = ""
    """A sub-path inside the bucket (``s3://bucket/sub``): what the node sees at the mount."""
    sources: list[str] = []
    """Local folders to upload (absolute); empty for a bucket that already holds the data."""
    nested: bool = False
    """The source was a list: each folder lands under its own base name."""
    external: bool = False
    """The task named an existing bucket by URI: stix reads it and never deletes it."""
    persistent: bool = True
    mode: str = "MOUNT"
    mount_cached: dict[str, str] = {}
    """rclone flag → value, from ``config.mount_cached`` (``config.mount`` for MOUNT; checked)."""
    region: str | None = None
    """Where stix makes the bucket if it is missing: the launch's region when the store was
    chosen from its cloud (SkyPilot's ``best_resources.region``); None: the store's default."""
    owner: str | None = None
    workspace: str | None = None

    @property
    def uri(self) -> str:
        """The bucket as a task names it (``gs://`` for GCS; Azure's account is the store's)."""
        scheme = {v: k for k, v in SCHEMES.items()}.get(self.store, self.store)
        return f"{scheme}://{self.bucket}"


class MountPlan(msgspec.Struct, frozen=True):
    dest: str
    storage: StorageSpec


def split_uri(uri: str, where: str) -> tuple[str, str, str]:
    """(store, bucket, prefix) of a bucket URI; a store this build lacks, or a prefix that cannot
    name a place in the bucket (`bucket_path_problem`), is refused in one line."""
    problem = bucket_path_problem(uri)
    if problem:
        raise InvalidTask(f"{where}: {problem}")
    scheme, _, rest = uri.partition("://")
    lowered = scheme.lower()
    if lowered == "https" and AZURE_HOST in rest.split("/", 1)[0].lower():
        _host, _, path = rest.partition("/")
        bucket, _, prefix = path.strip("/").partition("/")
        return "azure", bucket, prefix.strip("/")
    store = SCHEMES.get(lowered)
    if store is None:
        raise InvalidTask(
            f"{where}: {scheme}:// buckets are not supported by this build; use s3://, gs://, "
            f"r2:// or https://<account>{AZURE_HOST}/<container>"
        )
    bucket, _, prefix = rest.strip("/").partition("/")
    return store, bucket, prefix.strip("/")


def _breaks(store: str, bucket: str) -> bool:
    pattern, _rule = _RULES[store]
    if not pattern.fullmatch(bucket) or ".." in bucket or _IP.fullmatch(bucket):
        return True
    if store in ("s3", "r2"):
        return bucket.startswith("xn--") or bucket.endswith(("-s3alias", "--ol-s3"))
    if store == "gcs":
        return (
            "-." in bucket
            or ".-" in bucket
            or any(len(part) > 63 for part in bucket.split("."))
            or bucket.startswith("goog")
            or any(word in bucket for word in ("google", "g00gle", "go0gle", "g0ogle"))
        )
    return False


def check_bucket(bucket: str, where: str, store: str, *, new: bool) -> str:
    """``bucket`` if it can name a bucket of ``store``: one stix makes (``new``) follows stix's
    rule and the store's; one that exists (a URI source) only its store's own rule."""
    shown = names.shown(bucket)
    if store not in _RULES:
        raise InvalidTask(f"{where}: {store!r} buckets are not supported by this build")
    if new and not _NEW_BUCKET.fullmatch(bucket):
        raise InvalidTask(
            f"{where}: bucket name {shown} is not valid for a new bucket: 3 to 63 lowercase "
            "letters, digits, '-' or '.', starting and ending with a letter or digit"
        )
    if _breaks(store, bucket):
        raise InvalidTask(
            f"{where}: bucket name {shown} is not valid for {store}: {_RULES[store][1]}"
        )
    return bucket


def default_store(
    task: Task,
    configured: Sequence[str],
    cloud: str | None = None,
    region: str | None = None,
) -> tuple[str, str | None]:
    """SkyPilot's choice (``Task._get_preferred_store``) when a storage names no store: the
    store and the region to make its bucket in. ``cloud``/``region``: the launch's chosen
    infra (the optimizer's pick); without them, the task's own ``resources``. A cloud whose
    store is not set up here gives the first store that is, in its default region (None)."""
    if cloud is None:
        resources = task.resources_or_default()
        cloud, region = resources.cloud, resources.region
    wanted = CLOUD_STORE.get((cloud or "").lower())
    if wanted is not None and wanted in configured:
        return wanted, region
    for store in STORE_ORDER:
        if store in configured:
            return store, None
    return "s3", None


def cache_flags(src: Storage) -> dict[str, str]:
    """A storage's rclone flags (flag → value), as SkyPilot's mounting_utils sets them: for
    MOUNT_CACHED sizes upper-cased, ``--checkers`` following ``--transfers``, ``--read-only`` when
    asked, SkyPilot's defaults for the cache size and write-back delay; for MOUNT only
    ``--read-only`` (``config.mount.read_only``)."""
    if src.mount_mode != "MOUNT_CACHED":  # MOUNT's one setting: SkyPilot's config.mount.read_only
        mount = (src.config or {}).get("mount") or {}
        return {"--read-only": "true"} if mount.get("read_only") is True else {}
    flags = dict(CACHE_DEFAULTS)
    for key, value in mount_cached_settings(src).items():
        flag = CACHE_KEYS[key]
        if isinstance(value, bool):
            if value:
                flags[flag] = "true"
            continue
        flags[flag] = (
            str(value).upper()
            if key.endswith("size") or key == "vfs_read_ahead"
            else str(value).replace("+", "")
        )
        if key == "transfers":
            flags["--checkers"] = str(max(int(min(value * 2, 30 + value * 1.2)), 4))
    return flags


def generated_name(cluster: str, dest: str) -> str:
    """The bucket of a nameless local source: SkyPilot's ``skypilot-filemounts-…``, ours."""
    digest = hashlib.sha256(f"{cluster}\0{dest}".encode()).hexdigest()[:10]
    stem = re.sub(r"[^a-z0-9-]", "-", cluster.lower())[:30].strip("-") or "task"
    return f"stix-filemounts-{stem}-{digest}"


def _local(path: str, where: str) -> str:
    full = os.path.abspath(os.path.expanduser(path))
    if not os.path.isdir(full):
        raise InvalidTask(f"{where}: the source {path!r} is not a folder on this machine")
    return full


def plan_mount(
    dest: str,
    src: str | Storage,
    task: Task,
    *,
    cluster: str,
    configured: Sequence[str],
    owner: str | None = None,
    workspace: str | None = None,
    chosen: tuple[str | None, str | None] = (None, None),
    records: Mapping[str, StorageSpec] | None = None,
) -> MountPlan:
    where = f"file_mounts.{dest}"
    if isinstance(src, str):  # the URI shorthand: copy an existing bucket
        store, bucket, prefix = split_uri(src, where)
        spec = StorageSpec(
            name=check_bucket(bucket, where, store, new=False),
            store=store,
            bucket=bucket,
            prefix=prefix,
            external=True,
            mode="COPY",
        )
        return MountPlan(dest, msgspec.structs.replace(spec, owner=owner, workspace=workspace))
    mode = src.mount_mode
    check_storage_config(src, where)
    if mode not in MODES:
        raise InvalidTask(f"{where}.mode: expected one of {', '.join(MODES)}, got {src.mode!r}")
    sources = src.sources()
    uri = sources[0] if len(sources) == 1 and "://" in sources[0] else None
    external = uri is not None
    prefix = ""
    region: str | None = None
    if uri is not None:
        store, bucket, prefix = split_uri(uri, f"{where}.source")
        if src.store is not None and SCHEMES.get(src.store, src.store) != store:
            raise InvalidTask(f"{where}.store: {src.store!r} does not match the source {uri!r}")
        local: list[str] = []
    else:
        bucket = src.name or generated_name(cluster, dest)
        record = (records or {}).get(bucket)
        if src.store:  # named: the store's default region, as SkyPilot's construct() makes it
            store = src.store.lower()
        elif record is not None:  # the storage exists: its store, wherever this launch runs
            store, region = record.store, record.region
        else:
            store, region = default_store(task, configured, *chosen)
        if store not in STORE_ORDER:
            raise InvalidTask(
                f"{where}.store: {store!r} buckets are not supported by this build; "
                f"use one of {', '.join(STORE_ORDER)}"
            )
        local = [_local(s, f"{where}.source") for s in sources]
    named = f"{where}.source" if external else f"{where}.name" if src.name else where
    check_bucket(bucket, named, store, new=not external)
    name = src.name or bucket  # a named storage reading a URI source keeps its name
    persistent = True if external else src.is_persistent
    spec = StorageSpec(
        name=name,
        store=store,
        bucket=bucket,
        prefix=prefix,
        sources=local,
        nested=isinstance(src.source, list),
        external=external,
        persistent=persistent,
        mode=mode,
        mount_cached=cache_flags(src),
        region=region,
        owner=owner,
        workspace=workspace,
    )
    return MountPlan(dest, spec)


def is_bucket_mount(src: str | Storage) -> bool:
    """Whether a file mount's source is a bucket's (a storage, or a bucket URI), not a path."""
    return not isinstance(src, str) or "://" in src


def plan_mounts(
    task: Task,
    *,
    cluster: str,
    configured: Sequence[str],
    owner: str | None = None,
    workspace: str | None = None,
    cloud: str | None = None,
    region: str | None = None,
    records: Mapping[str, StorageSpec] | None = None,
) -> list[MountPlan]:
    """Every bucket mount of ``task`` (local-path mounts are synced, not planned here).
    ``cloud``/``region``: where the launch runs (the optimizer's pick), which chooses the store
    and the region of a bucket stix makes for a storage naming no store (`default_store`),
    unless ``records`` (the storage records by name, `unnamed_stores`) has one of that name:
    then its store and region."""
    plans = []
    for dest, src in task.file_mounts.items():
        if not is_bucket_mount(src):
            continue
        plans.append(
            plan_mount(
                dest,
                src,
                task,
                cluster=cluster,
                configured=configured,
                owner=owner,
                workspace=workspace,
                chosen=(cloud, region),
                records=records,
            )
        )
    seen: dict[str, StorageSpec] = {}
    for plan in plans:
        other = seen.setdefault(plan.storage.name, plan.storage)
        if other.bucket != plan.storage.bucket or other.store != plan.storage.store:
            raise InvalidTask(
                f"file_mounts: storage {plan.storage.name!r} is named twice for different buckets"
            )
    return plans


def unnamed_stores(task: Task, cluster: str) -> list[str]:
    """The storage names of ``task``'s mounts that name no store and read no bucket URI: the
    records whose store `plan_mounts` takes when they exist (``records``)."""
    found = []
    for dest, src in task.file_mounts.items():
        uri = isinstance(src, Storage) and any("://" in s for s in src.sources())
        if isinstance(src, Storage) and not src.store and not uri:
            found.append(src.name or generated_name(cluster, dest))
    return found


def without_local_sources(task: Task) -> Task:
    """``task`` with each bucket mount's local ``source`` dropped: a managed job's recovery
    mounts the bucket its first launch uploaded, as SkyPilot (which uploads once at
    ``jobs launch``); uploading the folder again would overwrite what the job wrote there, or
    fail the recovery if the folder is gone. The bucket, its name and its store stay the same."""
    mounts: dict[str, str | Storage] = {}
    for dest, src in task.file_mounts.items():
        if isinstance(src, Storage) and not any("://" in s for s in src.sources()):
            src = msgspec.structs.replace(src, source=None)
        mounts[dest] = src
    return msgspec.structs.replace(task, file_mounts=mounts)
