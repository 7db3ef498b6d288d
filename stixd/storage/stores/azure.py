"""Azure Blob containers over the Blob REST API with aiohttp, signed with the account's Shared
Key; nodes get SAS tokens (a blob's for one download or upload, the container's for rclone).

The account comes from ``storage.azure`` (``account`` + ``key`` [+ ``endpoint``], or
``connection_string``), else ``AZURE_STORAGE_CONNECTION_STRING``, else ``AZURE_STORAGE_ACCOUNT``
+ ``AZURE_STORAGE_KEY``. An ``endpoint`` with the account in its path (Azurite's
``http://127.0.0.1:10000/devstoreaccount1``) is used as it is.

A "bucket" is a container. Its labels are the container's metadata; metadata names must be
C# identifiers, so ``stix-home`` is kept as ``stix_home`` and read back as ``stix-home``.
Deleting a container deletes its blobs with it.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import hmac
import io
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import aiohttp
import anyio
import yarl

from stixd.storage.stores import tree
from stixd.storage.stores.base import (
    LABEL_HOME,
    MAX_PAGES,
    PAGE_SIZE,
    BadAnswer,
    BucketMissing,
    NotOurs,
    ObjectInfo,
    RcloneRemote,
    StoreError,
    StoreKind,
    UploadResult,
    first_store_error,
    label_value,
)
from stixd.storage.stores.http import Sessions, failure, unreachable

VERSION = "2021-08-06"
SINGLE_PUT = 64 << 20
"""Files up to this size go in one Put Blob (Azure then keeps their MD5 itself); bigger ones in
``BLOCK``-sized blocks, their MD5 computed on the way and set on the blob."""
BLOCK = 8 << 20
MAX_LISTING_BYTES = 32 << 20
RCLONE_SAS_S = 7 * 24 * 3600
"""How long the container SAS handed to a node's rclone lasts unless
``storage.azure.node_credentials_seconds`` says (at most ``MAX_RCLONE_SAS_S``): as long as
allowed, since rclone 1.60's azureblob reads its ``sas_url`` once, when it starts (no
``env_auth``, nothing it re-reads), so a mount cannot be handed a new one and stops when it ends
(S3's keys are renewed under the running mount instead: ``stixd.actors.mount_keys``)."""
MAX_RCLONE_SAS_S = 7 * 24 * 3600
RCLONE_PERMISSIONS = "rwdl"
"""What a mount (MOUNT and MOUNT_CACHED alike are read-write) does in its container: read,
write (create and overwrite blobs, their blocks), delete and list; no append or tags."""
_HEADERS = (
    "Content-Encoding",
    "Content-Language",
    "Content-Length",
    "Content-MD5",
    "Content-Type",
    "Date",
    "If-Modified-Since",
    "If-Match",
    "If-None-Match",
    "If-Unmodified-Since",
    "Range",
)


def _parse_connection_string(text: str) -> dict[str, str]:
    parts = (p.split("=", 1) for p in text.split(";") if "=" in p)
    return {k.strip(): v.strip() for k, v in parts}


class AzureAccount:
    """The account name, its key and its blob endpoint, and the session every container
    shares."""

    kind = StoreKind.AZURE

    def __init__(self, section: Mapping[str, Any], env: Mapping[str, str]) -> None:
        conn = section.get("connection_string") or (
            None if section.get("account") else env.get("AZURE_STORAGE_CONNECTION_STRING")
        )
        parsed = _parse_connection_string(str(conn)) if conn else {}
        account = (
            section.get("account") or parsed.get("AccountName") or env.get("AZURE_STORAGE_ACCOUNT")
        )
        key = section.get("key") or parsed.get("AccountKey") or env.get("AZURE_STORAGE_KEY")
        if not account or not key:
            raise StoreError(
                "azure: no storage account: set storage.azure.account and .key (or "
                ".connection_string), or AZURE_STORAGE_CONNECTION_STRING"
            )
        self.account = str(account)
        try:
            self.key = base64.b64decode(str(key), validate=True)
        except ValueError:
            raise StoreError("azure: the account key is not base64") from None
        scheme = parsed.get("DefaultEndpointsProtocol", "https")
        endpoint = section.get("endpoint") or parsed.get("BlobEndpoint")
        if not endpoint:
            suffix = parsed.get("EndpointSuffix", "core.windows.net")
            endpoint = f"{scheme}://{self.account}.blob.{suffix}"
        self.endpoint = str(endpoint).rstrip("/")
        self.sessions = Sessions()
        self.digests = tree.Digests()
        seconds = int(section.get("node_credentials_seconds") or RCLONE_SAS_S)
        self.node_seconds = max(60, min(seconds, MAX_RCLONE_SAS_S))

    def authorize(self, method: str, url: str, headers: dict[str, str]) -> None:
        """Add ``x-ms-date``, ``x-ms-version`` and the Shared Key ``Authorization`` header."""
        headers["x-ms-date"] = formatdate(usegmt=True)
        headers["x-ms-version"] = VERSION
        lower = {k.lower(): v for k, v in headers.items()}
        standard = [lower.get(h.lower(), "") for h in _HEADERS]
        if standard[2] == "0":
            standard[2] = ""  # Content-Length: empty when zero, since version 2015-02-21
        ms = sorted((k, v.strip()) for k, v in lower.items() if k.startswith("x-ms-"))
        split = urlsplit(url)
        resource = f"/{self.account}{split.path or '/'}"
        query: dict[str, list[str]] = {}
        for pair in filter(None, split.query.split("&")):
            name, _, value = pair.partition("=")
            query.setdefault(unquote(name).lower(), []).append(unquote(value))
        for name in sorted(query):
            resource += f"\n{name}:{','.join(sorted(query[name]))}"
        to_sign = "\n".join([method, *standard]) + "\n"
        to_sign += "".join(f"{k}:{v}\n" for k, v in ms) + resource
        mac = hmac.new(self.key, to_sign.encode(), hashlib.sha256).digest()
        headers["Authorization"] = f"SharedKey {self.account}:{base64.b64encode(mac).decode()}"

    def sas(self, resource: str, path: str, permissions: str, seconds: int) -> str:
        """A service SAS query string for ``path`` (``container`` or ``container/blob``)."""
        expiry = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=max(1, seconds))
        se = expiry.strftime("%Y-%m-%dT%H:%M:%SZ")
        fields = [permissions, "", se, f"/blob/{self.account}/{path}", "", "", "", VERSION]
        fields += [resource, "", "", "", "", "", "", ""]
        mac = hmac.new(self.key, "\n".join(fields).encode(), hashlib.sha256).digest()
        sig = base64.b64encode(mac).decode()
        return (
            f"sv={VERSION}&sr={resource}&sp={permissions}&se={quote(se, safe='')}"
            f"&sig={quote(sig, safe='')}"
        )

    async def request(
        self,
        method: str,
        url: str,
        bucket: str,
        what: str,
        *,
        headers: Mapping[str, str] | None = None,
        data: Any = None,
        read: bool = False,
    ) -> tuple[dict[str, str], bytes]:
        """One signed call: the answer's headers and, with ``read``, its body (bounded)."""
        hdrs = dict(headers or {})
        if data is None and method in ("PUT", "POST"):
            hdrs.setdefault("Content-Length", "0")
        self.authorize(method, url, hdrs)
        try:
            async with self.sessions.get().request(
                method,
                yarl.URL(url, encoded=True),
                headers=hdrs,
                data=data,
                # aiohttp would add a Content-Type the signature did not cover
                skip_auto_headers=() if "Content-Type" in hdrs else ("Content-Type",),
            ) as answer:
                if answer.status >= 300:
                    raise await failure(answer, bucket, what)
                body = await answer.content.read(MAX_LISTING_BYTES + 1) if read else b""
                if len(body) > MAX_LISTING_BYTES:
                    raise BadAnswer(f"{what} on bucket {bucket!r}: the answer is too long")
                return {k.lower(): v for k, v in answer.headers.items()}, body
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise unreachable(exc, bucket, what) from None

    async def tagged(self, home_id: str, max_pages: int = MAX_PAGES) -> list[str]:
        ours: list[str] = []
        marker = ""
        for _ in range(max_pages):
            url = f"{self.endpoint}/?comp=list&include=metadata&maxresults={PAGE_SIZE}"
            if marker:
                url += f"&marker={quote(marker, safe='')}"
            _, body = await self.request("GET", url, "*", "list containers", read=True)
            root = _xml(body, "*", "list containers")
            for c in root.iterfind("Containers/Container"):
                meta = {m.tag.lower(): (m.text or "") for m in c.iterfind("Metadata/*")}
                if meta.get(_meta_name(LABEL_HOME)) == home_id:
                    ours.append(c.findtext("Name") or "")
            following = root.findtext("NextMarker") or ""
            if not following:
                return sorted(ours)
            if following == marker:
                raise BadAnswer("azure: the container listing repeats its page")
            marker = following
        raise BadAnswer(f"azure: the container listing did not end in {max_pages} pages")

    async def aclose(self) -> None:
        await self.sessions.aclose()


