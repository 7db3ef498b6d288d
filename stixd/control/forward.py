"""A request for an actor another live replica runs, answered by that replica.

Replicas share a host's Unix sockets (each records its socket in the `replicas` table with a
heartbeat, stixd/control/replicas.py); the request is sent to the owner as a client would send
it, narrowed to the one actor asked (`down a b` asks each cluster's owner about its own), and
its progress and final reply are relayed. A launch or exec goes detached: the owner answers
when the job is submitted, and the asking replica follows its logs as for its own clusters
(the nodes are reachable from every replica). Reads never come here: every replica answers
them from the shared database.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import msgspec
from anyio.streams.buffered import BufferedByteReceiveStream

from stixd.control.server import read_frame
from stixproto import PROTOCOL_VERSION
from stixproto import messages as m
from stixproto.edge import request_body
from stixproto.errors import DaemonUnavailable, error_from_code
from stixproto.framing import HEADER, decode, encode

Emit = Callable[[Any], Awaitable[None]]

CONNECT_SECONDS = 5.0
_REPLIES = msgspec.msgpack.Decoder(m.ServerMessage)
_REQUESTS: tuple[type, ...] = m.Request.__args__


def narrowed(payload: Any, id_: str) -> Any | None:
    """`payload` as the request the owner of `id_` is sent, or None if it is none a client
    sends (an actor's own message: answered where the actor runs, or not at all)."""
    if not isinstance(payload, _REQUESTS) or not isinstance(payload, msgspec.Struct):
        return None
    fields = type(payload).__struct_fields__
    changes: dict[str, Any] = {}
    if "clusters" in fields:
        changes["clusters"] = [id_]
    if "all" in fields:
        changes["all"] = False
    if isinstance(payload, m.Launch | m.Exec):
        changes["detach"] = True
    return msgspec.structs.replace(payload, **changes) if changes else payload


async def call(address: str, request: Any, emit: Emit) -> Any:
    """Send `request` to the replica listening at `address`; relay its progress, return its
    final reply (an error reply raised as its error)."""
    body = request_body(request, tasks_checked=True)
    try:
        with anyio.fail_after(CONNECT_SECONDS):
            stream = await anyio.connect_unix(address)
    except (OSError, TimeoutError) as exc:
        raise DaemonUnavailable(
            f"the replica that runs this ({address}) cannot be reached ({exc}); "
            "try again once its lease has passed to another replica"
        ) from None
    async with stream:
        await stream.send(encode(m.Hello(protocol=PROTOCOL_VERSION, client="stixd")))
        await stream.send(HEADER.pack(len(body)) + body)
        reader = BufferedByteReceiveStream(stream)
        while True:
            frame = await read_frame(reader)
            if frame is None:
                raise DaemonUnavailable(
                    f"the replica that runs this ({address}) closed before answering; try again"
                )
            item = decode(frame, _REPLIES)
            if isinstance(item, m.HelloOk):
                continue
            if isinstance(item, m.ErrorReply):
                raise error_from_code(item.code, item.message)
            if isinstance(item, m.FINAL_REPLIES):
                return item
            await emit(item)
