"""The asynchronous flavour of the client: the same frames over asyncio streams (stdlib)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from stixctl.client import (
    LOST,
    ensure_started,
    interpret,
    is_final,
    remote_reply,
    unreachable,
)
from stixctl.endpoint import remote_target
from stixproto import PROTOCOL_VERSION
from stixproto import messages as m
from stixproto.edge import request_body
from stixproto.errors import DaemonUnavailable, ProtocolError
from stixproto.framing import HEADER, body_length, encode
from stixproto.paths import client_catalog_dir, socket_path


async def _open(home: Path, autostart: bool) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    path = str(socket_path(home))
    try:
        return await asyncio.open_unix_connection(path)
    except (FileNotFoundError, ConnectionRefusedError):
        if not autostart:
            raise DaemonUnavailable(f"stixd is not running (no daemon on {path})") from None
    except OSError as exc:
        raise unreachable(Path(path), exc) from None
    await asyncio.to_thread(ensure_started, home)
    return await asyncio.open_unix_connection(path)


async def _receive(reader: asyncio.StreamReader) -> Any:
    try:
        header = await reader.readexactly(HEADER.size)
        body: bytes | None = await reader.readexactly(body_length(header))
    except (asyncio.IncompleteReadError, ProtocolError, OSError):
        body = None
    return interpret(body)


async def astream(
    home: Path, request: Any, *, autostart: bool = True, local: bool = False
) -> AsyncIterator[Any]:
    """Yield the daemon's stream events for `request`, then its final reply (from the remote
    API server when one is configured, unless `local`: `stixctl.endpoint`)."""
    body = request_body(request)  # a bad argument is refused here, before any daemon starts
    remote = None if local else remote_target(home)
    if remote is not None:
        from stixctl.ahttp_client import ahttp_frames
        from stixctl.uploads import with_uploads

        # reading and listing local files blocks: off the event loop
        ask = functools.partial(remote_reply, remote)
        sent = await asyncio.to_thread(with_uploads, request, ask)
        if sent is not request:
            body = request_body(sent)
        frames = ahttp_frames(remote, body)
        try:
            async for frame in frames:
                msg = interpret(frame, type(request))
                yield msg
                if is_final(msg):
                    return
        finally:
            await frames.aclose()  # closes the connection now, not when collected
    reader, writer = await _open(home, autostart)
    try:
        writer.write(encode(m.Hello(protocol=PROTOCOL_VERSION, catalog_dir=client_catalog_dir())))
        with contextlib.suppress(ConnectionError):  # refused: its reason is read next
            await writer.drain()
        await _receive(reader)
        writer.write(HEADER.pack(len(body)) + body)
        await writer.drain()
        while True:
            msg = await _receive(reader)
            yield msg
            if is_final(msg):
                return
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def acall(home: Path, request: Any, *, autostart: bool = True, local: bool = False) -> Any:
    async for msg in astream(home, request, autostart=autostart, local=local):
        if is_final(msg):
            return msg
    raise DaemonUnavailable(LOST)
