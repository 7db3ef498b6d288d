"""GCS buckets over the JSON API with aiohttp; tokens from gcloud-aio-auth.

``storage.gcs.endpoint`` (else ``STORAGE_EMULATOR_HOST``) points at an emulator such as
fake-gcs-server: no credentials are then read or sent. Otherwise gcloud-aio-auth finds them as
Google's libraries do (``GOOGLE_APPLICATION_CREDENTIALS``, gcloud's application default
credentials, and the metadata server only when ``storage.gcs.use_metadata_server`` says this
is a GCE machine). The project is ``storage.gcs.project``, else
``GOOGLE_CLOUD_PROJECT``, else the service-account file's.

Signed URLs are V4 (``GOOG4-RSA-SHA256``), signed with the service-account key
(``storage.gcs.service_account_file`` or ``GOOGLE_APPLICATION_CREDENTIALS``), as Google
documents them. fake-gcs-server does not check signatures: against it (with a throw-away key)
the tests prove the URL's host, path and query and that a bare client downloads and uploads
with it, not that Google would accept the signature. There is no signed URL without a key:
COPY then hands a node a read-only token downscoped to the bucket (``read_token``) and the
JSON API's media URLs (``media_url``) instead.

``storage.gcs.api_endpoint`` names another root for the JSON API than Google's (a Private
Service Connect endpoint, a proxy); unlike an emulator's, credentials are sent to it.
"""

from __future__ import annotations

import binascii
import contextlib
import datetime
import hashlib
import json
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import anyio
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from gcloud.aio.auth import Token

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
from stixd.storage.stores.http import Sessions, as_dict, failure, unreachable

GOOGLE = "https://storage.googleapis.com"
SCOPE = "https://www.googleapis.com/auth/devstorage.full_control"
MAX_SIGNED_S = 7 * 24 * 3600
GCS_REMOTE = "google cloud storage"
DELETERS = 8
NODE_MODES = ("auto", "scoped", "daemon")
STS = "https://sts.googleapis.com/v1/token"
TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
NODE_ROLE = "inRole:roles/storage.objectAdmin"
"""What a downscoped token may do in its bucket (no more than the daemon's own token may)."""
READ_ROLE = "inRole:roles/storage.objectViewer"
"""What a COPY's token may do in its bucket: read objects, nothing else."""
MAX_TOKEN = 4096


def service_file(section: Mapping[str, Any], env: Mapping[str, str]) -> Path | None:
    given = section.get("service_account_file") or env.get("GOOGLE_APPLICATION_CREDENTIALS")
    return Path(str(given)).expanduser() if given else None


def adc_file(env: Mapping[str, str]) -> Path | None:
    """gcloud's application default credentials file, when there is one."""
    home = Path(env.get("HOME") or Path.home())
    root = Path(env["CLOUDSDK_CONFIG"]) if env.get("CLOUDSDK_CONFIG") else home / ".config/gcloud"
    found = root / "application_default_credentials.json"
    return found if found.is_file() else None


def access_boundary(bucket: str, role: str = NODE_ROLE) -> dict[str, Any]:
    """A Credential Access Boundary (Google's ``accessBoundary``) that keeps a token to the
    objects of ``bucket``, with ``role`` on them."""
    rule = {
        "availableResource": f"//storage.googleapis.com/projects/_/buckets/{bucket}",
        "availablePermissions": [role],
    }
    return {"accessBoundary": {"accessBoundaryRules": [rule]}}