def _meta_name(label: str) -> str:
    return label.replace("-", "_").lower()


def _xml(body: bytes, bucket: str, what: str) -> ET.Element:
    try:
        return ET.fromstring(body)
    except ET.ParseError:
        raise BadAnswer(f"{what} on bucket {bucket!r}: the store answered garbage") from None


class AzureBucket:
    def __init__(self, account: AzureAccount, name: str, region: str | None, home_id: str) -> None:
        self.kind = StoreKind.AZURE
        self.name = name
        self.region = region
        self.home_id = home_id
        self.max_pages = MAX_PAGES
        self._a = account
        self._url = f"{account.endpoint}/{quote(name, safe='')}"

    def _blob_url(self, key: str) -> str:
        return f"{self._url}/{quote(key, safe='/~')}"

    async def exists(self) -> bool:
        return await self.labels() is not None

    async def create(self, labels: Mapping[str, str]) -> None:
        wanted = {k: label_value(v) for k, v in labels.items()} | {LABEL_HOME: self.home_id}
        meta = {f"x-ms-meta-{_meta_name(k)}": v for k, v in wanted.items()}
        try:
            await self._a.request(
                "PUT", f"{self._url}?restype=container", self.name, "create", headers=meta
            )
            return
        except StoreError as exc:
            if "HTTP 409" not in str(exc):
                raise
        found = await self.labels()
        if found is None or found.get(LABEL_HOME) != self.home_id:
            raise NotOurs(f"bucket {self.name!r} exists and this stix did not make it")
        await self._a.request(
            "PUT", f"{self._url}?restype=container&comp=metadata", self.name, "label", headers=meta
        )

    async def labels(self) -> dict[str, str] | None:
        try:
            headers, _ = await self._a.request(
                "GET", f"{self._url}?restype=container", self.name, "read"
            )
        except BucketMissing:
            return None
        return {
            k[len("x-ms-meta-") :].replace("_", "-"): v
            for k, v in headers.items()
            if k.startswith("x-ms-meta-")
        }

    async def owned(self) -> bool:
        labels = await self.labels()
        return labels is not None and labels.get(LABEL_HOME) == self.home_id

    async def created(self) -> float | None:
        try:
            headers, _ = await self._a.request(
                "GET", f"{self._url}?restype=container", self.name, "read"
            )
        except BucketMissing:
            return None
        with contextlib.suppress(TypeError, ValueError):  # no creation time: made or relabelled
            return parsedate_to_datetime(headers.get("last-modified", "")).timestamp()
        return None

    async def delete(self) -> None:
        labels = await self.labels()
        if labels is None:
            return
        if labels.get(LABEL_HOME) != self.home_id:
            raise NotOurs(f"bucket {self.name!r} was not made by this stix; it is left alone")
        with contextlib.suppress(BucketMissing):
            await self._a.request("DELETE", f"{self._url}?restype=container", self.name, "delete")

    async def _remove(self, keys: Sequence[str]) -> None:
        todo = iter(keys)

        async def worker() -> None:
            for key in todo:
                with contextlib.suppress(BucketMissing):  # the blob is gone already
                    await self._a.request("DELETE", self._blob_url(key), self.name, "delete blob")

        with first_store_error():
            async with anyio.create_task_group() as tg:
                for _ in range(min(tree.WORKERS, len(keys))):
                    tg.start_soon(worker)

    async def objects(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        marker = ""
        for _ in range(self.max_pages):
            url = (
                f"{self._url}?restype=container&comp=list&maxresults={PAGE_SIZE}"
                f"&prefix={quote(prefix, safe='')}"
            )
            if marker:
                url += f"&marker={quote(marker, safe='')}"
            _, body = await self._a.request("GET", url, self.name, "list", read=True)
            root = _xml(body, self.name, "list")
            try:
                for b in root.iterfind("Blobs/Blob"):
                    size = int(b.findtext("Properties/Content-Length") or "")
                    md5 = b.findtext("Properties/Content-MD5") or ""
                    yield ObjectInfo(b.findtext("Name") or "", size, md5)
            except ValueError:
                raise BadAnswer(f"bucket {self.name!r}: the listing makes no sense") from None
            following = root.findtext("NextMarker") or ""
            if not following:
                return
            if following == marker:
                raise BadAnswer(f"bucket {self.name!r}: the listing repeats its page")
            marker = following
        raise BadAnswer(f"bucket {self.name!r}: the listing did not end in {self.max_pages} pages")

    async def _put(self, key: str, path: Path, size: int) -> str | None:
        url = self._blob_url(key)
        octets = {"Content-Type": "application/octet-stream"}
        if size <= SINGLE_PUT:
            with path.open("rb") as f:
                headers, _ = await self._a.request(
                    "PUT",
                    url,
                    self.name,
                    "upload",
                    headers=octets | {"x-ms-blob-type": "BlockBlob", "Content-Length": str(size)},
                    data=f,
                )
            return headers.get("content-md5") or None
        whole = hashlib.md5(usedforsecurity=False)
        ids: list[str] = []
        async with await anyio.open_file(path, "rb") as f:
            while chunk := await f.read(BLOCK):
                whole.update(chunk)
                block = base64.b64encode(f"{len(ids):08d}".encode()).decode()
                ids.append(block)
                await self._a.request(
                    "PUT",
                    f"{url}?comp=block&blockid={quote(block, safe='')}",
                    self.name,
                    "upload block",
                    headers=octets | {"Content-Length": str(len(chunk))},
                    data=io.BytesIO(chunk),
                )
        body = "<?xml version='1.0' encoding='utf-8'?><BlockList>"
        body += "".join(f"<Latest>{i}</Latest>" for i in ids) + "</BlockList>"
        data = body.encode()
        md5 = base64.b64encode(whole.digest()).decode()
        await self._a.request(
            "PUT",
            f"{url}?comp=blocklist",
            self.name,
            "upload",
            headers={
                "Content-Type": "application/xml",
                "Content-Length": str(len(data)),
                "x-ms-blob-content-md5": md5,
                "x-ms-blob-content-type": "application/octet-stream",
            },
            data=data,
        )
        return md5

    async def upload_tree(
        self,
        root: Path,
        prefix: str = "",
        *,
        ignore: Callable[[str], bool] | None = None,
        delete: bool = False,
    ) -> UploadResult:
        return await tree.upload(
            root,
            prefix,
            ignore,
            listing=self.objects,
            digest=tree.md5_b64,
            put=self._put,
            digests=self._a.digests,
            remove=self._remove if delete else None,
        )

    async def signed_get(self, key: str, seconds: int) -> str:
        return f"{self._blob_url(key)}?{self._a.sas('b', f'{self.name}/{key}', 'r', seconds)}"

    async def signed_put(self, key: str, seconds: int) -> str:
        """A URL a node PUTs the whole object to, with the header ``x-ms-blob-type:
        BlockBlob`` (Azure requires it on every Put Blob)."""
        return f"{self._blob_url(key)}?{self._a.sas('b', f'{self.name}/{key}', 'cw', seconds)}"

    def container_sas_url(self, seconds: int, permissions: str = RCLONE_PERMISSIONS) -> str:
        """The container's URL with a SAS that reads, writes, lists and deletes only in it."""
        return f"{self._url}?{self._a.sas('c', self.name, permissions, seconds)}"

    async def rclone_remote(self) -> RcloneRemote:
        seconds = self._a.node_seconds
        return RcloneRemote(
            "azureblob", {"sas_url": self.container_sas_url(seconds)}, valid_s=seconds
        )
