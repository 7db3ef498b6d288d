"""Asking a cluster's actor to do something, from a client request or from another actor."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from stixd.runtime.mailbox import Envelope, reply_channel
from stixd.store.db import Row, RowExists
from stixproto import messages as m
from stixproto.errors import ClusterNotFound, InternalError, error_from_code

if TYPE_CHECKING:
    from stixd.app import App

Emit = Callable[[Any], Awaitable[None]]


async def ask_cluster(
    app: App, name: str, payload: Any, emit: Emit, *, create: bool = False
) -> Any:
    """Send a request to the cluster's actor and relay its progress until the final reply."""
    row = await app.store.get("cluster", name)
    if row is None:
        if not create:
            raise ClusterNotFound(f"cluster {name!r} does not exist")
        try:
            row = await app.store.insert(
                Row(kind="cluster", id=name, state="TERMINATED", terminal=True, version=0),
                "created",
            )
        except RowExists:
            row = await app.store.get("cluster", name)
            assert row is not None
    child = app.supervisor.get("cluster", name)
    if child is None:
        app.spawn(row)
        child = app.supervisor.get("cluster", name)
    if child is None:
        raise InternalError(f"cluster {name!r} has no actor")
    if child.failed:
        raise InternalError(child.failed)
    send, receive = reply_channel()
    app.supervisor.tell("cluster", name, Envelope(payload=payload, reply=send))
    async with receive:
        async for item in receive:
            if isinstance(item, m.ErrorReply):
                raise error_from_code(item.code, item.message)
            if isinstance(item, m.FINAL_REPLIES):
                return item
            await emit(item)
    raise InternalError(f"cluster {name!r} stopped before answering")
