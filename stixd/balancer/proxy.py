"""Forwarding one request: choose a replica, stream the body there and the answer back.

A replica that refuses the connection or resets it is ejected (`Pool.failed`) and the request
goes at once to another one, as long as nothing of the answer has reached the client yet. A
request body is streamed to the replica; its first `REPLAY_LIMIT` bytes are kept so that a retry
can send it again (a longer body that has started to flow cannot be retried).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, MultiMapping

from stixd.balancer.control import Held
from stixd.balancer.pool import Arrivals, Pool, Slot

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
REPLAY_LIMIT = 1024 * 1024
SMALL_ANSWER = 64 * 1024
"""An answer of known length up to this is read whole and sent in one write (cheaper than a
stream, and no slower: it is complete before its first byte could have gone)."""
EJECTING = (aiohttp.ClientConnectorError, aiohttp.ClientOSError, aiohttp.ConnectionTimeoutError)
"""Connection refused, unreachable, reset, or no connection within the connect timeout."""
RETRYING = (*EJECTING, aiohttp.ServerDisconnectedError)
"""A pooled connection the replica closed just as it was reused is a race, not a dead replica:
retried elsewhere without an ejection (a dead one refuses the next connection anyway)."""


class ReplayBody:
    """The client's body, streamed, with its head kept so a retry can start it over."""

    def __init__(self, content: aiohttp.StreamReader) -> None:
        self._content = content
        self._kept: list[bytes] = []
        self._size = 0
        self.replayable = True

    async def chunks(self) -> AsyncIterator[bytes]:
        for chunk in self._kept:
            yield chunk
        async for chunk in self._content.iter_any():
            self._size += len(chunk)
            if self.replayable and self._size <= REPLAY_LIMIT:
                self._kept.append(chunk)
            else:
                self.replayable, self._kept = False, []
            yield chunk


def _hop_by_hop(headers: MultiMapping[str]) -> frozenset[str]:
    """The standard hop-by-hop headers and those the Connection header names."""
    named = {t.strip().lower() for v in headers.getall("Connection", ()) for t in v.split(",")}
    return HOP_BY_HOP | named


def upstream_headers(request: web.BaseRequest) -> CIMultiDict[str]:
    """The client's headers less hop-by-hop ones and Host (the replica's is set by the client
    session), with X-Forwarded-For/-Proto/-Host added."""
    drop = _hop_by_hop(request.headers) | {"host", "expect"}
    out = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in drop)
    peer = request.remote or ""
    before = request.headers.get("X-Forwarded-For")
    out["X-Forwarded-For"] = f"{before}, {peer}" if before else peer
    out["X-Forwarded-Proto"] = request.scheme
    if request.host:
        out["X-Forwarded-Host"] = request.host
    return out


def downstream_headers(upstream: aiohttp.ClientResponse) -> CIMultiDict[str]:
    drop = _hop_by_hop(upstream.headers) | {"content-length"}
    return CIMultiDict((k, v) for k, v in upstream.headers.items() if k.lower() not in drop)


log = logging.getLogger("stixd.balancer")


def one_line(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text + "\n")


