"""The object stores stix keeps buckets in: S3, R2, GCS and Azure Blob, behind one seam.

``open_stores(storage_config, env, home_id)`` is made once per daemon; ``bucket(kind, name)``
gives a ``Bucket`` (``base.py`` says what each call promises), ``tagged(kind)`` lists the
buckets this stix home made. Clients open on first use per store and close with ``aclose``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

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
    StoreError,
    StoreKind,
    Stores,
    StoreUnreachable,
    UploadResult,
    label_value,
)
from stixd.storage.stores.gcs import GcsBucket, GcsClient
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

    async def tagged(self, kind: StoreKind) -> list[str]:
        if kind in (StoreKind.S3, StoreKind.R2):
            return await self._s3_clients(kind).tagged(self.home_id)
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
