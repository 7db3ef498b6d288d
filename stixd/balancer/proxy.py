"""Forwarding one request: choose a replica, stream the body there and the answer back.

A replica that refuses the connection or resets it is ejected (`Pool.failed`) and the request
goes at once to another one, as long as nothing of the answer has reached the client yet; so
does one that stays silent past the stream timeout before its answer's head (not ejected: it may
only be slow). A request body is streamed to the replica; its first `REPLAY_LIMIT` bytes are
kept so that a retry can send it again (a longer body that has started to flow cannot be
retried). When no replica is ready, or every one is ejected and one of them for refusing
connections, requests wait in one bounded queue for one to take them (`_hold`); a WebSocket
upgrade is routed the same way (`stixd.balancer.sockets`).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from stixd.balancer.control import Held
from stixd.balancer.hop import Miss, downstream_headers, one_line, upstream_headers
from stixd.balancer.pool import Arrivals, Pool, Slot
from stixd.balancer.sockets import Sockets, wants_websocket
from stixd.balancer.upstream import (
    Answer,
    Broken,
    Dropped,
    Garbled,
    Refused,
    Silent,
    Target,
    Truncated,
    Upstream,
    UpstreamError,
)
from stixd.balancer.wire import MAX_REPLICAS

REPLAY_LIMIT = 1024 * 1024
KEEPALIVE_SECONDS = 4.0
"""Idle connections to replicas are dropped before uvicorn's 5 s keep-alive ends them, so a
reused connection is rarely one the replica is closing."""
SMALL_ANSWER = 64 * 1024
"""An answer of known length up to this is read whole and sent in one write (cheaper than a
stream, and no slower: it is complete before its first byte could have gone)."""
DEFAULT_STREAM_TIMEOUT = 120.0
"""SkyServe's: the longest a replica may stay silent, before its answer's head or within it,
where the service sets no `load_balancer.stream_timeout_seconds`."""
SILENT_TRIES = 2
"""Replicas a request silent past the stream timeout is sent to at most (a slow model would
otherwise run it on every replica, each after a whole timeout)."""
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
"""RFC 9110's idempotent methods: sent again after a silent replica, the others never."""


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


log = logging.getLogger("stixd.balancer")


