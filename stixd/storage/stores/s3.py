"""S3 buckets, and R2 and other S3-compatible stores, on aiobotocore.

Credentials, default region and endpoint come from the AWS provider's resolver
(``stixd.providers.aws.credentials``): the environment, then the shared files, never the
metadata service. The endpoint is ``storage.s3.endpoint_url``, else ``AWS_ENDPOINT_URL_S3``,
else ``AWS_ENDPOINT_URL``; R2 takes ``storage.r2.endpoint_url`` (its account's endpoint) and the
``r2`` profile of ``~/.cloudflare/r2.credentials`` when that file exists, as SkyPilot does.

A bucket stix did not make (a ``s3://`` source) may live in any region: its region is asked
once (HeadBucket's ``x-amz-bucket-region``, which S3 sends on a 200, a 301 and a 403 alike)
and kept for the daemon's life, so its client, signed URLs and a node's rclone use the right
one. R2 has one region, "auto" (us-east-1 to the S3 API).

A node's rclone gets credentials for its one bucket only (``node_credentials``): STS
GetFederationToken (or AssumeRole with ``storage.s3.node_role_arn``) with an inline session
policy allowing S3 on ``arn:aws:s3:::BUCKET`` and ``BUCKET/*`` only (and the KMS key of an
SSE-KMS bucket, through S3 only), lasting
``storage.s3.node_credentials_seconds``. ``storage.s3.node_credentials``: ``auto`` (the
default) hands the daemon's own keys when STS refuses, saying so in one line; ``scoped``
fails the mount instead; ``daemon`` always hands the daemon's keys. R2 has no STS: its nodes
get Cloudflare's temporary credentials for the one bucket (``r2.py``: ``storage.r2.api_token``
or ``CLOUDFLARE_API_TOKEN``), lasting ``storage.r2.node_credentials_seconds``, with the same
three ``storage.r2.node_credentials`` modes (``auto`` falls back when no token is known).

R2 has no bucket tags (its S3 API implements neither PutBucketTagging nor GetBucketTagging):
an R2 bucket's labels are the JSON object ``MARKER`` in the bucket itself, written by
``create``, read by ``labels`` (and so by ``tagged``, one bounded read per bucket), left out of
every listing (so a COPY never downloads it and an upload with ``delete`` never removes it),
never overwritten by an upload, and removed last by ``delete``, just before the bucket.

Files up to ``MULTIPART`` are sent in one PUT; bigger ones in ``PART``-sized parts, as the AWS
CLI does, so an object's ETag is the same whichever of the two sent it and ``upload_tree``
can compare without reading the object back.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
from aiobotocore.config import AioConfig  # type: ignore[import-untyped]
from aiobotocore.session import AioSession  # type: ignore[import-untyped]
from botocore.exceptions import (  # type: ignore[import-untyped]
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
)
from botocore.parsers import ResponseParserError  # type: ignore[import-untyped]

from stixd.providers.aws.credentials import AwsCredentials, CredentialsMissing, resolve
from stixd.storage.stores import r2, tree
from stixd.storage.stores.base import (
    LABEL_HOME,
    MAX_PAGES,
    PAGE_SIZE,
    AccessDenied,
    BadAnswer,
    BucketMissing,
    NotOurs,
    ObjectInfo,
    RcloneRemote,
    Skipped,
    StoreError,
    StoreKind,
    StoreUnreachable,
    UploadResult,
    first_store_error,
    label_value,
    one_line,
)
from stixd.storage.stores.http import Sessions

MARKER = ".stix-labels"
"""The object holding an R2 bucket's labels (R2 has no bucket tags)."""
MARKER_MAX = 4096
"""The most of a marker read: a bigger one is not stix's (its labels are two short values)."""
MULTIPART = 8 << 20
PART = 8 << 20
_MISSING = frozenset({"NoSuchBucket", "404", "NotFound"})
_DENIED = frozenset(
    {"AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"}
)
NODE_CREDENTIALS_S = 12 * 3600
"""How long a node's bucket-scoped credentials last unless ``node_credentials_seconds`` says."""
STS_MIN_S, STS_MAX_S = 900, 129600
"""What STS allows GetFederationToken (an IAM user's keys: 15 minutes to 36 hours)."""
NODE_MODES = ("auto", "scoped", "daemon")
_REGION = re.compile(r"[a-z0-9-]{1,40}")
ROLE_CHAIN_S = 3600
"""What AssumeRole always allows (a role's shortest MaxSessionDuration, and AWS's cap when the
caller is itself a role's session)."""


