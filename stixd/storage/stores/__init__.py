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
from stixd.storage.stores.azure import AzureAccount, AzureBucket
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
from stixd.storage.stores.gcs import GcsBucket, GcsClient, adc_file, service_file
from stixd.storage.stores.s3 import S3Bucket, S3Clients, s3_credentials

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


def _section(config: Mapping[str, Any], kind: StoreKind) -> Mapping[str, Any]:
    found = config.get(kind.value)
    return found if isinstance(found, Mapping) else {}


def _set_up(kind: StoreKind, section: Mapping[str, Any], env: Mapping[str, str]) -> bool:
    """Whether ``kind``'s credentials resolve here, read as its clients read them (files and
    environment only: no network, no metadata server)."""
    if kind is StoreKind.GCS:
        found = service_file(section, env)
        return bool(
            section.get("endpoint")
            or env.get("STORAGE_EMULATOR_HOST")
            or section.get("use_metadata_server")
            or (found is not None and found.is_file())
            or adc_file(env) is not None
        )
    try:
        if kind is StoreKind.AZURE:
            AzureAccount(section, env)  # an account with its key, or a connection string
        else:
            s3_credentials(kind, section, env)  # the AWS resolver: env, profile files; R2's
    except StoreError:
        return False
    return True


_CONFIGURED: dict[tuple[object, ...], list[str]] = {}


def configured(config: Mapping[str, Any], env: Mapping[str, str]) -> list[str]:
    """The stores set up here (SkyPilot's "enabled storage clouds"), in SkyPilot's order: those
    named in config ``storage:`` and those whose credentials resolve. Cached until the
    environment, the config or a credentials file changes (a few stats per call)."""
    home = Path(env.get("HOME") or Path.home())
    files = (
        *aws_files(env),
        home / ".cloudflare" / "r2.credentials",
        service_file(_section(config, StoreKind.GCS), env) or home,
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
            if config.get(kind.value) or _set_up(kind, _section(config, kind), env)
        ]
        _CONFIGURED.clear()  # one home's answer at a time
        _CONFIGURED[key] = found
    return list(found)


_ENV_PREFIXES = ("AWS_", "R2_", "AZURE_", "GOOGLE_", "STORAGE_EMULATOR", "CLOUDSDK_", "HOME")


class _Stores:
    def __init__(self, config: Mapping[str, Any], env: Mapping[str, str], home_id: str) -> None:
        self.config = config
        self.env = dict(env)
        self.home_id = home_id
        self._s3: dict[StoreKind, S3Clients] = {}
        self._gcs: GcsClient | None = None
        self._azure: AzureAccount | None = None

    def _s3_clients(self, kind: StoreKind) -> S3Clients:
        if kind not in self._s3:
            section = _section(self.config, kind)
            self._s3[kind] = S3Clients(
                kind, s3_credentials(kind, section, self.env), section, self.env
            )
        return self._s3[kind]

    def _gcs_client(self) -> GcsClient:
        if self._gcs is None:
            self._gcs = GcsClient(_section(self.config, StoreKind.GCS), self.env)
        return self._gcs

    def _azure_account(self) -> AzureAccount:
        if self._azure is None:
            self._azure = AzureAccount(_section(self.config, StoreKind.AZURE), self.env)
        return self._azure

    def bucket(self, kind: StoreKind, name: str, region: str | None = None) -> Bucket:
        if kind in (StoreKind.S3, StoreKind.R2):
            return S3Bucket(self._s3_clients(kind), name, region, self.home_id)
        if kind is StoreKind.GCS:
            return GcsBucket(self._gcs_client(), name, region, self.home_id)
        return AzureBucket(self._azure_account(), name, region, self.home_id)

    async def tagged(self, kind: StoreKind, unread: Skipped | None = None) -> list[str]:
        if kind in (StoreKind.S3, StoreKind.R2):  # GCS and Azure list labels with the buckets
            return await self._s3_clients(kind).tagged(self.home_id, unread=unread)
        if kind is StoreKind.GCS:
            return await self._gcs_client().tagged(self.home_id)
        return await self._azure_account().tagged(self.home_id)

    async def aclose(self) -> None:
        for clients in self._s3.values():
            await clients.aclose()
        if self._gcs is not None:
            await self._gcs.aclose()
        if self._azure is not None:
            await self._azure.aclose()


def open_stores(config: Mapping[str, Any], env: Mapping[str, str], home_id: str) -> Stores:
    """The stores, reached as ``config`` (the daemon's ``storage:`` section) and ``env`` say;
    ``home_id`` labels what this stix makes (``home_id(home)``)."""
    return _Stores(config, env, home_id)
