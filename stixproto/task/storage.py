"""`file_mounts`, `workdir`, top-level `volumes`: their rules (shapes: `stixproto.task.model`)."""

from __future__ import annotations

import re
import unicodedata
from typing import Any

import msgspec

from stixproto import names
from stixproto import volumes as volume_types
from stixproto.bounds import MAX_GB
from stixproto.task import subst
from stixproto.task._fields import choice, describe, fail, join, near
from stixproto.task.model import Storage

MODES = ("mount", "copy", "mount_cached")
STORES = ("s3", "gcs", "azure", "r2", "ibm", "oci", "nebius", "coreweave", "volume", "hf")
BUCKET_SCHEMES = ("s3://", "gs://", "r2://", "cos://", "oci://", "nebius://", "cw://", "hf://")
AZURE_HOST = ".blob.core.windows.net"
GIT_WORKDIR_KEYS = ("url", "ref")
VOLUME_KEYS = ("name", "sub_path", "size", "labels", "type", "infra", "use_existing", "config")
SUB_PATH_MAX = 255
_SUB_PATH_PART = re.compile(r"[A-Za-z0-9._-]+")
MOUNT_PATH_MAX = 1024

MOUNT_CACHED_KNOBS = {
    "transfers": "count",
    "buffer_size": "size",
    "vfs_cache_max_size": "size",
    "vfs_cache_max_age": "duration",
    "vfs_read_ahead": "size",
    "vfs_read_chunk_size": "size",
    "vfs_read_chunk_streams": "streams",
    "vfs_write_back": "duration",
    "read_only": "flag",
}
"""``config.mount_cached`` as SkyPilot 0.14.1's storage schema has it (sky/utils/schemas.py):
key → kind of value. ``count`` an integer >= 1, ``streams`` an integer >= 0, ``size`` rclone's
size (digits and one unit of B K M G T P, either case), ``duration`` rclone's duration (``1s``,
``1h30m``, ``.5``), ``flag`` a boolean."""
PRESETS: dict[str, dict[str, Any]] = {
    "MODEL_CHECKPOINT_RO": {
        "vfs_read_chunk_streams": 16,
        "vfs_read_chunk_size": "32M",
        "read_only": True,
    },
    "MODEL_CHECKPOINT_RW": {
        "vfs_read_chunk_streams": 16,
        "vfs_read_chunk_size": "32M",
        "transfers": 8,
    },
    "DATASET_RO": {"vfs_read_chunk_streams": 0, "vfs_read_chunk_size": "8M", "read_only": True},
    "DATASET_RW": {"vfs_read_chunk_streams": 0, "vfs_read_chunk_size": "8M", "transfers": 16},
}
"""A storage's ``type:`` (case-insensitive, MOUNT_CACHED only) → the ``config.mount_cached``
settings it stands for, SkyPilot 0.14.1's ``_MOUNT_CACHED_PRESET_CONFIGS``; a knob the task
sets itself wins over its preset's."""
MOUNT_KEYS = ("read_only", "hf_mount_args")
"""``config.mount`` (MOUNT mode) in SkyPilot's schema."""
KNOB_MAX_CHARS = 32
KNOB_MAX_INT = 4096
"""Stix's bounds beyond SkyPilot's schema (which has none): rclone reads these into 64-bit
numbers, and no node runs 4096 parallel transfers or read streams."""
_RCLONE_SIZE = re.compile(r"[0-9]+([bkmgtp]|[BKMGTP])?")
_RCLONE_DURATION = re.compile(
    r"(?:(?:\+?(?:\d+(?:\.\d+)?|\.\d+)(?:ms|[smhdwMy]))+|(\+?(?:\d+(?:\.\d+)?|\.\d+)))"
)
"""SkyPilot's rclone size and duration patterns; a duration may not be negative here (SkyPilot's
allows ``-1s``, which rclone would take as "never" or refuse)."""
_DURATION_PART = re.compile(r"\+?(\d+(?:\.\d+)?|\.\d+)(ms|[smhdwMy]?)")
_UNIT_S = {
    "": 1.0,
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 604800.0,
    "M": 2592000.0,
    "y": 31536000.0,
}
"""rclone's duration units in seconds (its ``fs.Duration``: Go's units plus d, w, M, y; a bare
number is seconds)."""
WRITE_BACK_MAX_S = 300
"""Stix's bound on ``vfs_write_back`` (SkyPilot has none): a job counts as finished, and a
``down`` or autostop unmounts, only once the writes are in the bucket, and both wait for the
write-back delay on top of their own bounds (``stixd.agent.mount``, which keeps the same
number): a longer delay would hold every job's end and every ``down`` that long."""
_KIND_WORDS = {
    "count": "an integer >= 1",
    "streams": "an integer >= 0",
    "size": "an rclone size like 10G, 512M or 1024 (digits and one of B K M G T P)",
    "duration": "an rclone duration like 5s, 1h30m or 0.5 (not negative)",
    "flag": "true or false",
}


