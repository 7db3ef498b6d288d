"""The object stores stix keeps buckets in: S3, R2, GCS and Azure Blob, behind one seam.

``open_stores(storage_config, env, home_id)`` is made once per daemon; ``bucket(kind, name)``
gives a ``Bucket`` (``base.py`` says what each call promises), ``tagged(kind)`` lists the
buckets this stix home made. Clients open on first use per store and close with ``aclose``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stixd.providers.aws.credentials import files as aws_files
from stixd.providers.aws.credentials import stamp
from stixd.providers.kubernetes.owner import owner_of
from stixd.storage.stores.base import (
    LABEL_HOME,
    LABEL_STORAGE,
    AccessDenied,
    BadAnswer,
    Bucket,
    BucketMissing,
    NotOurs,
    ObjectInfo,
    RcloneRemote,
    Skipped,
    StoreError,
    StoreKind,
    Stores,
    StoreUnreachable,
    UploadResult,
    label_value,
)

__all__ = [
    "LABEL_HOME",
    "LABEL_STORAGE",
    "AccessDenied",
    "BadAnswer",
    "Bucket",
    "BucketMissing",
    "NotOurs",
    "ObjectInfo",
    "RcloneRemote",
    "Skipped",
    "StoreError",
    "StoreKind",
    "StoreUnreachable",
    "Stores",
    "UploadResult",
    "configured",
    "home_id",
    "label_value",
    "open_stores",
]


def home_id(home: Path) -> str:
    """This stix home's id (the one its Kubernetes objects carry), for ``stix-home``."""
    return owner_of(home)


_CONFIGURED: dict[tuple[object, ...], list[str]] = {}


def configured(config: Mapping[str, Any], env: Mapping[str, str]) -> list[str]:
    """The stores set up here (SkyPilot's "enabled storage clouds"), in SkyPilot's order: those
    named in config ``storage:`` and those whose credentials resolve. Cached until the
    environment, the config or a credentials file changes (a few stats per call)."""
    from stixd.storage.stores.gcs import service_file
    from stixd.storage.stores.opened import section_of, set_up

    home = Path(env.get("HOME") or Path.home())
    files = (
        *aws_files(env),
        home / ".cloudflare" / "r2.credentials",
        service_file(section_of(config, StoreKind.GCS), env) or home,
        Path(env.get("CLOUDSDK_CONFIG") or home / ".config/gcloud")
        / "application_default_credentials.json",
    )
    key = (
        repr(sorted((k, repr(v)) for k, v in config.items())),
        tuple(sorted((k, v) for k, v in env.items() if k.startswith(_ENV_PREFIXES))),
        stamp(files),
    )
    found = _CONFIGURED.get(key)
    if found is None:
        found = [
            kind.value
            for kind in StoreKind
            if config.get(kind.value) or set_up(kind, section_of(config, kind), env)
        ]
        _CONFIGURED.clear()  # one home's answer at a time
        _CONFIGURED[key] = found
    return list(found)


_ENV_PREFIXES = ("AWS_", "R2_", "AZURE_", "GOOGLE_", "STORAGE_EMULATOR", "CLOUDSDK_", "HOME")


def open_stores(config: Mapping[str, Any], env: Mapping[str, str], home_id: str) -> Stores:
    """The stores, reached as ``config`` (the daemon's ``storage:`` section) and ``env`` say;
    ``home_id`` labels what this stix makes (``home_id(home)``)."""
    from stixd.storage.stores.opened import OpenedStores

    return OpenedStores(config, env, home_id)