def partition(region: str) -> str:
    """The ARN partition of ``region`` (``aws``, ``aws-cn``, ``aws-us-gov``)."""
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def bucket_policy(bucket: str, region: str) -> dict[str, Any]:
    """The session policy of a node's credentials: S3 on this bucket and its objects only (the
    credentials can do what both this and the daemon's own policy allow)."""
    arn = f"arn:{partition(region)}:s3:::{bucket}"
    # an SSE-KMS bucket's objects need its key, through S3 only (so for this bucket only)
    kms = {"StringEquals": {"kms:ViaService": f"s3.{region}.amazonaws.com"}}
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "s3:*", "Resource": [arn, f"{arn}/*"]},
            {
                "Effect": "Allow",
                "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
                "Resource": "*",
                "Condition": kms,
            },
        ],
    }


def sts_endpoint(section: Mapping[str, Any], env: Mapping[str, str]) -> str | None:
    """Where STS is asked: ``AWS_ENDPOINT_URL_STS``, else ``AWS_ENDPOINT_URL``, else the S3
    endpoint when it is not AWS's (an emulator or an S3-alike answering STS itself)."""
    return (
        env.get("AWS_ENDPOINT_URL_STS")
        or env.get("AWS_ENDPOINT_URL")
        or section.get("endpoint_url")
        or env.get("AWS_ENDPOINT_URL_S3")
        or None
    )


def _config(path_style: bool, r2: bool) -> AioConfig:
    # R2 refuses some of the checksums botocore now adds by default: send them only where an
    # operation needs one, as Cloudflare advises
    checksums = "when_required" if r2 else "when_supported"
    return AioConfig(
        request_checksum_calculation=checksums,
        response_checksum_validation=checksums,
        retries={"mode": "standard", "total_max_attempts": 3},
        connect_timeout=10,
        read_timeout=60,
        max_pool_connections=32,
        s3={"addressing_style": "path"} if path_style else None,
        # SigV4 everywhere, signed URLs too (botocore may presign with SigV2, which the newer
        # regions and R2 refuse): a URL is signed for the bucket's own region
        signature_version="s3v4",
    )


def s3_credentials(
    kind: StoreKind, section: Mapping[str, Any], env: Mapping[str, str]
) -> AwsCredentials:
    """The keys, region and endpoint for ``kind`` (S3 or R2); ``StoreError`` naming what is
    missing."""
    if kind is StoreKind.R2:
        r2_file = Path(env.get("HOME") or Path.home()) / ".cloudflare" / "r2.credentials"
        if r2_file.is_file():
            env = {**env, "AWS_SHARED_CREDENTIALS_FILE": str(r2_file), "AWS_PROFILE": "r2"}
    try:
        creds = resolve(env)
    except CredentialsMissing as exc:
        raise StoreError(f"{kind.value}: {exc.message}") from None
    if kind is StoreKind.R2:
        endpoint = section.get("endpoint_url") or env.get("R2_ENDPOINT_URL")
        if not endpoint:
            raise StoreError(
                "r2: no endpoint: set storage.r2.endpoint_url to your account's "
                "https://<account id>.r2.cloudflarestorage.com"
            )
        # R2 takes "us-east-1" as its "auto" region, and a bucket made there needs no
        # location constraint
        return dataclasses.replace(creds, endpoint_url=str(endpoint), region="us-east-1")
    endpoint = (
        section.get("endpoint_url") or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    )
    region = section.get("region") or creds.region
    return dataclasses.replace(creds, endpoint_url=endpoint or None, region=str(region))