class GitWorkdir(msgspec.Struct, frozen=True):
    url: str
    ref: str | None = None


def is_bucket_url(text: str) -> bool:
    return "://" in text


def bucket_path_problem(url: str) -> str | None:
    """Why a bucket URL cannot name a place in its bucket (None when it can): a control
    character anywhere, or a path inside the bucket with a ``.``, ``..`` or empty part (a mount
    could not hold it, and a copy would match no object). Outer slashes are dropped, as the
    planner drops them (``stixd.storage.plan.split_uri``, which asks this too)."""
    if any(unicodedata.category(c) == "Cc" for c in url):
        return f"a bucket URL may not hold a control character, got {describe(url)}"
    rest = url.split("://", 1)[-1]
    if url.lower().startswith("https://"):  # Azure: the account's host, then the container
        rest = rest.partition("/")[2]
    _bucket, _, prefix = rest.strip("/").partition("/")
    if prefix and any(part in ("", ".", "..") for part in prefix.split("/")):
        return (
            f"the path inside a bucket may not have '.', '..' or empty parts, got {describe(url)}"
        )
    return None


def _check_url(url: str, path: str) -> None:
    lowered = url.lower()
    problem = bucket_path_problem(url)
    if lowered.startswith(BUCKET_SCHEMES):
        if not url.split("://", 1)[1].strip("/"):
            fail(path, f"expected a bucket name after the scheme, got {url!r}")
        if problem:
            fail(path, problem)
        return
    if lowered.startswith("https://") and AZURE_HOST in lowered.split("/")[2]:
        if problem:
            fail(path, problem)
        return
    scheme = url.split("://", 1)[0] + "://"
    fail(
        path,
        f"unsupported bucket URL {url!r}; expected {', '.join(BUCKET_SCHEMES)} "
        f"or https://<account>{AZURE_HOST}/<container> (got scheme {scheme!r})",
    )


def _check_local(text: str, path: str) -> None:
    if not text.strip():
        fail(path, "expected a local path or a bucket URL, got an empty string")


def check_source(text: str, path: str) -> None:
    """A mount source: a local path (checked for existence only at launch) or a bucket URL."""
    if is_bucket_url(text):
        _check_url(text, path)
    else:
        _check_local(text, path)


def check_file_mounts(mounts: dict[str, str | Storage], path: str = "file_mounts") -> None:
    for dest, src in mounts.items():
        where = join(path, dest)
        if not dest.strip():
            fail(path, "expected a destination path as each key, got an empty string")
        if is_bucket_url(dest):
            fail(where, "a destination must be a path on the node, not a bucket URL")
        if isinstance(src, str):
            check_source(src, where)
            if src.endswith("/") and len(src) > 1 and not is_bucket_url(src):
                fail(where, f"paths cannot end with '/' (write {src.rstrip('/')!r})")
        else:
            check_storage(src, where)


def check_storage(storage: Storage, path: str) -> None:
    if storage.name is None and storage.source is None:
        fail(path, "a storage mount needs a name (bucket name), a source, or both")
    if isinstance(storage.source, list):
        if not storage.source:
            fail(
                join(path, "source"),
                "expected a path, a list of paths or a bucket URL, got an empty list",
            )
        for i, item in enumerate(storage.source):
            if is_bucket_url(item):
                fail(join(join(path, "source"), i), "a list source holds local paths only")
            _check_local(item, join(join(path, "source"), i))
    elif storage.source is not None:
        check_source(storage.source, join(path, "source"))
    if storage.mode is not None:
        choice(storage.mode, MODES, join(path, "mode"), "mode", upper=True)
    if storage.store is not None:
        choice(storage.store, STORES, join(path, "store"), "store")
    check_storage_config(storage, path)


