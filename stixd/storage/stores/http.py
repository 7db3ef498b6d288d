"""What the REST stores (GCS, Azure Blob) share: one aiohttp session, and the one-line errors
their answers become."""

from __future__ import annotations

from typing import Any

import aiohttp

from stixd.storage.stores.base import (
    AccessDenied,
    BadAnswer,
    BucketMissing,
    StoreError,
    StoreUnreachable,
    one_line,
)

TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60)
MAX_ERROR_BYTES = 4096
"""An error body is read up to here: enough for the store's message, never a page of HTML."""


class Sessions:
    """An aiohttp session made on first use (inside the daemon's loop), closed by ``aclose``."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    def get(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=TIMEOUT, connector=aiohttp.TCPConnector(limit=32)
            )
        return self._session

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()


async def failure(answer: aiohttp.ClientResponse, bucket: str, what: str) -> StoreError:
    """A store's non-2xx answer as a one-line error (its body read only in part)."""
    body = (await answer.content.read(MAX_ERROR_BYTES)).decode("utf-8", errors="replace")
    status = answer.status
    if status == 404:
        return BucketMissing(f"bucket {bucket!r} does not exist ({what})")
    if status in (401, 403):
        return AccessDenied(f"access to bucket {bucket!r} denied ({what}): {one_line(body, 200)}")
    return StoreError(f"{what} on bucket {bucket!r} failed: HTTP {status}: {one_line(body, 200)}")


def unreachable(exc: Exception, bucket: str, what: str) -> StoreError:
    if isinstance(exc, aiohttp.ClientConnectionError | TimeoutError):
        return StoreUnreachable(
            f"{what} on bucket {bucket!r}: {one_line(exc) or type(exc).__name__}"
        )
    return BadAnswer(
        f"{what} on bucket {bucket!r}: the store answered garbage ({one_line(exc, 120)})"
    )


def as_dict(value: Any, bucket: str, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadAnswer(f"{what} on bucket {bucket!r}: the store answered garbage")
    return value
