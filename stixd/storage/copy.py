"""COPY mode from the daemon's side: list the bucket, sign a short-lived GET per object, and
have each node's agent fetch them into the mount path (the node needs no cloud credentials)."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Protocol, runtime_checkable

import anyio

from stixd.agent_client import AgentError, AgentUnreachable
from stixd.providers.base import NodeInfo, Provider
from stixd.providers.shared.ssh_sync import resolve_dest
from stixd.storage.stores import Bucket
from stixproto.errors import ProvisionError

BATCH = 2_000
"""Objects per agent request (its limit is 20,000; a batch's line stays well under 16 MiB)."""
URL_SECONDS = 900
"""How long a signed URL lives: long enough for one batch on a slow link, no longer."""
WORKERS = 8
"""Concurrent downloads per node."""
FETCH_DEADLINE_S = 3600.0


@runtime_checkable
class PlacesMounts(Protocol):
    """A provider whose nodes place a mount path their own way (the local sandbox)."""

    def resolve_dest(self, node: NodeInfo, dest: str) -> Path: ...


def node_path(provider: Provider, node: NodeInfo, dest: str) -> str:
    if isinstance(provider, PlacesMounts):
        return str(provider.resolve_dest(node, dest))
    return resolve_dest(node, dest)


async def _batches(bucket: Bucket, prefix: str) -> list[list[list[str]]]:
    """The bucket's objects under ``prefix`` as [key relative to it, signed URL] batches."""
    base = prefix.strip("/") + "/" if prefix.strip("/") else ""
    batches: list[list[list[str]]] = [[]]
    async for obj in bucket.objects(base):
        if obj.key.endswith("/"):
            continue  # a folder marker: the folder is made by its files
        if len(batches[-1]) >= BATCH:
            batches.append([])
        url = await bucket.signed_get(obj.key, URL_SECONDS)
        batches[-1].append([obj.key[len(base) :], url])
    return [b for b in batches if b]


async def _one_object(bucket: Bucket, prefix: str) -> str | None:
    """A signed URL for the object named ``prefix`` itself (``/dst: s3://b/path/file``, which
    SkyPilot copies as a file), when nothing lies under it as a folder."""
    key = prefix.strip("/")
    if not key:
        return None
    async for obj in bucket.objects(key):
        if obj.key == key:
            return await bucket.signed_get(key, URL_SECONDS)
    return None


async def copy_to_nodes(
    provider: Provider, nodes: list[NodeInfo], bucket: Bucket, prefix: str, dest: str
) -> int:
    """Fetch every object under ``prefix`` into ``dest`` on every node; the object count."""
    batches = await _batches(bucket, prefix)
    single = None if batches else await _one_object(bucket, prefix)
    failed: dict[int, str] = {}

    async def one(node: NodeInfo) -> None:
        where = node_path(provider, node, dest)
        todo = batches
        if single is not None:  # the file lands at the mount path, fetched into its folder
            todo = [[[PurePosixPath(where).name, single]]]
            where = str(PurePosixPath(where).parent)
        agent = provider.connector(node)
        try:
            if not todo:
                await agent.call("fetch", dest=where, items=[], workers=1)
            for items in todo:
                await agent.call(
                    "fetch", deadline=FETCH_DEADLINE_S, dest=where, items=items, workers=WORKERS
                )
        except (AgentError, AgentUnreachable) as exc:
            failed[node.rank] = str(exc)

    async with anyio.create_task_group() as tg:
        for node in nodes:
            tg.start_soon(one, node)
    if failed:
        rank = min(failed)
        raise ProvisionError(
            f"copying {bucket.kind}://{bucket.name} to {dest} on node {rank} failed: {failed[rank]}"
        )
    return sum(len(b) for b in batches) + (single is not None)
