"""The stores' clients, opened by ``open_stores``: the S3, GCS and Azure modules (aiobotocore,
gcloud-aio-auth, cryptography) are imported only once a daemon uses a store or asks whether one
is set up, not when it starts: a daemon that never touches a bucket does not pay for them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stixd.storage.stores.azure import AzureAccount, AzureBucket
from stixd.storage.stores.base import Bucket, Skipped, StoreError, StoreKind
from stixd.storage.stores.gcs import GcsBucket, GcsClient, adc_file, service_file
from stixd.storage.stores.s3 import S3Bucket, S3Clients, s3_credentials


def section_of(config: Mapping[str, Any], kind: StoreKind) -> Mapping[str, Any]:
    found = config.get(kind.value)
    return found if isinstance(found, Mapping) else {}


def set_up(kind: StoreKind, section: Mapping[str, Any], env: Mapping[str, str]) -> bool:
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


class OpenedStores:
    """The ``Stores`` of one daemon: each store's clients opened on first use."""

    def __init__(self, config: Mapping[str, Any], env: Mapping[str, str], home_id: str) -> None:
        self.config = config
        self.env = dict(env)
        self.home_id = home_id
        self._s3: dict[StoreKind, S3Clients] = {}
        self._gcs: GcsClient | None = None
        self._azure: AzureAccount | None = None

    def _s3_clients(self, kind: StoreKind) -> S3Clients:
        if kind not in self._s3:
            section = section_of(self.config, kind)
            self._s3[kind] = S3Clients(
                kind, s3_credentials(kind, section, self.env), section, self.env
            )
        return self._s3[kind]

    def _gcs_client(self) -> GcsClient:
        if self._gcs is None:
            self._gcs = GcsClient(section_of(self.config, StoreKind.GCS), self.env)
        return self._gcs

    def _azure_account(self) -> AzureAccount:
        if self._azure is None:
            self._azure = AzureAccount(section_of(self.config, StoreKind.AZURE), self.env)
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
