"""COPY mode from the daemon's side: list the bucket, sign a short-lived GET per object, and
have each node's agent fetch them into the mount path (the node needs no cloud credentials).
Listing, signing and fetching go one bounded batch at a time, so a long copy never sends an
expired URL and a huge bucket is never held in memory.

A store that cannot sign (GCS without a service-account key: gcloud's user credentials, the
metadata server) hands instead, with each batch, a fresh read-only token kept to the bucket
and plain object URLs; the agent sends it as a bearer header, holds it only in memory, and
never writes or logs it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from pathlib import Path, PurePosixPath
from typing import Protocol, runtime_checkable

import anyio

from stixd.agent_client import AgentError, AgentUnreachable
from stixd.providers.base import NodeInfo, Provider
from stixd.providers.shared.dests import resolve_dest
from stixd.storage.stores import Bucket
from stixproto.errors import ProvisionError

BATCH = 2_000
"""Objects per agent request (its limit is 20,000; a batch's line stays well under 16 MiB)."""
BATCH_BYTES = 2 << 30
"""Bytes per agent request (an object larger goes alone): each batch is signed just before it
is sent, so at 8 downloads at once a batch must finish within ``URL_SECONDS`` on a slow link."""
URL_SECONDS = 900
"""How long a signed URL lives: long enough for one batch on a slow link, no longer."""
WORKERS = 8
"""Concurrent downloads per node."""
FETCH_DEADLINE_S = 3600.0


@runtime_checkable
class ReadsWithToken(Protocol):
    """A bucket a node may read with a bearer token when it cannot sign URLs (GCS)."""

    def signs(self) -> bool: ...

    def media_url(self, key: str) -> str: ...

    async def read_token(self) -> str | None: ...


class _Reader:
    """How a node reads the bucket's objects: signed URLs, or plain URLs and a token."""

    def __init__(self, bucket: Bucket) -> None:
        self.bucket = bucket
        self.tokens = isinstance(bucket, ReadsWithToken) and not bucket.signs()

    async def url(self, key: str) -> str:
        if isinstance(self.bucket, ReadsWithToken) and self.tokens:
            return self.bucket.media_url(key)
        return await self.bucket.signed_get(key, URL_SECONDS)

    async def bearer(self) -> str | None:
        """A token for the next batch (asked per batch: it outlives one)."""
        if isinstance(self.bucket, ReadsWithToken) and self.tokens:
            return await self.bucket.read_token()
        return None


@runtime_checkable
class PlacesMounts(Protocol):
    """A provider whose nodes place a mount path their own way (the local sandbox)."""

    def resolve_dest(self, node: NodeInfo, dest: str) -> Path: ...


def node_path(provider: Provider, node: NodeInfo, dest: str) -> str:
    if isinstance(provider, PlacesMounts):
        return str(provider.resolve_dest(node, dest))
    return resolve_dest(node, dest)


Batch = tuple[list[list[str]], str | None]
"""[key relative to the prefix, URL] items, and the bearer token the node sends with them."""


async def _batches(bucket: Bucket, prefix: str) -> AsyncGenerator[Batch, None]:
    """The bucket's objects under ``prefix`` as [key relative to it, signed URL] batches, read
    and signed one batch at a time as the caller asks for the next: no URL is older than the
    batch before it took, and only one batch is held."""
    base = prefix.strip("/") + "/" if prefix.strip("/") else ""
    keys: list[str] = []
    size = 0
    reader = _Reader(bucket)

    async def signed() -> Batch:
        bearer = await reader.bearer()
        return [[k[len(base) :], await reader.url(k)] for k in keys], bearer

    async for obj in bucket.objects(base):
        if obj.key.endswith("/"):
            continue  # a folder marker: the folder is made by its files
        if keys and (len(keys) >= BATCH or size + obj.size > BATCH_BYTES):
            yield await signed()
            keys, size = [], 0
        keys.append(obj.key)
        size += max(obj.size, 0)
    if keys:
        yield await signed()


async def _one_object(bucket: Bucket, prefix: str) -> tuple[str | None, str | None]:
    """A signed URL for the object named ``prefix`` itself (``/dst: s3://b/path/file``, which
    SkyPilot copies as a file), when nothing lies under it as a folder; and its bearer."""
    key = prefix.strip("/")
    if not key:
        return None, None
    async for obj in bucket.objects(key):
        if obj.key == key:
            reader = _Reader(bucket)
            return await reader.url(key), await reader.bearer()
    return None, None


async def copy_to_nodes(
    provider: Provider, nodes: list[NodeInfo], bucket: Bucket, prefix: str, dest: str
) -> int:
    """Fetch every object under ``prefix`` into ``dest`` on every node; the object count.

    Each batch goes to every node at once and the next is listed and signed only when all have
    fetched it; the first node to fail ends the copy (the launch fails anyway)."""
    wheres = {node.rank: node_path(provider, node, dest) for node in nodes}
    failed: dict[int, str] = {}

    async def send(node: NodeInfo, where: str, items: list[list[str]], bearer: str | None) -> None:
        auth = {"bearer": bearer} if bearer is not None else {}
        try:
            await provider.connector(node).call(
                "fetch", deadline=FETCH_DEADLINE_S, dest=where, items=items, workers=WORKERS, **auth
            )
        except (AgentError, AgentUnreachable) as exc:
            failed[node.rank] = str(exc)

    async def to_all(items: list[list[str]], bearer: str | None, single: str | None = None) -> None:
        async with anyio.create_task_group() as tg:
            for node in nodes:
                where = wheres[node.rank]
                if single is not None:  # the file lands at the mount path, fetched into its folder
                    items = [[PurePosixPath(where).name, single]]
                    where = str(PurePosixPath(where).parent)
                tg.start_soon(send, node, where, items, bearer)

    count = 0
    async with contextlib.aclosing(_batches(bucket, prefix)) as batches:
        async for batch, bearer in batches:
            count += len(batch)
            await to_all(batch, bearer)
            if failed:
                break
    if not count and not failed:  # nothing under it as a folder: the object itself, or nothing
        single, bearer = await _one_object(bucket, prefix)
        await to_all([], bearer, single)
        count = int(single is not None)
    if failed:
        rank = min(failed)
        raise ProvisionError(
            f"copying {bucket.kind}://{bucket.name} to {dest} on node {rank} failed: {failed[rank]}"
        )
    return count