@dataclass
class Proxy:
    pool: Pool
    arrivals: Arrivals
    held: Held
    session: aiohttp.ClientSession
    api_keys: tuple[bytes, ...] = ()
    stream_timeout: float | None = None
    connect_timeout: float = 5.0
    hold_seconds: float = 300.0

    def __post_init__(self) -> None:
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self.connect_timeout, sock_read=self.stream_timeout
        )

    def _authorized(self, request: web.BaseRequest) -> bool:
        given = request.headers.get("Authorization", "")
        scheme, _, key = given.partition(" ")
        offered = key.strip().encode()
        ok = False
        for wanted in self.api_keys:  # every key compared, each in constant time
            ok |= hmac.compare_digest(offered, wanted)
        return ok and scheme.lower() == "bearer"

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        if self.api_keys and not self._authorized(request):
            return web.Response(
                status=401,
                text="this service needs Authorization: Bearer <one of its API keys>\n",
                headers={"WWW-Authenticate": "Bearer"},
            )
        self.arrivals.add(time.time())  # after auth: requests without a key scale nothing up
        if request.headers.get("Expect", "").lower() == "100-continue" and request.version >= (
            1,
            1,
        ):
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # the body may come
        body = ReplayBody(request.content) if request.body_exists else None
        tried: list[Slot] = []
        deadline = time.monotonic() + self.hold_seconds
        while True:
            slot = self.pool.choose(tried)
            if slot is None:
                if tried:
                    return one_line(502, f"no replica answered ({len(tried)} tried)")
                refused = await self._hold(deadline)
                if refused is not None:
                    return refused
                continue
            tried.append(slot)
            answer = await self._try(request, slot, body)
            if answer is not None:
                return answer
            if body is not None and not body.replayable:
                return one_line(502, "the replica failed after the request body was sent")

    async def _hold(self, deadline: float) -> web.Response | None:
        """Wait for a ready set (None: one came); a 503 when the queue is full or time is up."""
        if not self.held.enter():
            return one_line(503, f"no ready replica and {self.held.limit} requests already wait")
        try:
            left = deadline - time.monotonic()
            if left > 0:
                try:
                    await asyncio.wait_for(self.pool.changed().wait(), left)
                    return None
                except TimeoutError:
                    pass
            return one_line(503, "no replica became ready in time; retry later")
        finally:
            self.held.leave()

    async def _try(
        self, request: web.BaseRequest, slot: Slot, body: ReplayBody | None
    ) -> web.StreamResponse | None:
        """The answer from ``slot``'s replica (None: it failed before any of it was sent)."""
        url = slot.replica.url.rstrip("/") + request.rel_url.raw_path_qs
        slot.in_flight += 1
        try:
            async with self.session.request(
                request.method,
                url,
                headers=upstream_headers(request),
                data=body.chunks() if body is not None else None,
                allow_redirects=False,
                timeout=self._timeout,
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            ) as upstream:
                headers = downstream_headers(upstream)
                length = upstream.content_length
                if length is not None and length <= SMALL_ANSWER and request.method != "HEAD":
                    data = await upstream.read()
                    self.pool.succeeded(slot)
                    return web.Response(
                        status=upstream.status, reason=upstream.reason, headers=headers, body=data
                    )
                self.pool.succeeded(slot)
                return await self._stream(request, upstream, headers, slot)
        except RETRYING as exc:
            if isinstance(exc, EJECTING):
                self._eject(slot, exc)
            return None
        except aiohttp.SocketTimeoutError:
            return one_line(504, "the replica did not answer within stream_timeout_seconds")
        except aiohttp.ClientPayloadError as exc:
            self._eject(slot, exc)
            return None
        except aiohttp.ClientError as exc:  # an answer that is not HTTP: the replica's fault
            return one_line(502, f"the replica's answer was unreadable: {str(exc)[:100]}")
        finally:
            slot.in_flight -= 1

    def _eject(self, slot: Slot, exc: BaseException) -> None:
        out_for = self.pool.failed(slot)
        if out_for is not None:
            replica = slot.replica
            log.warning(
                "replica %d (%s) ejected for %.0f s: %s",
                replica.replica_id,
                replica.url,
                out_for,
                str(exc)[:200] or type(exc).__name__,
            )

    async def _stream(
        self,
        request: web.BaseRequest,
        upstream: aiohttp.ClientResponse,
        headers: CIMultiDict[str],
        slot: Slot,
    ) -> web.StreamResponse:
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        response.headers.extend(headers)
        if upstream.content_length is not None:
            response.content_length = upstream.content_length
        await response.prepare(request)
        while True:
            try:
                chunk = await upstream.content.readany()
            except (aiohttp.ClientError, TimeoutError) as exc:
                # The client has part of the answer: it cannot be retried, only cut short so
                # it sees the answer incomplete (a stall past stream_timeout_seconds ends here).
                if isinstance(exc, (*EJECTING, aiohttp.ClientPayloadError)):
                    self._eject(slot, exc)
                if request.transport is not None:
                    request.transport.abort()
                return response
            try:
                if not chunk:
                    await response.write_eof()
                    return response
                await response.write(chunk)
            except ConnectionError:
                return response  # the client left; leaving the block closes the upstream