def classify(exc: Exception, bucket: str, what: str) -> StoreError:
    """An aiobotocore failure as a one-line store error."""
    if isinstance(exc, ClientError):
        err = exc.response.get("Error") or {}
        code = str(
            err.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        )
        msg = one_line(err.get("Message") or code)
        if code == "BucketAlreadyExists":
            return NotOurs(f"bucket name {bucket!r} is taken by another account")
        if code in _MISSING:
            return BucketMissing(f"bucket {bucket!r} does not exist ({what})")
        if code in _DENIED:
            return AccessDenied(f"access to bucket {bucket!r} denied ({what}): {msg}")
        if code.isdigit() and int(code) >= 500:
            # no S3 error code in the answer: botocore read a body it could not parse (it
            # makes an unparseable 200 a 500) or an HTML page of some proxy
            return BadAnswer(
                f"{what} on bucket {bucket!r}: the store answered garbage (HTTP {code})"
            )
        return StoreError(f"{what} on bucket {bucket!r} failed: {code}: {msg}")
    if isinstance(exc, EndpointConnectionError):
        return StoreUnreachable(f"{what} on bucket {bucket!r}: {one_line(exc)}")
    if isinstance(exc, ResponseParserError):
        return BadAnswer(f"{what} on bucket {bucket!r}: the store answered garbage")
    return StoreError(f"{what} on bucket {bucket!r} failed: {one_line(exc)}")


_ERRORS = (ClientError, BotoCoreError, ResponseParserError)


