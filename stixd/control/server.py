"""The Unix socket: peer check, framing, handshake, then one request per connection.

Nothing a client sends can take the daemon down: a bad frame gets one `ErrorReply` naming the
problem and the connection is closed; every other connection carries on. Whatever goes wrong in
one connection (silence, a bomb, a vanished or stalled client, a bug of ours) ends that
connection only; lines a client can cause are logged within a budget.

Whoever reaches the socket is the daemon's own user, an admin; but a hello carrying the
deployment's replica secret is another replica's forward, and its request runs as the user
that replica asked for (stixd/control/replica_auth.py), checked again here.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import msgspec
from anyio.abc import SocketAttribute, SocketListener, SocketStream, TaskStatus
from anyio.streams.buffered import BufferedByteReceiveStream

from stixd.app import VERSION, App
from stixd.control.catalog_cmds import CATALOG_REQUESTS, check_client_catalog
from stixd.control.identity import PRINCIPAL, Principal
from stixd.control.loglimit import LogBudget
from stixd.control.replica_auth import check_forwarded, forwarded_principal
from stixd.runtime.actor import error_reply
from stixproto import PROTOCOL_VERSION
from stixproto import messages as m
from stixproto.edge import decode_request
from stixproto.errors import (
    DaemonUnavailable,
    PermissionDenied,
    ProtocolError,
    StixError,
    VersionMismatch,
)
from stixproto.framing import HEADER, body_length, decode, encode, peek_protocol

HELLO_MAX = 64 * 1024
"""Largest first frame read before the client has said hello (a hello is a few dozen bytes)."""

_HELLO = msgspec.msgpack.Decoder(m.Hello)
Emit = Callable[[Any], Awaitable[None]]
Handler = Callable[[App, Any, Emit], Awaitable[Any]]


class ClientGone(Exception):
    """The client closed, reset or stopped reading: nothing more can be told to it."""


_GONE = (
    ClientGone,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.EndOfStream,
    ConnectionError,
)


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _cause(exc: Exception) -> BaseException | None:
    """What to tell and log about `exc`: its first leaf that is not the client leaving."""
    return next((e for e in _leaves(exc) if not isinstance(e, _GONE)), None)


def peer_uid(stream: SocketStream) -> int | None:
    sock: socket.socket = stream.extra(SocketAttribute.raw_socket)
    if hasattr(socket, "SO_PEERCRED"):
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", creds)
        return int(uid)
    getpeereid = getattr(os, "getpeereid", None)  # not in the stdlib; BSD/macOS via LOCAL_PEERCRED
    return int(getpeereid(sock.fileno())[0]) if getpeereid else None


async def read_frame(
    reader: BufferedByteReceiveStream, limit: int | None = None, idle: float | None = None
) -> bytes | None:
    """One frame body, or None on a clean close before it; `idle` bounds the whole frame."""
    with anyio.move_on_after(idle if idle is not None else float("inf")) as waited:
        try:
            header = await reader.receive_exactly(HEADER.size)
        except anyio.IncompleteRead:
            return None
        length = body_length(header) if limit is None else body_length(header, limit)
        try:
            return await reader.receive_exactly(length)
        except anyio.IncompleteRead:
            raise ProtocolError(
                f"truncated frame: expected {length} bytes, the connection closed"
            ) from None
    assert waited.cancelled_caught
    raise ProtocolError(f"nothing received for {idle:g}s; closing the connection")


REFUSING_MAX = 32
"""Connections past the limit told why at once; more than these are closed without a word."""

# accept() failures that a flood of clients causes; waiting a moment lets connections finish
_ACCEPT_BACKOFF = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM, errno.ECONNABORTED}


class ControlServer:
    def __init__(self, app: App, path: Path, dispatch: Handler) -> None:
        self.app = app
        self.path = path
        self.dispatch = dispatch
        self.log = app.log.bind(part="control")
        self.budget = LogBudget(self.log)
        self.open = 0
        self.refusing = 0
        limits = app.config.daemon
        self.max_connections = limits.max_connections
        self.idle = limits.client_idle_seconds
        self.stall = limits.client_stall_seconds
        self.hello_ok = encode(
            m.HelloOk(protocol=PROTOCOL_VERSION, daemon_pid=os.getpid(), version=VERSION)
        )  # the same for every connection: encoded once

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        if len(str(self.path).encode()) > 104:
            raise SystemExit(
                f"stixd: socket path {self.path} is too long for a Unix socket; "
                "set a shorter STIX_HOME"
            )
        self.path.unlink(missing_ok=True)
        listener = await anyio.create_unix_listener(self.path, mode=0o600)
        async with listener, anyio.create_task_group() as tg:
            tg.start_soon(self.budget.flush_periodically)
            task_status.started()
            await self._accept_forever(listener, tg)

    async def _accept_forever(self, listener: SocketListener, tg: anyio.abc.TaskGroup) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno not in _ACCEPT_BACKOFF:
                    raise
                self.budget.warning("accept_failed", error=os.strerror(exc.errno))
                await anyio.sleep(0.1)
                continue
            if self.open < self.max_connections:
                self.open += 1
                tg.start_soon(self._connection, stream)
                continue
            self.budget.warning("connection_refused", open=self.open, limit=self.max_connections)
            if self.refusing < REFUSING_MAX:
                self.refusing += 1
                tg.start_soon(self._refuse, stream)
            else:  # a flood past the limit: no task, no reason, just closed
                with anyio.move_on_after(0.1), contextlib.suppress(Exception):
                    await stream.aclose()

    async def _refuse(self, stream: SocketStream) -> None:
        """Tell a client past the limit why, in one line.

        Its hello is read first: closing with it unread would reset the connection, and the
        client might lose the reason before reading it.
        """
        busy = DaemonUnavailable(
            f"stixd is serving {self.open} connections, its limit (daemon.max_connections); "
            "try again in a moment, or raise the limit in config.yaml"
        )
        try:
            with anyio.move_on_after(1), contextlib.suppress(Exception):
                async with stream:
                    await stream.receive()
                    await stream.send(encode(error_reply(busy)))
        finally:
            self.refusing -= 1

    async def _send(self, stream: SocketStream, msg: Any) -> None:
        """Send `msg` (or a frame already encoded) within the stall limit."""
        with anyio.move_on_after(self.stall) as waited:
            try:
                await stream.send(msg if isinstance(msg, bytes) else encode(msg))
            except _GONE as exc:
                raise ClientGone() from exc
        if waited.cancelled_caught:
            self.budget.warning("client_stalled", seconds=self.stall)
            raise ClientGone(f"took nothing of its replies for {self.stall:g}s")

    async def _connection(self, stream: SocketStream) -> None:
        try:
            async with stream:
                try:
                    await self._converse(stream)
                except Exception as exc:
                    await self._fail(stream, exc)
        except Exception as exc:  # closing a socket whose client is gone
            if _cause(exc) is not None:
                self.budget.exception("connection_close_failed")
        finally:
            self.open -= 1

    async def _fail(self, stream: SocketStream, exc: Exception) -> None:
        """End one connection: tell the client why when it can still hear, log it, go on."""
        cause = _cause(exc)
        if cause is None:
            return  # the client went away; its request (if any) was cancelled
        if isinstance(cause, StixError):
            self.budget.warning("bad_client", error=cause.message)
            reply = error_reply(cause)
        else:
            self.budget.exception("connection_failed", error=repr(cause))
            reply = m.ErrorReply(
                code="internal",
                message=f"stixd failed on this connection ({type(cause).__name__}); "
                "see `stixctl daemon logs`",
            )
        with anyio.move_on_after(1), contextlib.suppress(Exception):
            await stream.send(encode(reply))

    async def _converse(self, stream: SocketStream) -> None:
        uid = peer_uid(stream)
        if uid is not None and uid != os.getuid():
            raise PermissionDenied(
                f"stixd serves uid {os.getuid()} only; connection from uid {uid} refused"
            )
        reader = BufferedByteReceiveStream(stream)
        body = await read_frame(reader, HELLO_MAX, self.idle)
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
        hello = decode(body, _HELLO)
        forwarder: Principal | None = None
        if hello.replica is not None or hello.on_behalf is not None:  # another replica's
            forwarder = forwarded_principal(
                self.app.replica_secret, hello.replica or "", hello.on_behalf or ""
            )
        await self._send(stream, self.hello_ok)
        body = await read_frame(reader, idle=self.idle)
        if body is None:
            return
        request = decode_request(body)
        if forwarder is not None:
            check_forwarded(self.app, forwarder, request)
        token = PRINCIPAL.set(forwarder) if forwarder is not None else None
        try:
            await self._serve_request(stream, reader, request, hello)
        finally:
            if token is not None:
                PRINCIPAL.reset(token)

    async def _serve_request(
        self,
        stream: SocketStream,
        reader: BufferedByteReceiveStream,
        request: Any,
        hello: m.Hello,
    ) -> None:
        async def emit(event: Any) -> None:
            await self._send(stream, event)

        timeout = self.app.config.daemon.request_timeout_seconds
        if isinstance(request, m.Launch) and request.retry_until_up:
            timeout = float("inf")  # until capacity appears; the client's Ctrl-C ends it
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
                    if isinstance(request, CATALOG_REQUESTS):
                        check_client_catalog(self.app, hello.catalog_dir)
                    reply = await self.dispatch(self.app, request, emit)
            except TimeoutError:
                reply = m.ErrorReply(
                    code="internal", message=f"request timed out after {timeout:g}s"
                )
            except Exception as exc:
                if _cause(exc) is None:
                    raise  # the client is gone: there is no one to answer
                if not isinstance(exc, StixError):
                    self.budget.exception("request_failed", request=type(request).__name__)
                reply = error_reply(exc)
            await self._send(stream, reply)
            tg.cancel_scope.cancel()
        if isinstance(request, m.Shutdown):
            self.app.shutdown.set()  # only now: the client has its answer