def _check_knob(key: str, value: Any, path: str) -> None:
    kind = MOUNT_CACHED_KNOBS[key]
    where = join(path, key)
    expected = _KIND_WORDS[kind]
    if kind == "flag":
        if not isinstance(value, bool):
            fail(where, f"expected {expected}, got {describe(value)}")
        return
    if kind in ("count", "streams"):
        low = 1 if kind == "count" else 0
        if isinstance(value, bool) or not isinstance(value, int):
            fail(where, f"expected {expected}, got {describe(value)}")
        if not low <= value <= KNOB_MAX_INT:
            fail(where, f"expected an integer from {low} to {KNOB_MAX_INT}, got {value}")
        return
    pattern = _RCLONE_SIZE if kind == "size" else _RCLONE_DURATION
    if (
        not isinstance(value, str)
        or len(value) > KNOB_MAX_CHARS
        or not value.isascii()
        or not pattern.fullmatch(value)
    ):
        fail(
            where,
            f"expected {expected} of at most {KNOB_MAX_CHARS} characters, got {describe(value)}",
        )


def duration_seconds(text: str) -> float:
    """An rclone duration (``_RCLONE_DURATION``, checked first) in seconds."""
    return sum(float(n) * _UNIT_S[u] for n, u in _DURATION_PART.findall(text))


def _check_write_back(value: str, where: str) -> None:
    if duration_seconds(value) > WRITE_BACK_MAX_S:
        fail(
            where,
            f"at most {WRITE_BACK_MAX_S // 60}m ({WRITE_BACK_MAX_S}s): a job's end and a down "
            f"wait for the write-back; got {describe(value)}",
        )


def check_storage_config(storage: Storage, path: str) -> None:
    """``config.mount_cached`` and ``config.mount`` as SkyPilot's schema and Storage check them:
    known keys with values of their kind, each only in its own mode."""
    config = storage.config or {}
    mode = storage.mount_mode
    if storage.type is not None:
        where = join(path, "type")
        if storage.type.upper() not in PRESETS:
            hint = near(storage.type.upper(), PRESETS)
            fail(
                where,
                f"unknown type {describe(storage.type)}; expected one of {', '.join(PRESETS)}",
                hint,
            )
        if mode != "MOUNT_CACHED":
            fail(where, f"type can be set only with mode MOUNT_CACHED, not {mode}")
    cached = config.get("mount_cached")
    where = join(join(path, "config"), "mount_cached")
    if cached is not None:
        if not isinstance(cached, dict):
            fail(where, f"expected a map of settings, got {describe(cached)}")
        for key, value in cached.items():
            if key not in MOUNT_CACHED_KNOBS:
                hint = near(str(key), MOUNT_CACHED_KNOBS)
                fail(
                    where,
                    f"unknown setting {describe(key)}; known: {', '.join(MOUNT_CACHED_KNOBS)}",
                    hint,
                )
            _check_knob(key, value, where)
            if key == "vfs_write_back":
                _check_write_back(value, join(where, key))
        if mode != "MOUNT_CACHED":
            fail(where, f"config.mount_cached can be set only with mode MOUNT_CACHED, not {mode}")
    mount = config.get("mount")
    where = join(join(path, "config"), "mount")
    if mount is not None:
        if not isinstance(mount, dict):
            fail(where, f"expected a map of settings, got {describe(mount)}")
        for key in mount:
            if key not in MOUNT_KEYS:
                fail(where, f"unknown setting {describe(key)}; known: {', '.join(MOUNT_KEYS)}")
        if "read_only" in mount and not isinstance(mount["read_only"], bool):
            fail(
                join(where, "read_only"),
                f"expected true or false, got {describe(mount['read_only'])}",
            )
        args = mount.get("hf_mount_args")
        if args is not None and not (
            isinstance(args, list) and all(isinstance(a, str) for a in args)
        ):
            fail(join(where, "hf_mount_args"), "expected a list of strings")
        if mode != "MOUNT":
            fail(where, f"config.mount can be set only with mode MOUNT, not {mode}")


def mount_cached_settings(storage: Storage) -> dict[str, Any]:
    """The checked ``config.mount_cached`` settings of ``storage`` (knob → value) over those of
    its ``type`` preset."""
    cached = PRESETS[storage.type.upper()] if storage.type is not None else {}
    cached = cached | ((storage.config or {}).get("mount_cached") or {})
    return {k: cached[k] for k in MOUNT_CACHED_KNOBS if k in cached}


def null_storage_names(raw_mounts: Any, path: str = "file_mounts") -> None:
    """`name:` left empty is an error SkyPilot makes too; the model cannot tell it from absent."""
    if not isinstance(raw_mounts, dict):
        return
    for dest, src in raw_mounts.items():
        if isinstance(src, dict):
            for key, what in (("name", "a bucket name"), ("source", "a path or a bucket URL")):
                if key in src and src[key] is None:
                    fail(
                        join(join(path, dest), key),
                        f"expected {what}, got null (fill it in or remove the key)",
                    )


