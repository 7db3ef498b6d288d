"""The object-store seam: what every store (S3, R2, GCS, Azure Blob) answers, and its errors.

A bucket stix makes carries two labels: ``stix-storage=<storage name>`` and
``stix-home=<this home's id>``. A bucket whose ``stix-home`` is not ours was not made by this
stix: ``delete`` refuses it and ``tagged`` leaves it out. Label values go through
``label_value`` on every store (GCS allows only lowercase letters, digits, ``-`` and ``_``, up to
63 characters), so a caller compares ``labels()[LABEL_STORAGE]`` with ``label_value(name)``.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from enum import StrEnum
from pathlib import Path
from typing import Protocol

import msgspec

from stixproto.errors import StixError

LABEL_STORAGE = "stix-storage"
LABEL_HOME = "stix-home"
PAGE_SIZE = 1000
"""Objects asked per listing page (the most S3, GCS and Azure give at once)."""
MAX_PAGES = 100_000
"""A listing longer than this many pages (10^8 objects) is taken as a store that never ends."""
_LABEL_BAD = re.compile(r"[^a-z0-9_-]")


class StoreKind(StrEnum):
    S3 = "s3"
    GCS = "gcs"
    AZURE = "azure"
    R2 = "r2"


class ObjectInfo(msgspec.Struct, frozen=True):
    key: str
    size: int
    etag: str
    """The digest as the store reports it: S3's ETag (quotes stripped), GCS's and Azure's
    base64 MD5 (empty when the store keeps none)."""


class UploadResult(msgspec.Struct, frozen=True):
    sent: int
    skipped: int
    deleted: int
    bytes_sent: int


class RcloneRemote(msgspec.Struct, frozen=True):
    """What a node's rclone needs to reach one bucket: the remote's type and config keys, with
    credentials scoped to the bucket as far as the store allows."""

    type: str
    keys: dict[str, str]
    valid_s: int | None = None
    """How long the credentials in ``keys`` last from now (None: as long as the daemon's)."""
    note: str | None = None
    """One line for the daemon's log and the user when the node got less than asked (the
    daemon's own keys because STS refused bucket-scoped ones)."""


class StoreError(StixError):
    """A store call failed; the message is one line that says which bucket and why."""

    code = "store_error"


class BucketMissing(StoreError):
    code = "bucket_missing"


class AccessDenied(StoreError):
    code = "store_access_denied"


class NotOurs(StoreError):
    """The bucket exists but this stix home did not make it: it is never deleted by stix."""

    code = "bucket_not_ours"


class BadAnswer(StoreError):
    """The store answered something that is not its protocol, or a listing that never ends."""

    code = "store_bad_answer"


class StoreUnreachable(StoreError):
    code = "store_unreachable"


def _first_store_error(group: BaseExceptionGroup[BaseException]) -> StoreError | None:
    for exc in group.exceptions:
        if isinstance(exc, StoreError):
            return exc
        if isinstance(exc, BaseExceptionGroup) and (found := _first_store_error(exc)):
            return found
    return None


@contextlib.contextmanager
def first_store_error() -> Iterator[None]:
    """Around a task group: its failure as the first ``StoreError`` in it (a caller expects
    one one-line error, not the group anyio gathers); anything else goes on as it was."""
    try:
        yield
    except BaseExceptionGroup as group:
        found = _first_store_error(group)
        if found is None:
            raise
        raise found from None


def label_value(text: str) -> str:
    """``text`` as a label value every store accepts (GCS's rule is the narrowest)."""
    return _LABEL_BAD.sub("_", text.lower())[:63]


def one_line(text: object, limit: int = 300) -> str:
    """A store's message cut to one short line (an HTML error page must not reach a log)."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class Bucket(Protocol):
    kind: StoreKind
    name: str
    region: str | None

    async def exists(self) -> bool: ...

    async def create(self, labels: Mapping[str, str]) -> None:
        """Make the bucket carrying ``labels`` plus ``stix-home`` (ours); an existing bucket of
        ours is fine, an existing bucket of someone else's is ``NotOurs``."""

    async def labels(self) -> dict[str, str] | None:
        """The bucket's labels (tags, metadata), or None when the bucket is gone."""

    async def owned(self) -> bool:
        """Whether the bucket exists and carries our ``stix-home``."""

    async def created(self) -> float | None:
        """When the bucket was made (epoch seconds, by the store's clock: S3 ``CreationDate``,
        GCS ``timeCreated``, Azure the container's ``Last-Modified``), None when it is gone."""

    async def delete(self) -> None:
        """Every object, then the bucket; ``NotOurs`` when we did not make it, nothing when it
        is already gone."""

    def objects(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        """Every object under ``prefix``, read a bounded page at a time."""

    async def upload_tree(
        self,
        root: Path,
        prefix: str = "",
        *,
        ignore: Callable[[str], bool] | None = None,
        delete: bool = False,
    ) -> UploadResult:
        """Send the files of ``root`` whose size or MD5 differ from the bucket's, skipping what
        ``.skyignore``/``.gitignore`` (``SyncFilter``) or ``ignore(relative path)`` drop; with
        ``delete``, also remove the keys under ``prefix`` that no kept file has."""

    async def signed_get(self, key: str, seconds: int) -> str: ...

    async def signed_put(self, key: str, seconds: int) -> str: ...

    async def rclone_remote(self) -> RcloneRemote:
        """The rclone remote reaching this bucket from a node, with short-lived credentials
        scoped to it where the store can make them."""


Skipped = Callable[[str, str], None]
"""Told (bucket, why) of a bucket a listing could not look at."""


class Stores(Protocol):
    home_id: str

    def bucket(self, kind: StoreKind, name: str, region: str | None = None) -> Bucket: ...

    async def tagged(self, kind: StoreKind, unread: Skipped | None = None) -> list[str]:
        """The buckets of ``kind`` carrying our ``stix-home`` label. A bucket whose labels
        cannot be read (denied to these keys) is told to ``unread`` (name, why) and skipped:
        it never hides the others."""

    async def aclose(self) -> None: ...
