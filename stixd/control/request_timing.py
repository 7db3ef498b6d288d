"""How long each request takes, by its type: the one place the socket and the HTTP API both
pass through (`ApiServing.dispatch`, which every request of either reaches), so a request is
timed once whichever server took it.

The time is the handler's: from the decoded request to its final reply (a launch that follows
its job's logs counts until the job ends). A request whose client left is timed until it was
cancelled. The label is the request's wire tag (`status`, `launch`, ...): a finite set, since
only the types `stixproto.messages` knows are ever decoded.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from stixd.app import App

S = TypeVar("S")
Emit = Callable[[Any], Awaitable[None]]
Dispatch = Callable[[S, App, Any, Emit], Awaitable[Any]]


def request_name(req: object) -> str:
    tag = getattr(type(req), "__struct_config__", None)
    return tag.tag if tag is not None and isinstance(tag.tag, str) else type(req).__name__


def timed(dispatch: Dispatch[S]) -> Dispatch[S]:
    """`dispatch` (a method taking the app, the request and its emit) with every call timed
    into `app.metrics`, and counted in flight while it runs."""

    @functools.wraps(dispatch)
    async def run(self: S, app: App, req: Any, emit: Emit) -> Any:
        name = request_name(req)
        metrics = app.metrics
        metrics.began(name)
        start = time.perf_counter()
        try:
            return await dispatch(self, app, req, emit)
        finally:
            metrics.ended(name, time.perf_counter() - start)

    return run
