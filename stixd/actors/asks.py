"""Asking a cluster's actor to do something, from a client request or from another actor."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from stixd.actors import quarantine
from stixd.runtime.mailbox import Envelope, reply_channel
from stixd.store.db import Row, RowExists
from stixproto import messages as m
from stixproto.errors import ClusterNotFound, InternalError, StixError, error_from_code
from stixproto.states import ClusterStatus as C

if TYPE_CHECKING:
    from stixd.app import App

Emit = Callable[[Any], Awaitable[None]]


async def ask_cluster(
    app: App, name: str, payload: Any, emit: Emit, *, create: bool = False
) -> Any:
    """Send a request to the cluster's actor and relay its progress until the final reply."""
    row = await app.store.get("cluster", name)
    if row is None:
        stray = await _stray(app, name) if isinstance(payload, m.Down) else None
        if stray is not None:
            why = stray.quarantined or f"no actor kind is called {stray.kind!r}"
            return m.OkReply(await quarantine.remove(app, stray, why))
        if not create:
            raise ClusterNotFound(f"cluster {name!r} does not exist")
        try:
            row = await app.store.insert(
                Row(kind="cluster", id=name, state=C.TERMINATED.value, terminal=True, version=0),
                "created",
            )
        except RowExists:
            row = await app.store.get("cluster", name)
            assert row is not None
    if app.elsewhere is not None:  # several replicas: the one that runs the cluster answers
        forwarded, reply = await app.elsewhere("cluster", name, payload, emit)
        if forwarded:
            return reply
    child = app.supervisor.get("cluster", name)
    if child is not None and child.failed and row.terminal and row.quarantined is None:
        app.supervisor.forget("cluster", name)  # an ended cluster's name starts afresh
        child = None
    if child is None:
        child = app.spawn(row)
    reason = row.quarantined or child.failed
    if reason is not None:
        if isinstance(payload, m.Down):
            return m.OkReply(await quarantine.remove(app, row, reason))
        if isinstance(payload, m.Status):
            return m.OkReply()  # a refresh has nothing to look at
        raise quarantine.refusal(row, reason)
    return await final_reply(app, "cluster", name, payload, emit)


async def final_reply(
    app: App, kind: str, name: str, payload: Any, emit: Emit | None = None
) -> Any:
    """Hand ``payload`` to the running actor ``kind``/``name`` and wait for its final reply,
    relaying what comes before it to ``emit`` (dropped without one); an error reply is raised."""
    send, receive = reply_channel()
    if not app.supervisor.tell(kind, name, Envelope(payload=payload, reply=send)):
        raise InternalError(f"{kind} {name!r} has no actor")
    async with receive:
        async for item in receive:
            if isinstance(item, m.ErrorReply):
                raise error_from_code(item.code, item.message)
            if isinstance(item, m.FINAL_REPLIES):
                return item
            if emit is not None:
                await emit(item)
    raise InternalError(f"{kind} {name!r} stopped before answering")


async def ask_record(
    app: App,
    kind: str,
    name: str,
    payload: Any,
    *,
    missing: StixError,
    removing: bool,
    emit: Emit | None = None,
) -> Any:
    """Ask the actor of a stored storage or volume (started if needed) and wait for its final
    reply; ``missing`` is raised when there is no such row. A damaged row (quarantined, or
    its actor failed) refuses every request but a removal (``removing``), which removes it as
    `down` removes a damaged cluster, and frees its name."""
    row = await app.store.get(kind, name)
    if row is None:
        raise missing
    child = app.supervisor.get(kind, name) or app.spawn(row)
    reason = row.quarantined or child.failed
    if reason is not None:
        if not removing:
            raise quarantine.refusal(row, reason)
        said = await quarantine.remove(app, row, reason)
        settled = await app.store.get(kind, name)
        if settled is not None:  # a removed record leaves no row: its name is free again
            await app.store.delete(settled, "deleted")
        return m.OkReply(said)
    return await final_reply(app, kind, name, payload, emit)


async def _stray(app: App, name: str) -> Row | None:
    """A live row called `name` of a kind no stix writes (its kind column was damaged): it is
    listed with the clusters, so `down NAME` removes it."""
    from stixd.actors import KINDS

    for row in await app.store.live_rows_not_of(KINDS):
        if row.id == name:
            return row
    return None