def git_workdir(raw: dict[str, Any], path: str = "workdir") -> GitWorkdir:
    url = raw.get("url")
    if not isinstance(url, str) or not url.strip():
        if "url" not in raw:
            fail(join(path, "url"), "required key is missing (the git repository URL)")
        fail(join(path, "url"), f"expected a git repository URL, got {describe(url)}")
    ref = raw.get("ref")
    if ref is not None and not isinstance(ref, str):
        fail(join(path, "ref"), f"expected a branch, tag or commit, got {describe(ref)}")
    return GitWorkdir(url, ref)


def check_workdir(workdir: str | dict[str, Any], path: str = "workdir") -> None:
    if isinstance(workdir, str):
        _check_local(workdir, path)
    else:
        git_workdir(workdir, path)


def check_sub_path(sub_path: str, path: str, *, unsubstituted: bool = False) -> None:
    """A folder inside the volume, hostile input: it ends up in a path on a node (and in a
    shell command line there), so only a relative path of plain characters passes."""
    seen = _as_words(sub_path) if unsubstituted else sub_path
    parts = seen.split("/")
    if (
        len(seen) > SUB_PATH_MAX
        or not all(_SUB_PATH_PART.fullmatch(p) for p in parts)
        or any(p in (".", "..") for p in parts)
    ):
        fail(
            path,
            f"{names.shown(sub_path)} is not a folder inside the volume: expected a relative "
            f"path of letters, digits, '.', '_', '-' and '/' (no '..', no empty part), "
            f"at most {SUB_PATH_MAX} characters",
        )


def _as_words(text: str) -> str:
    """``text`` with each env reference left in it standing for a plain word: the declared
    envs are already in; one left is null or undeclared, set later by ``--env`` (SkyPilot's
    own tests pass volume names that way), and the task is checked again with its value."""
    return subst.references_as_words(text)


def _check_volume_name(name: str, path: str) -> None:
    if not names.is_valid(_as_words(name), "volume"):
        fail(path, f"volume name {names.shown(name)} is not valid: {names.rule('volume')}")


def check_volumes(volumes: dict[str, str | dict[str, Any]], path: str = "volumes") -> None:
    """Where the task is read: an env reference left in a name or sub_path (null or undeclared,
    set later by ``--env``) stands for a plain word until the task is checked with its value."""
    for mount, spec in volumes.items():
        where = join(path, mount)
        if not mount.strip():
            fail(path, "expected a mount path as each key, got an empty string")
        if len(mount) > MOUNT_PATH_MAX or any(ord(c) < 32 or ord(c) == 127 for c in mount):
            fail(
                path,
                f"mount path {names.shown(mount)} holds a control character or is longer than "
                f"{MOUNT_PATH_MAX} characters",
            )
        if isinstance(spec, str):
            if not spec.strip():
                fail(where, "expected a volume name, got an empty string")
            _check_volume_name(spec, where)
            continue
        for key in ("name", "sub_path", "type", "infra"):
            if key in spec and not isinstance(spec[key], str):
                fail(join(where, key), f"expected a string, got {describe(spec[key])}")
        if "name" in spec:
            _check_volume_name(spec["name"], join(where, "name"))
        if "sub_path" in spec:
            check_sub_path(spec["sub_path"], join(where, "sub_path"), unsubstituted=True)
        if "size" in spec and (
            isinstance(spec["size"], bool) or not isinstance(spec["size"], str | int)
        ):
            fail(
                join(where, "size"),
                f"expected a size like '10Gi' or 100, got {describe(spec['size'])}",
            )
        if isinstance(spec.get("size"), int) and not 1 <= spec["size"] <= MAX_GB:
            fail(join(where, "size"), f"expected a size from 1 to {MAX_GB} GB, got {spec['size']}")
        if isinstance(spec.get("size"), str) and "$" not in spec["size"]:  # else: with its value
            try:
                volume_types.parse_size(spec["size"])
            except ValueError as exc:
                fail(join(where, "size"), str(exc))
        kind = spec.get("type")
        if "size" in spec and kind is not None and kind.lower() not in volume_types.EPHEMERAL_TYPES:
            fail(
                join(where, "type"),
                f"an ephemeral volume (one with a size) is of type "
                f"{', '.join(volume_types.EPHEMERAL_TYPES)}, not {kind[:40]!r}",
            )
        labels = spec.get("labels")
        if labels is not None and not (
            isinstance(labels, dict) and all(isinstance(v, str) for v in labels.values())
        ):
            fail(join(where, "labels"), "expected a map of strings")
        if "name" not in spec and "size" not in spec:
            fail(
                where,
                "expected a volume name, or a map with name (existing volume) or size (new one)",
            )
