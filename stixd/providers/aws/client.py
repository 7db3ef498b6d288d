"""EC2 clients, one per region, and the one way stix calls them.

botocore's own retries are off (``total_max_attempts: 1``): EC2 answers a capacity shortage
with a 5xx, which botocore would retry four times over ten seconds before stix could fail over
to the next zone. ``call`` retries only what is worth retrying (throttling, AWS's passing
problems, no answer), a bounded number of times with a growing pause, and turns every other
failure into a classified stix error at once.

At log level ``debug`` every request is an ``aws_call`` line (operation, region, attempt, when
it began, how long it took) and every client made an ``aws_client_made`` line: the benchmarks
split a launch into time inside EC2 calls and the daemon's own time with them.

A listing is read whole with ``pages``: EC2 answers a long one in pages and says where the next
begins (``NextToken``); the first page alone would make instances, groups or images beyond it
invisible (a leak not found, a security group made twice, an older Ubuntu image taken).
"""

from __future__ import annotations

import contextlib
import random
import time
from typing import TYPE_CHECKING, Any

import anyio
import structlog

from stixd.providers.aws.credentials import AwsCredentials
from stixd.providers.aws.errors import AwsTransientError, Where, classify

if TYPE_CHECKING:  # aiobotocore is loaded by the first client: a daemon on no EC2 skips it
    from aiobotocore.config import AioConfig  # type: ignore[import-untyped]

ATTEMPTS = 4
BACKOFF_INITIAL_S = 0.5
BACKOFF_MAX_S = 8.0
CONNECT_TIMEOUT_S = 10
READ_TIMEOUT_S = 60
PAGE_SIZE = 1000
"""Items per page asked of a listing: EC2's largest for most (it sends fewer where it allows
fewer, e.g. 500 volumes)."""


def client_config() -> AioConfig:
    from aiobotocore.config import AioConfig

    return AioConfig(
        retries={"mode": "standard", "total_max_attempts": 1},
        connect_timeout=CONNECT_TIMEOUT_S,
        read_timeout=READ_TIMEOUT_S,
        max_pool_connections=32,
    )


class Ec2Clients:
    """Opened on first use per region, closed together by ``aclose``."""

    def __init__(
        self, creds: AwsCredentials, log: structlog.stdlib.BoundLogger, page_size: int = PAGE_SIZE
    ) -> None:
        self.creds = creds
        self.log = log
        self.page_size = page_size
        self._session: Any = None  # an AioSession, made with the first client
        self._stack = contextlib.AsyncExitStack()
        self._clients: dict[str, Any] = {}
        self._lock = anyio.Lock()
        self.calls = 0
        """EC2 requests made (attempts included), for tests and benchmarks."""

    async def client(self, region: str) -> Any:
        async with self._lock:
            found = self._clients.get(region)
            if found is None:
                began = time.perf_counter()
                if self._session is None:
                    from aiobotocore.session import AioSession  # type: ignore[import-untyped]

                    self._session = AioSession()
                c = self.creds
                found = await self._stack.enter_async_context(
                    self._session.create_client(
                        "ec2",
                        region_name=region,
                        endpoint_url=c.endpoint_url,
                        aws_access_key_id=c.access_key_id,
                        aws_secret_access_key=c.secret_access_key,
                        aws_session_token=c.session_token,
                        config=client_config(),
                    )
                )
                self._clients[region] = found
                self.log.debug(
                    "aws_client_made", region=region, s=round(time.perf_counter() - began, 6)
                )
            return found

    async def call(self, where: Where, operation: str, **params: Any) -> dict[str, Any]:
        """``operation`` in ``where.region``; a classified ``ProvisionError`` when it fails."""
        from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]  # loaded with the client
        from botocore.parsers import ResponseParserError  # type: ignore[import-untyped]

        client = await self.client(where.region)
        method = getattr(client, operation)
        delay = BACKOFF_INITIAL_S
        for attempt in range(1, ATTEMPTS + 1):
            self.calls += 1
            began, t0 = time.time(), time.perf_counter()
            try:
                result: dict[str, Any] = await method(**params)
                return result
            except (ClientError, BotoCoreError, ResponseParserError) as exc:
                error = classify(exc, operation, where)
            finally:
                self.log.debug(
                    "aws_call",
                    operation=operation,
                    region=where.region,
                    attempt=attempt,
                    began=began,
                    s=round(time.perf_counter() - t0, 6),
                )
            if not isinstance(error, AwsTransientError) or attempt == ATTEMPTS:
                raise error
            pause = min(delay, BACKOFF_MAX_S) * (0.5 + random.random() / 2)
            self.log.info(
                "aws_retry",
                operation=operation,
                code=error.aws_code,
                attempt=attempt,
                pause_s=round(pause, 3),
            )
            await anyio.sleep(pause)
            delay *= 2
        raise AssertionError("unreachable")

    async def pages(
        self, where: Where, operation: str, key: str, **params: Any
    ) -> list[dict[str, Any]]:
        """Every item under ``key`` of a paginated listing, page after page until EC2 gives no
        ``NextToken``; each page is one ``call`` (retried on its own, logged on its own).

        Not botocore's paginator: that one would send the pages past ``call``'s retries and
        its ``aws_call`` lines. ``MaxResults`` is left out where ids are listed (EC2 refuses
        both in one request, and answers every id anyway)."""
        if not any(name.endswith("Ids") for name in params):
            params["MaxResults"] = self.page_size
        items: list[dict[str, Any]] = []
        while True:
            page = await self.call(where, operation, **params)
            items += page.get(key) or []
            token = page.get("NextToken")
            if not token:
                return items
            params["NextToken"] = token

    async def aclose(self) -> None:
        clients, self._clients = self._clients, {}
        if clients:
            with anyio.CancelScope(shield=True):
                await self._stack.aclose()
        self._stack = contextlib.AsyncExitStack()
