"""The Unix socket: peer check, framing, handshake, then one request per connection.

Nothing a client sends can take the daemon down: a bad frame gets one `ErrorReply` naming the
problem and the connection is closed; every other connection carries on.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import SocketAttribute, SocketStream, TaskStatus
from anyio.streams.buffered import BufferedByteReceiveStream

from stixd.app import VERSION, App
from stixd.runtime.actor import error_reply
from stixproto import PROTOCOL_VERSION
from stixproto import messages as m
from stixproto.edge import decode_request
from stixproto.errors import PermissionDenied, ProtocolError, StixError, VersionMismatch
from stixproto.framing import HEADER, body_length, encode, peek_protocol

HELLO_TIMEOUT = 10.0

Emit = Callable[[Any], Awaitable[None]]
Handler = Callable[[App, Any, Emit], Awaitable[Any]]


def peer_uid(stream: SocketStream) -> int | None:
    sock: socket.socket = stream.extra(SocketAttribute.raw_socket)
    if hasattr(socket, "SO_PEERCRED"):
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", creds)
        return int(uid)
    getpeereid = getattr(os, "getpeereid", None)  # not in the stdlib; BSD/macOS via LOCAL_PEERCRED
    return int(getpeereid(sock.fileno())[0]) if getpeereid else None


async def read_frame(reader: BufferedByteReceiveStream) -> bytes | None:
    try:
        header = await reader.receive_exactly(HEADER.size)
    except anyio.IncompleteRead:
        return None
    length = body_length(header)
    try:
        return await reader.receive_exactly(length)
    except anyio.IncompleteRead:
        raise ProtocolError(
            f"truncated frame: expected {length} bytes, the connection closed"
        ) from None


class ControlServer:
    def __init__(self, app: App, path: Path, dispatch: Handler) -> None:
        self.app = app
        self.path = path
        self.dispatch = dispatch
        self.log = app.log.bind(part="control")

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        if len(str(self.path).encode()) > 104:
            raise SystemExit(
                f"stixd: socket path {self.path} is too long for a Unix socket; "
                "set a shorter STIX_HOME"
            )
        self.path.unlink(missing_ok=True)
        listener = await anyio.create_unix_listener(self.path, mode=0o600)
        async with listener:
            task_status.started()
            await listener.serve(self._connection)

    async def _send(self, stream: SocketStream, msg: Any) -> None:
        await stream.send(encode(msg))

    async def _connection(self, stream: SocketStream) -> None:
        async with stream:
            try:
                await self._converse(stream)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream):
                pass  # the client went away; its request (if any) was cancelled
            except StixError as exc:
                self.log.info("bad_client", error=exc.message)
                with (
                    anyio.move_on_after(1),
                    contextlib.suppress(
                        anyio.BrokenResourceError, anyio.ClosedResourceError, OSError
                    ),
                ):
                    await self._send(stream, error_reply(exc))

    async def _converse(self, stream: SocketStream) -> None:
        uid = peer_uid(stream)
        if uid is not None and uid != os.getuid():
            raise PermissionDenied(
                f"stixd serves uid {os.getuid()} only; connection from uid {uid} refused"
            )
        reader = BufferedByteReceiveStream(stream)
        with anyio.fail_after(HELLO_TIMEOUT):
            body = await read_frame(reader)
        if body is None:
            return
        theirs = peek_protocol(body)
        if theirs is None:
            raise ProtocolError("expected a hello frame first; is this a stixctl client?")
        if theirs != PROTOCOL_VERSION:
            raise VersionMismatch(
                f"stixctl speaks protocol {theirs} but the running stixd {VERSION} speaks "
                f"protocol {PROTOCOL_VERSION}: restart the daemon with `stixctl daemon stop` "
                "and run the command again, or use the stixctl that came with it"
            )
        await self._send(
            stream, m.HelloOk(protocol=PROTOCOL_VERSION, daemon_pid=os.getpid(), version=VERSION)
        )
        body = await read_frame(reader)
        if body is None:
            return
        request = decode_request(body)
        await self._serve_request(stream, reader, request)

    async def _serve_request(
        self, stream: SocketStream, reader: BufferedByteReceiveStream, request: Any
    ) -> None:
        async def emit(event: Any) -> None:
            await self._send(stream, event)

        timeout = self.app.config.daemon.request_timeout_seconds
        async with anyio.create_task_group() as tg:

            async def cancel_when_client_leaves() -> None:
                try:
                    extra = await reader.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                    extra = b""
                if not extra:
                    tg.cancel_scope.cancel()

            tg.start_soon(cancel_when_client_leaves)
            try:
                with anyio.fail_after(timeout):
                    reply = await self.dispatch(self.app, request, emit)
            except TimeoutError:
                reply = m.ErrorReply(
                    code="internal", message=f"request timed out after {timeout:g}s"
                )
            except Exception as exc:
                if not isinstance(exc, StixError):
                    self.log.exception("request_failed", request=type(request).__name__)
                reply = error_reply(exc)
            await self._send(stream, reply)
            tg.cancel_scope.cancel()
        if isinstance(request, m.Shutdown):
            self.app.shutdown.set()  # only now: the client has its answer