@dataclass
class Proxy:
    pool: Pool
    arrivals: Arrivals
    held: Held
    session: aiohttp.ClientSession
    """For WebSockets; plain requests go on the balancer's own connections (`upstream`)."""
    api_keys: tuple[bytes, ...] = ()
    stream_timeout: float | None = None
    connect_timeout: float = 5.0
    hold_seconds: float = 300.0

    def __post_init__(self) -> None:
        stream_timeout = self.stream_timeout or DEFAULT_STREAM_TIMEOUT
        self.upstream = Upstream(self.connect_timeout, stream_timeout, KEEPALIVE_SECONDS)
        self._targets: dict[str, Target] = {}
        self.sockets = Sockets(self.pool, self.session, self._eject, stream_timeout)

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
        if wants_websocket(request):
            return await self._route(lambda slot: self.sockets.attempt(request, slot), None, True)
        if request.headers.get("Expect", "").lower() == "100-continue" and request.version >= (
            1,
            1,
        ):
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # the body may come
        body = ReplayBody(request.content) if request.body_exists else None
        idempotent = request.method in IDEMPOTENT
        return await self._route(lambda slot: self._try(request, slot, body), body, idempotent)

    async def _route(
        self,
        attempt: Callable[[Slot], Awaitable[web.StreamResponse | Miss]],
        body: ReplayBody | None,
        idempotent: bool,
    ) -> web.StreamResponse:
        """Try replicas until one answers; wait while none is ready or every one is out. A
        replica silent past the stream timeout may be working on the request still: it is
        tried on one more only when the method is idempotent."""
        tried: list[Slot] = []
        silent = 0
        deadline = time.monotonic() + self.hold_seconds
        while True:
            slot = self.pool.choose(tried)
            if slot is None:
                if self.pool.slots and not self.pool.worth_waiting():
                    if silent:
                        return one_line(
                            504, f"no replica answered within the stream timeout ({silent} tried)"
                        )
                    return one_line(502, f"no replica answered ({len(tried)} tried)")
                refused = await self._hold(deadline)
                if refused is not None:
                    return refused
                tried = []  # a replica back, or a new set: each may be tried again
                continue
            tried.append(slot)
            answer = await attempt(slot)
            if not isinstance(answer, Miss):
                return answer
            silent += answer is Miss.SILENT
            if answer is Miss.SILENT and (silent >= SILENT_TRIES or not idempotent):
                return one_line(
                    504, f"no replica answered within the stream timeout ({silent} tried)"
                )
            if body is not None and not body.replayable:
                return one_line(502, "the replica failed after the request body was sent")

    async def _hold(self, deadline: float) -> web.Response | None:
        """Wait for a replica to take requests (None: a set came, or an ejected replica is
        back); a 503 when the queue is full or time is up."""
        why = "every replica is failing" if self.pool.slots else "no ready replica"
        if self.held.closing:
            return one_line(503, f"{why} and the balancer is stopping; retry")
        if not self.held.enter():
            return one_line(503, f"{why} and {self.held.limit} requests already wait")
        try:
            left = deadline - time.monotonic()
            if left > 0:
                try:
                    await asyncio.wait_for(self.pool.changed().wait(), left)
                except TimeoutError:
                    pass
                else:
                    if not self.held.closing:
                        return None
                    return one_line(503, f"{why} and the balancer is stopping; retry")
            return one_line(503, f"{why} and none came back in time; retry later")
        finally:
            self.held.leave()

    async def _try(
        self, request: web.BaseRequest, slot: Slot, body: ReplayBody | None
    ) -> web.StreamResponse | Miss:
        """The answer from ``slot``'s replica, or how it missed before any of it was sent."""
        target = self._targets.get(slot.replica.url)
        if target is None:
            if len(self._targets) >= MAX_REPLICAS:
                self._targets.clear()  # replicas come and go: forget the ones long gone
            target = self._targets[slot.replica.url] = Target.of(slot.replica.url)
        headers = upstream_headers(request)
        slot.in_flight += 1
        answer = None
        try:
            answer = await self.upstream.request(
                target,
                request.method,
                request.rel_url.raw_path_qs,
                headers,
                body.chunks() if body is not None else None,
                sized=body is not None and "Content-Length" in request.headers,
            )
            downstream = downstream_headers(answer.headers)
            length = answer.length
            if length is not None and length <= SMALL_ANSWER and request.method != "HEAD":
                data = await answer.read()
                self.pool.succeeded(slot)
                reason = answer.reason or None
                return web.Response(
                    status=answer.status, reason=reason, headers=downstream, body=data
                )
            self.pool.succeeded(slot)
            return await self._stream(request, answer, downstream, slot)
        except (Refused, Broken, Truncated) as exc:
            self._eject(slot, exc)
            return Miss.FAILED
        except Dropped:
            return Miss.FAILED
        except Silent:
            log.warning(
                "replica %d (%s) was silent past the stream timeout",
                slot.replica.replica_id,
                slot.replica.url,
            )
            return Miss.SILENT
        except Garbled as exc:  # an answer that is not HTTP: the replica's fault
            return one_line(502, f"the replica's answer was unreadable: {str(exc)[:100]}")
        finally:
            slot.in_flight -= 1
            if answer is not None:
                self.upstream.give_back(target, answer)

    def _eject(self, slot: Slot, exc: BaseException) -> None:
        refused = isinstance(exc, (Refused, aiohttp.ClientConnectorError))
        out_for = self.pool.failed(slot, refused=refused)
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
        answer: Answer,
        headers: CIMultiDict[str],
        slot: Slot,
    ) -> web.StreamResponse:
        response = web.StreamResponse(status=answer.status, reason=answer.reason or None)
        response.headers.extend(headers)
        if answer.declared is not None:
            response.content_length = answer.declared
        await response.prepare(request)
        chunks = answer.chunks()
        while True:
            try:
                chunk = await anext(chunks, b"")
            except UpstreamError as exc:
                # The client has part of the answer: it cannot be retried, only cut short so
                # it sees the answer incomplete (a stall past stream_timeout_seconds ends here).
                if isinstance(exc, (Broken, Truncated)):
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
                return response  # the client left; the connection to the replica is closed