async def downscope(
    session: aiohttp.ClientSession,
    endpoint: str,
    source: str,
    source_s: int,
    bucket: str,
    role: str = NODE_ROLE,
) -> tuple[str, int]:
    """Exchange the access token ``source`` (good for ``source_s`` more seconds) at Google's
    Security Token Service for one kept to ``bucket``; the token and how long it lasts (the
    answer's ``expires_in``, else the source's, as Google's libraries take it). One line on
    failure."""
    form = {
        "grant_type": EXCHANGE,
        "requested_token_type": TOKEN_TYPE,
        "subject_token_type": TOKEN_TYPE,
        "subject_token": source,
        "options": quote(json.dumps(access_boundary(bucket, role), separators=(",", ":")), safe=""),
    }
    what = "downscope a token"
    try:
        async with session.post(endpoint, data=form) as answer:
            if answer.status >= 300:
                raise await failure(answer, bucket, what)
            found = as_dict(json.loads(await answer.read()), bucket, what)
    except (aiohttp.ClientError, TimeoutError, ValueError, RecursionError) as exc:
        raise unreachable(exc, bucket, what) from None
    token, lasts = found.get("access_token"), found.get("expires_in", source_s)
    if not (isinstance(token, str) and 0 < len(token) <= MAX_TOKEN and token.isprintable()):
        raise BadAnswer(f"{what} for bucket {bucket!r}: STS answered no usable access_token")
    if not isinstance(lasts, int) or isinstance(lasts, bool) or lasts <= 0:
        raise BadAnswer(f"{what} for bucket {bucket!r}: STS answered no usable expires_in")
    return token, min(lasts, source_s)


def rclone_token(token: str, valid_s: int, now: float) -> str:
    """The ``token`` setting of rclone's GCS backend for an access token without a refresh
    token: one JSON line. rclone 1.60 uses it until ``expiry`` and then reads its config file
    again for a newer one (a renewal writes it there)."""
    expiry = datetime.datetime.fromtimestamp(now + valid_s, datetime.UTC)
    doc = {"access_token": token, "token_type": "Bearer", "expiry": expiry.isoformat()}
    return json.dumps(doc, separators=(",", ":"))


class GcsClient:
    """The endpoint, the project, the token and the session every GCS bucket shares."""

    kind = StoreKind.GCS

    def __init__(self, section: Mapping[str, Any], env: Mapping[str, str]) -> None:
        emulator = section.get("endpoint") or env.get("STORAGE_EMULATOR_HOST")
        if emulator and "://" not in str(emulator):
            emulator = f"http://{emulator}"
        self.emulator: str | None = str(emulator).rstrip("/") if emulator else None
        api = section.get("api_endpoint")
        self.api: str | None = str(api).rstrip("/") if api and not self.emulator else None
        self.root = self.emulator or self.api or GOOGLE
        self.service_file = service_file(section, env) or adc_file(env)
        self.metadata = bool(section.get("use_metadata_server"))
        """Whether tokens may come from the GCE metadata server (only on a GCE machine: asked
        anywhere else it would hang until its timeout)."""
        self._key: dict[str, Any] | None = None
        project = section.get("project") or env.get("GOOGLE_CLOUD_PROJECT")
        if not project and self.key() is not None:
            project = (self.key() or {}).get("project_id")
        self.project = str(project) if project else None
        self.sessions = Sessions()
        self.digests = tree.Digests()
        self._token: Token | None = None
        self.node_mode = str(section.get("node_credentials") or "auto")
        if self.node_mode not in NODE_MODES:
            raise StoreError(f"gcs: node_credentials must be one of {', '.join(NODE_MODES)}")
        self.sts_endpoint = str(section.get("sts_endpoint") or STS)

    def key(self) -> dict[str, Any] | None:
        """The service-account key, when the credentials are one."""
        if self._key is None and self.service_file is not None:
            try:
                data = json.loads(self.service_file.read_text())
            except (OSError, ValueError) as exc:
                raise StoreError(f"gcs: cannot read {self.service_file}: {exc}") from None
            if isinstance(data, dict) and data.get("type") == "service_account":
                self._key = data
        return self._key

    async def headers(self) -> dict[str, str]:
        if self.emulator is not None:
            return {}
        if self.service_file is None and not self.metadata:
            raise StoreError(
                "gcs: no credentials: set GOOGLE_APPLICATION_CREDENTIALS or "
                "storage.gcs.service_account_file, run `gcloud auth application-default "
                "login`, or on GCE set storage.gcs.use_metadata_server: true"
            )
        if self._token is None:
            self._token = Token(
                service_file=str(self.service_file) if self.service_file else None,
                scopes=[SCOPE],
            )
        try:
            token = await self._token.get()
        except Exception as exc:  # gcloud-aio-auth raises bare exceptions of many kinds
            raise StoreError(f"gcs: no usable credentials: {exc}".splitlines()[0]) from None
        return {"Authorization": f"Bearer {token}"}

    async def node_token(self, bucket: str, role: str = NODE_ROLE) -> tuple[str, int]:
        """An access token kept to ``bucket`` with ``role`` (a Credential Access Boundary on
        the daemon's own, exchanged at STS) and how long it lasts; one line when there is
        none."""
        auth = (await self.headers()).get("Authorization", "")
        left = 0
        if self._token is not None:  # headers() made it and got its token
            acquired = self._token.access_token_acquired_at.timestamp()
            left = int(acquired + self._token.access_token_duration - time.time())
        if not auth.startswith("Bearer ") or left <= 60:
            raise StoreError("gcs: the daemon's own access token is about to end")
        session = self.sessions.get()
        return await downscope(session, self.sts_endpoint, auth[7:], left, bucket, role)

    async def request(
        self,
        method: str,
        url: str,
        bucket: str,
        what: str,
        *,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
        data: Any = None,
        headers: Mapping[str, str] | None = None,
        expect_json: bool = True,
    ) -> dict[str, Any]:
        """One call; the JSON answer, ``{}`` for an empty one, a one-line error otherwise."""
        hdrs = {**(await self.headers()), **(headers or {})}
        try:
            async with self.sessions.get().request(
                method, url, params=params, json=json_body, data=data, headers=hdrs
            ) as answer:
                if answer.status >= 300:
                    raise await failure(answer, bucket, what)
                if not expect_json or answer.status == 204:
                    return {}
                text = await answer.read()
                return as_dict(json.loads(text) if text.strip() else {}, bucket, what)
        except (aiohttp.ClientError, TimeoutError, ValueError, RecursionError) as exc:
            raise unreachable(exc, bucket, what) from None

    async def tagged(self, home_id: str, max_pages: int = MAX_PAGES) -> list[str]:
        if self.project is None:
            raise StoreError("gcs: no project: set storage.gcs.project or GOOGLE_CLOUD_PROJECT")
        ours: list[str] = []
        params = {"project": self.project, "maxResults": str(PAGE_SIZE)}
        for _ in range(max_pages):
            page = await self.request(
                "GET", f"{self.root}/storage/v1/b", "*", "list buckets", params=params
            )
            for b in page.get("items") or []:
                labels = b.get("labels") if isinstance(b, dict) else None
                if isinstance(labels, dict) and labels.get(LABEL_HOME) == home_id:
                    ours.append(str(b.get("name")))
            token = page.get("nextPageToken")
            if not token:
                return sorted(ours)
            if token == params.get("pageToken"):
                raise BadAnswer("gcs: the bucket listing repeats its page")
            params["pageToken"] = str(token)
        raise BadAnswer(f"gcs: the bucket listing did not end in {max_pages} pages")

    async def aclose(self) -> None:
        token, self._token = self._token, None
        if token is not None:
            await token.close()
        await self.sessions.aclose()


