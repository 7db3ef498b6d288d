"""A request for an actor another live replica runs, answered by that replica.

Each replica records in the `replicas` table, with a heartbeat, its Unix socket and, when it
serves one, its HTTP API's address (stixd/control/replicas.py). The request is sent to the
owner as a client would send it, narrowed to the one actor asked (`down a b` asks each
cluster's owner about its own, `serve down a b` each service's), and its progress and final
reply are relayed. A launch or exec goes detached: the owner answers when the job is
submitted, and the asking replica follows its logs as for its own clusters (the nodes are
reachable from every replica). Reads never come here: every replica answers them from the
shared database.

Over HTTP (whenever the owner serves its API: the one path that works between hosts) or over
the owner's Unix socket (a replica that serves no HTTP API, reached from its own host only),
the request carries the deployment's replica secret (made once in the shared database) and the
principal it is asked for (stixd/control/replica_auth.py): in two headers, or in the socket's
hello. The owner trusts that principal only behind the secret, so neither a client's token nor
a plain client of the socket can pose as a replica, and checks the request again as that
principal's. The files a request names (a workdir, local mounts) are handed to the owner first
(stixd/control/handoff.py).
"""

from __future__ import annotations

import contextlib
import os
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import msgspec
from anyio.streams.buffered import BufferedByteReceiveStream

from stixd.control.identity import Principal
from stixd.control.replica_auth import ON_BEHALF_HEADER, REPLICA_HEADER
from stixd.control.server import read_frame
from stixproto import PROTOCOL_VERSION
from stixproto import messages as m
from stixproto.edge import request_body
from stixproto.errors import DaemonUnavailable, error_from_code
from stixproto.framing import HEADER, MAX_FRAME, body_length, decode, encode

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
    if "names" in fields:  # `serve down a b`, `jobs pool down a b`: each owner its own
        changes["names"] = [id_]
    if "all" in fields:
        changes["all"] = False
    if isinstance(payload, m.Launch | m.Exec):
        changes["detach"] = True
    return msgspec.structs.replace(payload, **changes) if changes else payload


@dataclass(frozen=True, slots=True)
class Hop:
    """What an HTTP forward carries besides the request: the deployment's secret, who asked,
    and the certificates an owner's HTTPS is checked against (None: the system's)."""

    secret: str
    principal: Principal
    cafile: str | None = None


async def call(address: str, request: Any, emit: Emit, hop: Hop | None = None) -> Any:
    """Send `request` to the replica reached at `address` (an HTTP(S) URL, or a Unix socket's
    path); relay its progress, return its final reply (an error reply raised as its error)."""
    if address.startswith(("http://", "https://")):
        if hop is None:
            raise DaemonUnavailable(f"the replica at {address} is reached over HTTP only")
        return await _over_http(address, request, emit, hop)
    return await _over_socket(address, request, emit, hop)


def _on_behalf(principal: Principal) -> str:
    return f"{principal.name} {principal.role.value}"


async def _over_socket(address: str, request: Any, emit: Emit, hop: Hop | None) -> Any:
    body = request_body(request, tasks_checked=True)
    hello = m.Hello(protocol=PROTOCOL_VERSION, client="stixd")
    if hop is not None:  # as the user who asked, not as the owner's own admin
        hello = m.Hello(
            protocol=PROTOCOL_VERSION,
            client="stixd",
            replica=hop.secret,
            on_behalf=_on_behalf(hop.principal),
        )
    try:
        with anyio.fail_after(CONNECT_SECONDS):
            stream = await anyio.connect_unix(address)
    except (OSError, TimeoutError) as exc:
        raise _unreachable(address, exc) from None
    async with stream:
        # the hello and the request in one write: a replica that refuses the hello answers and
        # closes, and a second write could meet the closed socket instead of the answer; a
        # refusal before it read all of a large request is read below, where it says why
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
            await stream.send(encode(hello) + HEADER.pack(len(body)) + body)
        reader = BufferedByteReceiveStream(stream)

        async def frame() -> bytes | None:
            return await read_frame(reader)

        return await _relay(address, frame, emit)


async def _over_http(url: str, request: Any, emit: Emit, hop: Hop) -> Any:
    import aiohttp  # only a replica that forwards over HTTP pays for the import

    from stixd.control.http_api import FRAMES, PROTOCOL_HEADER, REQUEST_PATH

    headers = {
        PROTOCOL_HEADER: str(PROTOCOL_VERSION),
        REPLICA_HEADER: hop.secret,
        ON_BEHALF_HEADER: _on_behalf(hop.principal),
        "Content-Type": FRAMES,
    }
    tls: ssl.SSLContext | bool = True
    if url.startswith("https://") and hop.cafile:
        tls = ssl.create_default_context(cafile=os.path.expanduser(hop.cafile))
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_SECONDS)
    body = request_body(request, tasks_checked=True)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(url + REQUEST_PATH, data=body, headers=headers, ssl=tls) as resp,
        ):
            if resp.content_type != FRAMES:  # not a stixd's API there (a proxy, a wrong port)
                raise DaemonUnavailable(
                    f"the replica that runs this ({url}) answered HTTP {resp.status} "
                    f"({resp.content_type}), not as stixd; check its `api` address"
                )

            async def frame() -> bytes | None:
                try:
                    header = await resp.content.readexactly(HEADER.size)
                except EOFError:  # asyncio.IncompleteReadError: closed before a frame
                    return None
                return await resp.content.readexactly(body_length(header, MAX_FRAME))

            return await _relay(url, frame, emit)
    except (OSError, aiohttp.ClientError) as exc:
        raise _unreachable(url, exc) from None


async def _relay(address: str, frame: Callable[[], Awaitable[bytes | None]], emit: Emit) -> Any:
    while True:
        body = await frame()
        if body is None:
            raise DaemonUnavailable(
                f"the replica that runs this ({address}) closed before answering; try again"
            )
        item = decode(body, _REPLIES)
        if isinstance(item, m.HelloOk):
            continue
        if isinstance(item, m.ErrorReply):
            raise error_from_code(item.code, item.message)
        if isinstance(item, m.FINAL_REPLIES):
            return item
        await emit(item)


def _unreachable(address: str, exc: BaseException) -> DaemonUnavailable:
    return DaemonUnavailable(
        f"the replica that runs this ({address}) cannot be reached ({exc}); "
        "try again once its lease has passed to another replica"
    )
