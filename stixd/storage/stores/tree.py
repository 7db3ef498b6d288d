"""Uploading a local tree to a bucket, the same for every store: walk what the sync rules keep,
list the bucket once, send only files whose size or digest differ, a few at a time.

Memory stays bounded: at most ``workers`` files are in flight and a store holds at most one
part of each in memory (S3: a file under 8 MiB or one 8 MiB part; GCS and Azure stream the file
or send 8 MiB blocks); digests are read in 1 MiB chunks in a worker thread. The bucket's
listing is held as a dict of key to ``ObjectInfo`` (one small struct per object), and each
store's ``Digests`` at most ``limit`` entries.
"""

from __future__ import annotations

import base64
import hashlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import anyio

from stixd.providers.shared.syncfilter import SyncFilter
from stixd.storage.stores.base import ObjectInfo, StoreError, UploadResult, first_store_error

CHUNK = 1 << 20
WORKERS = 10
"""Files in flight at once: the AWS CLI's default (``max_concurrent_requests``)."""


class LocalFile(NamedTuple):
    rel: str
    path: Path
    size: int
    mtime_ns: int


class Digests:
    """The digest each store gave files this daemon sent or hashed, by (path, size, mtime):
    an unchanged file is then compared with the bucket's listing without being read again
    (as ``aws s3 sync`` trusts size and mtime, but here against the store's own digest).
    Least recently used entries go past ``limit``."""

    def __init__(self, limit: int = 100_000) -> None:
        self.limit = limit
        self._known: OrderedDict[tuple[str, int, int], str] = OrderedDict()

    def get(self, f: LocalFile) -> str | None:
        key = (str(f.path), f.size, f.mtime_ns)
        found = self._known.get(key)
        if found is not None:
            self._known.move_to_end(key)
        return found

    def put(self, f: LocalFile, digest: str) -> None:
        self._known[(str(f.path), f.size, f.mtime_ns)] = digest
        self._known.move_to_end((str(f.path), f.size, f.mtime_ns))
        while len(self._known) > self.limit:
            self._known.popitem(last=False)


def norm_prefix(prefix: str) -> str:
    """``prefix`` as a key prefix: no leading ``/``, one trailing ``/`` unless empty."""
    prefix = prefix.strip("/")
    return prefix + "/" if prefix else ""


def local_files(root: Path, ignore: Callable[[str], bool] | None = None) -> list[LocalFile]:
    """The regular files under ``root`` a sync would send (symlinks to files followed)."""
    out: list[LocalFile] = []
    for rel, _real_dir, kept in SyncFilter(root).walk():
        if not kept or (ignore is not None and ignore(rel)):
            continue
        path = root / rel
        try:
            st = path.stat()
        except OSError:
            continue  # vanished or a dangling link: nothing to send
        if not path.is_file():
            continue
        out.append(LocalFile(rel, path, st.st_size, st.st_mtime_ns))
    return out


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


def md5_b64(path: Path) -> str:
    """The base64 MD5 of a file, as GCS and Azure report it."""
    h = hashlib.md5(usedforsecurity=False)
    for chunk in _chunks(path):
        h.update(chunk)
    return base64.b64encode(h.digest()).decode()


def s3_etag(path: Path, part_size: int, threshold: int) -> str:
    """The ETag S3 gives ``path`` uploaded by us: its MD5 in hex when sent whole, else the MD5
    of its parts' MD5s and ``-<parts>`` (parts of ``part_size``, as the AWS CLI's sync)."""
    size = path.stat().st_size
    whole = hashlib.md5(usedforsecurity=False)
    if size < threshold:
        for chunk in _chunks(path):
            whole.update(chunk)
        return whole.hexdigest()
    parts: list[bytes] = []
    with path.open("rb") as f:
        while True:
            part = hashlib.md5(usedforsecurity=False)
            left = part_size
            while left and (chunk := f.read(min(CHUNK, left))):
                part.update(chunk)
                left -= len(chunk)
            if left == part_size:
                break
            parts.append(part.digest())
    return f"{hashlib.md5(b''.join(parts), usedforsecurity=False).hexdigest()}-{len(parts)}"


async def upload(
    root: Path,
    prefix: str,
    ignore: Callable[[str], bool] | None,
    *,
    listing: Callable[[str], AsyncIterator[ObjectInfo]],
    digest: Callable[[Path], str],
    put: Callable[[str, Path, int], Awaitable[str | None]],
    digests: Digests | None = None,
    remove: Callable[[Sequence[str]], Awaitable[None]] | None = None,
    workers: int = WORKERS,
) -> UploadResult:
    """Send what changed of ``root`` under ``prefix``; with ``remove``, also delete the keys
    under ``prefix`` that no kept local file has (never without it). ``put`` answers the
    digest the store reports for what it took (None if it reports none), kept in ``digests``."""
    digests = digests if digests is not None else Digests()
    prefix = norm_prefix(prefix)
    files = await anyio.to_thread.run_sync(local_files, root, ignore)
    remote = {info.key: info async for info in listing(prefix)}
    sent = skipped = bytes_sent = 0
    queue = iter(files)

    async def worker() -> None:
        for f in queue:  # shared iterator: each file goes to exactly one worker
            try:
                await one(f)
            except OSError as exc:  # the local file, changed or gone under us
                raise StoreError(f"cannot read {f.path}: {exc.strerror or exc}") from None

    async def one(f: LocalFile) -> None:
        nonlocal sent, skipped, bytes_sent
        key = prefix + f.rel
        known = remote.get(key)
        if known is not None and known.size == f.size and known.etag:
            local = digests.get(f)
            if local is None:
                local = await anyio.to_thread.run_sync(digest, f.path)
                digests.put(f, local)
            if local == known.etag:
                skipped += 1
                return
        stored = await put(key, f.path, f.size)
        if stored:
            digests.put(f, stored)
        sent += 1
        bytes_sent += f.size

    with first_store_error():
        async with anyio.create_task_group() as tg:
            for _ in range(max(1, min(workers, len(files)))):
                tg.start_soon(worker)
    deleted = 0
    if remove is not None:
        wanted = {prefix + f.rel for f in files}
        filt = SyncFilter(root)
        extra = [
            k for k in remote if k not in wanted and not filt.excludes(k[len(prefix) :], False)
        ]
        if extra:
            await remove(extra)
        deleted = len(extra)
    return UploadResult(sent=sent, skipped=skipped, deleted=deleted, bytes_sent=bytes_sent)