class GcsBucket:
    def __init__(self, client: GcsClient, name: str, region: str | None, home_id: str) -> None:
        self.kind = StoreKind.GCS
        self.name = name
        self.region = region
        self.home_id = home_id
        self.max_pages = MAX_PAGES
        self._c = client
        self._url = f"{client.root}/storage/v1/b/{quote(name, safe='')}"

    def _object_url(self, key: str) -> str:
        return f"{self._url}/o/{quote(key, safe='')}"

    async def _bucket(self) -> dict[str, Any] | None:
        try:
            return await self._c.request("GET", self._url, self.name, "read")
        except BucketMissing:
            return None

    async def exists(self) -> bool:
        return await self._bucket() is not None

    async def create(self, labels: Mapping[str, str]) -> None:
        if self._c.project is None:
            raise StoreError("gcs: no project: set storage.gcs.project or GOOGLE_CLOUD_PROJECT")
        wanted = {k: label_value(v) for k, v in labels.items()} | {LABEL_HOME: self.home_id}
        body: dict[str, Any] = {"name": self.name, "labels": wanted}
        if self.region:
            body["location"] = self.region
        try:
            await self._c.request(
                "POST",
                f"{self._c.root}/storage/v1/b",
                self.name,
                "create",
                params={"project": self._c.project},
                json_body=body,
            )
            return
        except StoreError as exc:
            if "HTTP 409" not in str(exc):
                raise
        found = await self.labels()  # it exists: ours to label again, or someone else's
        if found is None or found.get(LABEL_HOME) != self.home_id:
            raise NotOurs(f"bucket {self.name!r} exists and this stix did not make it")
        await self._c.request("PATCH", self._url, self.name, "label", json_body={"labels": wanted})

    async def labels(self) -> dict[str, str] | None:
        found = await self._bucket()
        if found is None:
            return None
        labels = found.get("labels") or {}
        if not isinstance(labels, dict):
            raise BadAnswer(f"bucket {self.name!r}: the store's labels make no sense")
        return {str(k): str(v) for k, v in labels.items()}

    async def owned(self) -> bool:
        labels = await self.labels()
        return labels is not None and labels.get(LABEL_HOME) == self.home_id

    async def created(self) -> float | None:
        found = await self._bucket()
        with contextlib.suppress(KeyError, TypeError, ValueError):  # gone, or no time said
            return datetime.datetime.fromisoformat(str((found or {})["timeCreated"])).timestamp()
        return None

    async def delete(self) -> None:
        labels = await self.labels()
        if labels is None:
            return
        if labels.get(LABEL_HOME) != self.home_id:
            raise NotOurs(f"bucket {self.name!r} was not made by this stix; it is left alone")
        batch: list[str] = []
        async for info in self.objects():
            batch.append(info.key)
            if len(batch) == PAGE_SIZE:
                await self._remove(batch)
                batch = []
        await self._remove(batch)
        with contextlib.suppress(BucketMissing):
            await self._c.request("DELETE", self._url, self.name, "delete", expect_json=False)

    async def _remove(self, keys: Sequence[str]) -> None:
        todo = iter(keys)

        async def worker() -> None:
            for key in todo:
                with contextlib.suppress(BucketMissing):  # the object is gone already
                    await self._c.request(
                        "DELETE",
                        self._object_url(key),
                        self.name,
                        "delete object",
                        expect_json=False,
                    )

        with first_store_error():
            async with anyio.create_task_group() as tg:
                for _ in range(min(DELETERS, len(keys))):
                    tg.start_soon(worker)

    async def objects(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        params = {
            "prefix": prefix,
            "maxResults": str(PAGE_SIZE),
            "fields": "items(name,size,md5Hash),nextPageToken",
        }
        for _ in range(self.max_pages):
            page = await self._c.request("GET", f"{self._url}/o", self.name, "list", params=params)
            try:
                for o in page.get("items") or []:
                    yield ObjectInfo(str(o["name"]), int(o["size"]), str(o.get("md5Hash") or ""))
            except (KeyError, TypeError, ValueError):
                raise BadAnswer(f"bucket {self.name!r}: the listing makes no sense") from None
            token = page.get("nextPageToken")
            if not token:
                return
            if token == params.get("pageToken"):
                raise BadAnswer(f"bucket {self.name!r}: the listing repeats its page")
            params["pageToken"] = str(token)
        raise BadAnswer(f"bucket {self.name!r}: the listing did not end in {self.max_pages} pages")

    async def _put(self, key: str, path: Path, size: int) -> str | None:
        # A media upload streams the file (aiohttp reads it 64 KiB at a time in a thread).
        with path.open("rb") as f:
            made = await self._c.request(
                "POST",
                f"{self._c.root}/upload/storage/v1/b/{quote(self.name, safe='')}/o",
                self.name,
                "upload",
                params={"uploadType": "media", "name": key},
                data=f,
                headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            )
        return str(made.get("md5Hash") or "") or None

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
            digests=self._c.digests,
            remove=self._remove if delete else None,
        )

    def _sign(self, method: str, key: str, seconds: int) -> str:
        seconds = max(1, min(int(seconds), MAX_SIGNED_S))
        root = urlsplit(self._c.emulator or GOOGLE)
        path = f"/{quote(self.name, safe='')}/{quote(key, safe='/~')}"
        sa = self._c.key()
        if sa is None:
            raise StoreError(
                f"bucket {self.name!r}: a signed URL needs a service-account key "
                "(storage.gcs.service_account_file or GOOGLE_APPLICATION_CREDENTIALS)"
            )
        now = datetime.datetime.now(datetime.UTC)
        stamp, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
        scope = f"{day}/auto/storage/goog4_request"
        query = {
            "X-Goog-Algorithm": "GOOG4-RSA-SHA256",
            "X-Goog-Credential": f"{sa['client_email']}/{scope}",
            "X-Goog-Date": stamp,
            "X-Goog-Expires": str(seconds),
            "X-Goog-SignedHeaders": "host",
        }
        canonical_query = "&".join(
            f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in sorted(query.items())
        )
        canonical = "\n".join(
            [method, path, canonical_query, f"host:{root.netloc}\n", "host", "UNSIGNED-PAYLOAD"]
        )
        to_sign = "\n".join(
            ["GOOG4-RSA-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()]
        )
        private = serialization.load_pem_private_key(sa["private_key"].encode(), password=None)
        if not isinstance(private, rsa.RSAPrivateKey):
            raise StoreError(f"gcs: the key in {self._c.service_file} is not an RSA key")
        signature = private.sign(to_sign.encode(), padding.PKCS1v15(), hashes.SHA256())
        sig = binascii.hexlify(signature).decode()
        return f"{root.scheme}://{root.netloc}{path}?{canonical_query}&X-Goog-Signature={sig}"

    async def signed_get(self, key: str, seconds: int) -> str:
        return self._sign("GET", key, seconds)

    async def signed_put(self, key: str, seconds: int) -> str:
        return self._sign("PUT", key, seconds)

    def signs(self) -> bool:
        """Whether ``signed_get`` can sign (a service-account key is configured)."""
        return self._c.key() is not None

    def media_url(self, key: str) -> str:
        """The JSON API's URL of the object's content: a GET with ``read_token`` reads it."""
        return f"{self._object_url(key)}?alt=media"

    async def read_token(self) -> str | None:
        """A token that may only read this bucket's objects (``roles/storage.objectViewer``
        under a Credential Access Boundary, exchanged at STS) and that lasts as long as the
        daemon's own (at most an hour); None against an emulator, which reads none. One line
        when STS refuses."""
        if self._c.emulator is not None:
            return None
        try:
            token, _ = await self._c.node_token(self.name, READ_ROLE)
        except StoreError as exc:
            raise type(exc)(
                f"no read-only token for bucket {self.name!r} (no service-account key to sign "
                f"URLs with): {exc.message}"
            ) from None
        return token

    async def rclone_remote(self) -> RcloneRemote:
        """An access token kept to this bucket (``node_token``), renewed before its end
        (``stixd.storage.mount.renew_on_nodes``: rclone reads its config again for it), unless
        ``storage.gcs.node_credentials`` is ``daemon`` or, on ``auto``, STS refused one: then
        the service-account key where one is configured (project-wide, with a note saying
        so); against an emulator, anonymous access at its endpoint."""
        conf: dict[str, str] = {"bucket_policy_only": "true"}
        if self._c.project:
            conf["project_number"] = self._c.project
        if self._c.emulator is not None:
            # rclone's endpoint is the JSON API's root, not the host
            endpoint = f"{self._c.emulator}/storage/v1/"
            return RcloneRemote(GCS_REMOTE, conf | {"anonymous": "true", "endpoint": endpoint})
        if self._c.api is not None:
            conf["endpoint"] = f"{self._c.api}/storage/v1/"
        note = None
        if self._c.node_mode != "daemon":
            try:
                token, valid_s = await self._c.node_token(self.name)
            except StoreError as exc:
                if self._c.node_mode == "scoped":
                    raise StoreError(
                        f"no token scoped to bucket {self.name!r} for the nodes: {exc.message} "
                        "(set storage.gcs.node_credentials: auto to hand them the daemon's "
                        "credentials instead)"
                    ) from None
                note = (
                    f"the nodes got the daemon's own GCS credentials for bucket {self.name!r}, "
                    f"not a token scoped to it: {exc.message}"
                )
            else:
                keys = conf | {"token": rclone_token(token, valid_s, time.time())}
                return RcloneRemote(GCS_REMOTE, keys, valid_s=valid_s)
        if self._c.service_file is not None:
            key_file = os.fspath(self._c.service_file)
            return RcloneRemote(GCS_REMOTE, conf | {"service_account_file": key_file}, note=note)
        return RcloneRemote(GCS_REMOTE, conf | {"env_auth": "true"}, note=note)
