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
import functools
import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import aiohttp
from aiohttp import web

from stixd.balancer.asked import Body, Request
from stixd.balancer.control import Held
from stixd.balancer.hop import (
    Asked,
    Miss,
    Refusal,
    downstream_headers,
    one_line,
    upstream_headers,
)
from stixd.balancer.pool import Arrivals, Pool, Slot
from stixd.balancer.reply import Reply
from stixd.balancer.sockets import Sockets
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
UNAUTHORIZED = Refusal(
    401,
    "this service needs Authorization: Bearer <one of its API keys>\n",
    (("WWW-Authenticate", "Bearer"),),
)
Answered = TypeVar("Answered")
"""What a try gives when a replica answered: nothing more for a plain request (the answer went
out), the relayed socket for a WebSocket."""
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
"""RFC 9110's idempotent methods: sent again after a silent replica, the others never."""


class ReplayBody:
    """The client's body, streamed, with its head kept so a retry can start it over."""

    def __init__(self, body: Body) -> None:
        self._body = body
        self._kept: list[bytes] = []
        self._size = 0
        self.replayable = True

    async def chunks(self) -> AsyncIterator[bytes]:
        for chunk in self._kept:
            yield chunk
        async for chunk in self._body.chunks():
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

    def _authorized(self, request: Asked) -> bool:
        given = request.headers.get("Authorization", "")
        scheme, _, key = given.partition(" ")
        offered = key.strip().encode()
        ok = False
        for wanted in self.api_keys:  # every key compared, each in constant time
            ok |= hmac.compare_digest(offered, wanted)
        return ok and scheme.lower() == "bearer"

    def _refused(self, request: Asked) -> Refusal | None:
        """A 401 when the request lacks a key; else it counts as one for the autoscaler."""
        if self.api_keys and not self._authorized(request):
            return UNAUTHORIZED
        self.arrivals.add(time.time())  # after auth: requests without a key scale nothing up
        return None

    async def handle(self, request: Request, reply: Reply) -> None:
        """A plain request from the front: answered on ``reply``."""
        refusal = self._refused(request)
        if refusal is None:
            if request.headers.get("Expect", "").lower() == "100-continue":
                reply.continue_()  # the body may come
            body = ReplayBody(request.body) if request.body is not None else None
            idempotent = request.method in IDEMPOTENT
            refusal = await self._route(
                lambda slot: self._try(request, reply, slot, body), body, idempotent
            )
        if refusal is not None:
            reply.refuse(refusal)

    async def handle_socket(self, request: web.BaseRequest) -> web.StreamResponse:
        """A WebSocket upgrade, handed over with its connection to aiohttp's server (which
        closes the connection after it)."""
        outcome: web.StreamResponse | Refusal | None = self._refused(request)
        if outcome is None:
            attempt = functools.partial(self.sockets.attempt, request)
            outcome = await self._route(attempt, None, True)
        if isinstance(outcome, Refusal):
            outcome = web.Response(
                status=outcome.status, text=outcome.text, headers=dict(outcome.headers)
            )
        outcome.force_close()
        return outcome

    async def _route(
        self,
        attempt: Callable[[Slot], Awaitable[Answered | Refusal | Miss]],
        body: ReplayBody | None,
        idempotent: bool,
    ) -> Answered | Refusal:
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

    async def _hold(self, deadline: float) -> Refusal | None:
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
        self, request: Request, reply: Reply, slot: Slot, body: ReplayBody | None
    ) -> Refusal | Miss | None:
        """None once ``slot``'s replica answered on ``reply``; else how it missed before any
        of it was sent, or what to tell the client instead."""
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
                request.path,
                headers,
                body.chunks() if body is not None else None,
                sized=body is not None and "Content-Length" in request.headers,
            )
            downstream = downstream_headers(answer.headers)
            length = answer.length
            if length is not None and length <= SMALL_ANSWER and request.method != "HEAD":
                data = await answer.read()
                self.pool.succeeded(slot)
                reply.send(answer.status, answer.reason, downstream, data)
                return None
            self.pool.succeeded(slot)
            await self._stream(reply, answer, downstream, slot)
            return None
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
        self, reply: Reply, answer: Answer, headers: list[tuple[str, str]], slot: Slot
    ) -> None:
        reply.start(answer.status, answer.reason, headers, answer.declared)
        chunks = answer.chunks()
        while True:
            try:
                chunk = await anext(chunks, b"")
            except UpstreamError as exc:
                # The client has part of the answer: it cannot be retried, only cut short so
                # it sees the answer incomplete (a stall past stream_timeout_seconds ends here).
                if isinstance(exc, (Broken, Truncated)):
                    self._eject(slot, exc)
                reply.abort()
                return
            if not chunk:
                reply.end()
                return
            await reply.write(chunk)  # ConnectionError: the client left, the front ends it