class S3Clients:
    """One aiobotocore S3 client per region, opened on first use, closed by ``aclose``; the
    region of each bucket asked once; STS for the nodes' credentials."""

    def __init__(
        self,
        kind: StoreKind,
        creds: AwsCredentials,
        section: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        section = section or {}
        self.kind = kind
        self.creds = creds
        self._session = AioSession()
        self._stack = contextlib.AsyncExitStack()
        self._clients: dict[str, Any] = {}
        self._lock = anyio.Lock()
        self.digests = tree.Digests()
        self.regions: dict[str, str] = {}
        """Each bucket's region as S3 said it (kept for the daemon's life)."""
        self._region_locks: dict[str, anyio.Lock] = {}
        self.node_mode = str(section.get("node_credentials") or "auto")
        if self.node_mode not in NODE_MODES:
            raise StoreError(
                f"{kind.value}: node_credentials must be one of {', '.join(NODE_MODES)}"
            )
        seconds = int(section.get("node_credentials_seconds") or NODE_CREDENTIALS_S)
        low, high = (r2.R2_MIN_S, r2.R2_MAX_S) if kind is StoreKind.R2 else (STS_MIN_S, STS_MAX_S)
        self.node_seconds = max(low, min(seconds, high))
        self.r2_api = str(section.get("api_endpoint") or r2.API)
        self.r2_token = r2.api_token(section, env or {})
        self.r2_account = (
            r2.account_id(section, env or {}, creds.endpoint_url or "")
            if kind is StoreKind.R2
            else None
        )
        self._http = Sessions()
        role = section.get("node_role_arn")
        self.node_role = str(role) if role else None
        self.sts_endpoint = sts_endpoint(section, env or {})
        self._sts: Any = None

    async def client(self, region: str | None) -> Any:
        region = region or self.creds.region
        async with self._lock:
            found = self._clients.get(region)
            if found is None:
                c = self.creds
                found = await self._stack.enter_async_context(
                    self._session.create_client(
                        "s3",
                        region_name=region,
                        endpoint_url=c.endpoint_url,
                        aws_access_key_id=c.access_key_id,
                        aws_secret_access_key=c.secret_access_key,
                        aws_session_token=c.session_token,
                        config=_config(c.endpoint_url is not None, self.kind is StoreKind.R2),
                    )
                )
                self._clients[region] = found
            return found

    async def region_of(self, bucket: str) -> str:
        """``bucket``'s region, asked once (HeadBucket); the default region for a bucket that
        does not exist yet (not kept: stix may make it)."""
        if self.kind is StoreKind.R2:
            return self.creds.region
        found = self.regions.get(bucket)
        if found is not None:
            return found
        lock = self._region_locks.setdefault(bucket, anyio.Lock())
        async with lock:
            found = self.regions.get(bucket)
            if found is None:
                found = await self._ask_region(bucket)
                if found is None:
                    return self.creds.region
                if not _REGION.fullmatch(found):
                    raise BadAnswer(
                        f"bucket {bucket!r}: the store names no region but {found!r}"[:300]
                    )
                self.regions[bucket] = found
            return found

    async def _ask_region(self, bucket: str) -> str | None:
        client = await self.client(None)
        try:
            answer = await client.head_bucket(Bucket=bucket)
        except ClientError as exc:
            meta = exc.response.get("ResponseMetadata") or {}
            region = (meta.get("HTTPHeaders") or {}).get("x-amz-bucket-region") or (
                exc.response.get("Error") or {}
            ).get("Region")
            if region:
                return str(region)
            error = classify(exc, bucket, "find its region")
            if isinstance(error, BucketMissing):
                return None
            raise error from None
        except _ERRORS as exc:
            raise classify(exc, bucket, "find its region") from None
        headers = (answer.get("ResponseMetadata") or {}).get("HTTPHeaders") or {}
        region = answer.get("BucketRegion") or headers.get("x-amz-bucket-region")
        # an S3-alike that names no region serves every bucket from its one endpoint
        return str(region) if region else self.creds.region

    def daemon_keys(self) -> dict[str, str]:
        c = self.creds
        keys = {"access_key_id": c.access_key_id, "secret_access_key": c.secret_access_key}
        if c.session_token:
            keys["session_token"] = c.session_token
        return keys

    async def node_credentials(self, bucket: str, region: str) -> RcloneRemote:
        """The keys a node's rclone gets for ``bucket`` (an ``RcloneRemote`` of them alone):
        bucket-scoped and short-lived from STS unless ``node_credentials`` says otherwise."""
        if self.node_mode == "daemon":
            return RcloneRemote("s3", self.daemon_keys())
        try:
            if self.kind is StoreKind.R2:
                return await self._r2_mint(bucket)
            return await self._mint(bucket, region)
        except StoreError as exc:
            kind = self.kind.value
            if self.node_mode == "scoped":
                raise StoreError(
                    f"no bucket-scoped credentials for the nodes: {exc.message} (set "
                    f"storage.{kind}.node_credentials: auto to hand them the daemon's keys "
                    "instead)"
                ) from None
            note = (
                f"the nodes got the daemon's own {kind.upper()} keys for bucket {bucket!r}, "
                f"not credentials scoped to it: {exc.message}"
            )
            return RcloneRemote("s3", self.daemon_keys(), note=note)

    async def _r2_mint(self, bucket: str) -> RcloneRemote:
        """Cloudflare's temporary credentials for ``bucket`` alone (``r2.py``)."""
        if self.r2_token is None:
            raise StoreError(
                "no Cloudflare API token to ask for temporary credentials (set "
                "storage.r2.api_token or CLOUDFLARE_API_TOKEN)"
            )
        if self.r2_account is None:
            raise StoreError(
                "no Cloudflare account id (set storage.r2.account_id, or an endpoint_url of "
                "https://ACCOUNT_ID.r2.cloudflarestorage.com)"
            )
        keys = await r2.temp_credentials(
            self._http.get(),
            self.r2_api,
            self.r2_token,
            self.r2_account,
            bucket,
            self.creds.access_key_id,
            self.node_seconds,
        )
        return RcloneRemote("s3", keys, valid_s=self.node_seconds)

    async def _sts_client(self) -> Any:
        async with self._lock:
            if self._sts is None:
                c = self.creds
                self._sts = await self._stack.enter_async_context(
                    self._session.create_client(
                        "sts",
                        region_name=c.region,
                        endpoint_url=self.sts_endpoint,
                        aws_access_key_id=c.access_key_id,
                        aws_secret_access_key=c.secret_access_key,
                        aws_session_token=c.session_token,
                        config=_config(False, False),
                    )
                )
            return self._sts

    async def _mint(self, bucket: str, region: str) -> RcloneRemote:
        if self.creds.session_token and self.node_role is None:
            raise StoreError(
                "the daemon runs on temporary credentials (a session token), and STS makes "
                "federation tokens only from an IAM user's own keys; set "
                "storage.s3.node_role_arn to a role it may assume"
            )
        policy = json.dumps(bucket_policy(bucket, region), separators=(",", ":"))
        name = f"stix-{bucket}"[:32]  # GetFederationToken's Name: 2-32 of [\w+=,.@-]
        what = "AssumeRole" if self.node_role else "GetFederationToken"
        seconds = self.node_seconds
        try:
            keys = await self._sts_call(name, policy, seconds)
        except ClientError as exc:
            err = exc.response.get("Error") or {}
            text = one_line(err.get("Message") or "", 200)
            if not (self.node_role and seconds > ROLE_CHAIN_S and "DurationSeconds" in text):
                raise StoreError(f"STS refused {what}: {err.get('Code') or '?'}: {text}") from None
            # the role allows less (its MaxSessionDuration; an hour when the daemon itself
            # runs on a role's session): the most every role allows
            seconds = ROLE_CHAIN_S
            try:
                keys = await self._sts_call(name, policy, seconds)
            except ClientError as again:
                err = again.response.get("Error") or {}
                text = one_line(err.get("Message") or "", 200)
                raise StoreError(f"STS refused {what}: {err.get('Code') or '?'}: {text}") from None
        except _ERRORS as exc:
            raise StoreError(f"STS {what} failed: {one_line(exc, 200)}") from None
        return RcloneRemote("s3", keys, valid_s=seconds)

    async def _sts_call(self, name: str, policy: str, seconds: int) -> dict[str, str]:
        sts = await self._sts_client()
        if self.node_role:
            answer = await sts.assume_role(
                RoleArn=self.node_role, RoleSessionName=name, Policy=policy, DurationSeconds=seconds
            )
        else:
            answer = await sts.get_federation_token(
                Name=name, Policy=policy, DurationSeconds=seconds
            )
        try:
            cred = answer["Credentials"]
            return {
                "access_key_id": str(cred["AccessKeyId"]),
                "secret_access_key": str(cred["SecretAccessKey"]),
                "session_token": str(cred["SessionToken"]),
            }
        except (KeyError, TypeError):
            raise StoreError("STS answered no credentials") from None

    async def tagged(
        self, home_id: str, max_pages: int = MAX_PAGES, unread: Skipped | None = None
    ) -> list[str]:
        client = await self.client(None)
        names: list[tuple[str, str | None]] = []
        params: dict[str, Any] = {"MaxBuckets": PAGE_SIZE}
        for _ in range(max_pages):
            try:
                page = await client.list_buckets(**params)
            except _ERRORS as exc:
                raise classify(exc, "*", "list buckets") from None
            names += [(b["Name"], b.get("BucketRegion")) for b in page.get("Buckets") or []]
            token = page.get("ContinuationToken")
            if not token:
                break
            if token == params.get("ContinuationToken"):
                raise BadAnswer(f"{self.kind.value}: the bucket listing repeats its page")
            params["ContinuationToken"] = token
        else:
            raise BadAnswer(
                f"{self.kind.value}: the bucket listing did not end in {max_pages} pages"
            )
        ours: list[str] = []
        limit = anyio.Semaphore(16)

        async def check(name: str, region: str | None) -> None:
            async with limit:
                try:
                    labels = await S3Bucket(self, name, region, home_id).labels()
                except StoreError as exc:  # one bucket denied to us hides none of the others
                    if unread is not None:
                        unread(name, exc.message)
                    return
            if labels is not None and labels.get(LABEL_HOME) == home_id:
                ours.append(name)

        with first_store_error():
            async with anyio.create_task_group() as tg:
                for name, region in names:
                    tg.start_soon(check, name, region)
        return sorted(ours)

    async def aclose(self) -> None:
        await self._http.aclose()
        clients, self._clients = self._clients, {}
        self._sts, sts = None, self._sts
        if clients or sts is not None:
            with anyio.CancelScope(shield=True):
                await self._stack.aclose()
        self._stack = contextlib.AsyncExitStack()


def _sparing_marker(ignore: Callable[[str], bool] | None) -> Callable[[str], bool]:
    """``ignore``, and a local file that would land on an R2 bucket's ``MARKER``."""
    return lambda rel: rel == MARKER or (ignore is not None and ignore(rel))


class S3Bucket:
    def __init__(self, clients: S3Clients, name: str, region: str | None, home_id: str) -> None:
        self.kind = clients.kind
        self.name = name
        self.region = region
        self.home_id = home_id
        self.max_pages = MAX_PAGES
        self._clients = clients

    async def _region(self) -> str:
        """The region named when this bucket was asked for, else the one S3 says it is in."""
        return self.region or await self._clients.region_of(self.name)

    async def _call(self, what: str, operation: str, **params: Any) -> Any:
        client = await self._clients.client(await self._region())
        return await self._on(client, what, operation, **params)

    async def _on(self, client: Any, what: str, operation: str, **params: Any) -> Any:
        try:
            return await getattr(client, operation)(**params)
        except _ERRORS as exc:
            raise classify(exc, self.name, what) from None

    async def exists(self) -> bool:
        try:
            await self._call("head", "head_bucket", Bucket=self.name)
        except BucketMissing:
            return False
        return True

    async def create(self, labels: Mapping[str, str]) -> None:
        params: dict[str, Any] = {"Bucket": self.name}
        region = self.region or self._clients.creds.region
        if self.kind is StoreKind.S3 and region != "us-east-1":
            params["CreateBucketConfiguration"] = {"LocationConstraint": region}
        client = await self._clients.client(region)
        try:
            await self._on(client, "create", "create_bucket", **params)
        except StoreError as exc:
            if "BucketAlreadyOwnedByYou" not in str(exc):
                raise
        else:
            if self.kind is StoreKind.S3:
                self._clients.regions[self.name] = region
        found = await self.labels()
        if found and found.get(LABEL_HOME) not in (None, self.home_id):
            raise NotOurs(f"bucket {self.name!r} exists and another stix home made it")
        tags = {k: label_value(v) for k, v in labels.items()} | {LABEL_HOME: self.home_id}
        if self.kind is StoreKind.R2:
            body = json.dumps(tags, sort_keys=True).encode()
            await self._call("label", "put_object", Bucket=self.name, Key=MARKER, Body=body)
            return
        await self._call(
            "tag",
            "put_bucket_tagging",
            Bucket=self.name,
            Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in sorted(tags.items())]},
        )

    async def labels(self) -> dict[str, str] | None:
        if self.kind is StoreKind.R2:
            return await self._marker_labels()
        try:
            answer = await self._call("read tags", "get_bucket_tagging", Bucket=self.name)
        except BucketMissing:
            return None
        except StoreError as exc:
            if "NoSuchTagSet" in str(exc):
                return {}
            raise
        try:
            return {str(t["Key"]): str(t["Value"]) for t in answer.get("TagSet") or []}
        except (KeyError, TypeError):
            raise BadAnswer(f"bucket {self.name!r}: the store's tags make no sense") from None

    async def _marker_labels(self) -> dict[str, str] | None:
        """An R2 bucket's labels from its ``MARKER``: {} when it has none (or one that is not
        stix's: unreadable, too big, not a JSON object of strings), None when it is gone."""
        try:
            answer = await self._call(
                "read labels",
                "get_object",
                Bucket=self.name,
                Key=MARKER,
                Range=f"bytes=0-{MARKER_MAX}",
            )
            data = await answer["Body"].read()
        except BucketMissing:
            return None
        except StoreError as exc:
            if "NoSuchKey" in str(exc) or "InvalidRange" in str(exc):  # none, or an empty one
                return {}
            raise
        except (*_ERRORS, OSError) as exc:  # the body broke off
            raise classify(exc, self.name, "read labels") from None
        try:
            found = json.loads(data) if len(data) <= MARKER_MAX else None
        except (ValueError, RecursionError):  # also a marker nested past the parser's depth
            return {}
        if not isinstance(found, dict):
            return {}
        return {k: v for k, v in found.items() if isinstance(k, str) and isinstance(v, str)}

    async def owned(self) -> bool:
        labels = await self.labels()
        return labels is not None and labels.get(LABEL_HOME) == self.home_id

    async def created(self) -> float | None:
        params: dict[str, Any] = {"Prefix": self.name, "MaxBuckets": PAGE_SIZE}
        for _ in range(self.max_pages):  # S3 says a bucket's CreationDate only in the listing
            page = await self._call("list", "list_buckets", **params)
            for b in page.get("Buckets") or []:
                if b.get("Name") == self.name and hasattr(b.get("CreationDate"), "timestamp"):
                    return float(b["CreationDate"].timestamp())
            token = page.get("ContinuationToken")
            if not token or token == params.get("ContinuationToken"):
                return None
            params["ContinuationToken"] = token
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
        if batch:
            await self._remove(batch)
        if self.kind is StoreKind.R2:  # its labels last: a cut delete is still ours to finish
            await self._remove([MARKER])
        with contextlib.suppress(BucketMissing):
            await self._call("delete", "delete_bucket", Bucket=self.name)
        self._clients.regions.pop(self.name, None)  # the name may be made again elsewhere

    async def _remove(self, keys: Sequence[str]) -> None:
        for i in range(0, len(keys), PAGE_SIZE):
            chunk = keys[i : i + PAGE_SIZE]
            await self._call(
                "delete objects",
                "delete_objects",
                Bucket=self.name,
                Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True},
            )

    async def objects(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        params: dict[str, Any] = {"Bucket": self.name, "MaxKeys": PAGE_SIZE, "Prefix": prefix}
        hidden = MARKER if self.kind is StoreKind.R2 else None
        for _ in range(self.max_pages):
            page = await self._call("list", "list_objects_v2", **params)
            try:
                for o in page.get("Contents") or []:
                    if o["Key"] == hidden:
                        continue
                    yield ObjectInfo(
                        str(o["Key"]), int(o["Size"]), str(o.get("ETag", "")).strip('"')
                    )
            except (KeyError, TypeError, ValueError):
                raise BadAnswer(f"bucket {self.name!r}: the listing makes no sense") from None
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return
            if token == params.get("ContinuationToken"):
                raise BadAnswer(f"bucket {self.name!r}: the listing repeats its page")
            params["ContinuationToken"] = token
        raise BadAnswer(f"bucket {self.name!r}: the listing did not end in {self.max_pages} pages")

    async def _put(self, key: str, path: Path, size: int) -> str | None:
        if size < MULTIPART:
            body = await anyio.Path(path).read_bytes()
            put = await self._call("upload", "put_object", Bucket=self.name, Key=key, Body=body)
            return str(put.get("ETag") or "").strip('"') or None
        up = await self._call("upload", "create_multipart_upload", Bucket=self.name, Key=key)
        upload_id = up["UploadId"]
        parts: list[dict[str, Any]] = []
        try:
            async with await anyio.open_file(path, "rb") as f:
                number = 1
                while chunk := await f.read(PART):
                    answer = await self._call(
                        "upload part",
                        "upload_part",
                        Bucket=self.name,
                        Key=key,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=chunk,
                    )
                    parts.append({"PartNumber": number, "ETag": answer["ETag"]})
                    number += 1
            done = await self._call(
                "upload",
                "complete_multipart_upload",
                Bucket=self.name,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
            return str(done.get("ETag") or "").strip('"') or None
        except BaseException:
            with anyio.CancelScope(shield=True), contextlib.suppress(StoreError):
                await self._call(
                    "abort upload",
                    "abort_multipart_upload",
                    Bucket=self.name,
                    Key=key,
                    UploadId=upload_id,
                )
            raise

    async def upload_tree(
        self,
        root: Path,
        prefix: str = "",
        *,
        ignore: Callable[[str], bool] | None = None,
        delete: bool = False,
    ) -> UploadResult:
        if self.kind is StoreKind.R2 and not tree.norm_prefix(prefix):  # never over its labels
            ignore = _sparing_marker(ignore)
        return await tree.upload(
            root,
            prefix,
            ignore,
            listing=self.objects,
            digest=lambda p: tree.s3_etag(p, PART, MULTIPART),
            put=self._put,
            digests=self._clients.digests,
            remove=self._remove if delete else None,
        )

    async def _presign(self, method: str, key: str, seconds: int) -> str:
        client = await self._clients.client(await self._region())
        url: str = await client.generate_presigned_url(
            method, Params={"Bucket": self.name, "Key": key}, ExpiresIn=int(seconds)
        )
        return url

    async def signed_get(self, key: str, seconds: int) -> str:
        return await self._presign("get_object", key, seconds)

    async def signed_put(self, key: str, seconds: int) -> str:
        return await self._presign("put_object", key, seconds)

    async def rclone_remote(self) -> RcloneRemote:
        c = self._clients.creds
        provider = {StoreKind.R2: "Cloudflare"}.get(
            self.kind, "AWS" if c.endpoint_url is None else "Other"
        )
        region = await self._region()
        creds = await self._clients.node_credentials(self.name, region)
        conf = {"provider": provider, "env_auth": "false", "region": region} | creds.keys
        if c.endpoint_url:
            conf["endpoint"] = c.endpoint_url
        return RcloneRemote("s3", conf, creds.valid_s, creds.note)
