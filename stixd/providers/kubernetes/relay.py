"""Connections to Unix sockets in a pod, many at once, over ONE long-lived exec per pod.

The exec runs the in-pod relay (``inpod/relay.py``, framing described there). ``Relay.open_stream``
gives an anyio ``ByteStream`` per connection, so ``AgentClient`` runs over it as over a Unix
socket or an SSH channel: each call its own stream, independent of the others. A relay whose
exec ended (its process killed, the stream cut) is started again by the next ``open_stream``;
streams open on it at that moment fail, and so does every call once the pod is gone, with
``AgentUnreachable``.

Each stream has a window both ways (``inpod/relay.py``): a reader that is slow holds back its
own connection in the pod and no other, and a stream never buffers more than the window. A
relay that breaks the framing (a frame over ``MAX_PAYLOAD``, DATA past a window) is ended at
once with the reason, as if its exec had died.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import TYPE_CHECKING

import anyio
from anyio.abc import ByteStream

from stixd.agent_client import AgentUnreachable
from stixd.providers.kubernetes import inpod
from stixd.providers.kubernetes.exec import (
    STATUS,
    STDERR,
    STDOUT,
    ExecChannel,
    ExecError,
    connect,
    exit_code,
    read_status,
)
from stixd.providers.kubernetes.inpod.relay import (
    CLOSE,
    CREDIT,
    DATA,
    EOF,
    HEADER,
    MAX_PAYLOAD,
    OPEN,
    READY,
    WINDOW,
    WINDOW_BYTES,
)
from stixd.providers.kubernetes.seams import PodRef
from stixd.providers.shared.lazy import lazy_module

if TYPE_CHECKING:
    import aiohttp
    from kubernetes_asyncio.client import ApiClient
else:  # loaded by the first pod exec: a daemon with no Kubernetes does not pay for it
    aiohttp = lazy_module("aiohttp")

START_WITHIN_S = 20.0
SEND_SIZE = 1024 * 1024  # per DATA frame the daemon sends (the relay takes up to 16 MiB)
GRANT_AT = WINDOW_BYTES // 4
"""Bytes a reader takes before more window is granted: fewer, larger WINDOW frames, and the pod
always has at least three quarters of its window to send with."""
CLOSE_WITHIN_S = 2.0
HEARTBEAT_S = 30.0
"""The relay's connection is pinged this often: one a NAT or a proxy dropped without a word is
noticed and started again, instead of every agent call on it running into its deadline."""


class RelayBroken(Exception):
    """The relay in the pod broke the framing: it is ended, with this one-line reason."""


class RelayStream(ByteStream):
    """One connection to a socket in the pod, carried by the relay."""

    def __init__(self, session: _Session, stream_id: int) -> None:
        self._session = session
        self._id = stream_id
        self._inbox: deque[bytes] = deque()
        self.unread = 0
        """Bytes delivered that the reader has not taken (at most the window)."""
        self._taken = 0  # bytes taken that no WINDOW frame has granted back yet
        self._credit = WINDOW_BYTES  # bytes this side may still send before the pod grants
        self._sendable = anyio.Event()
        self._ended: str | None = None
        """None while open; "" when the socket in the pod closed; else why it broke."""
        self._closed = False
        self._wake = anyio.Event()

    # -- from the relay's reader ----------------------------------------------------------

    def deliver(self, data: bytes) -> None:
        if self.unread + self._taken + len(data) > WINDOW_BYTES:
            raise RelayBroken(f"the relay sent past the window of stream {self._id}")
        if self._ended is not None:
            return
        self._inbox.append(data)
        self.unread += len(data)
        self._wake.set()

    def grant(self, more: int) -> None:
        if self._credit + more > WINDOW_BYTES:
            raise RelayBroken(f"the relay granted more than the window of stream {self._id}")
        self._credit += more
        self._sendable.set()

    def end(self, why: str) -> None:
        if self._ended is None:
            self._ended = why
        self._wake.set()
        self._sendable.set()

    # -- ByteStream -----------------------------------------------------------------------

    async def receive(self, max_bytes: int = 65536) -> bytes:
        while not self._inbox:
            if self._closed:
                raise anyio.ClosedResourceError
            if self._ended == "":
                raise anyio.EndOfStream
            if self._ended is not None:
                raise anyio.BrokenResourceError(self._ended)
            self._wake = anyio.Event()
            await self._wake.wait()
        chunk = self._inbox.popleft()
        if len(chunk) > max_bytes:
            chunk, rest = chunk[:max_bytes], chunk[max_bytes:]
            self._inbox.appendleft(rest)
        self.unread -= len(chunk)
        self._taken += len(chunk)
        if self._taken >= GRANT_AT and self._ended is None and not self._closed:
            more, self._taken = self._taken, 0
            with (
                anyio.CancelScope(shield=True),  # a grant lost would shrink the window for good
                anyio.move_on_after(CLOSE_WITHIN_S),
                contextlib.suppress(anyio.BrokenResourceError),
            ):
                await self._session.send_frame(self._id, WINDOW, CREDIT.pack(more))
        return chunk

    async def send(self, item: bytes) -> None:
        view = memoryview(item)
        while view:
            if self._closed:
                raise anyio.ClosedResourceError
            if self._ended:
                raise anyio.BrokenResourceError(self._ended)
            if self._ended == "":
                return  # the socket in the pod closed: nobody takes these bytes
            if self._credit <= 0:  # until the pod has written some to the socket
                self._sendable = anyio.Event()
                await self._sendable.wait()
                continue
            size = min(len(view), self._credit, SEND_SIZE)
            self._credit -= size
            await self._session.send_frame(self._id, DATA, bytes(view[:size]))
            view = view[size:]

    async def send_eof(self) -> None:
        if not self._closed and self._ended is None:
            await self._session.send_frame(self._id, EOF)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        self._sendable.set()
        if self._session.streams.pop(self._id, None) is not None and self._session.dead is None:
            with (
                anyio.CancelScope(shield=True),
                anyio.move_on_after(CLOSE_WITHIN_S),
                contextlib.suppress(anyio.BrokenResourceError),
            ):
                await self._session.send_frame(self._id, CLOSE)


class _Session:
    """One run of the relay: its exec, its open streams, and the task reading its output."""

    def __init__(self, chan: ExecChannel) -> None:
        self.chan = chan
        self.streams: dict[int, RelayStream] = {}
        self.dead: str | None = None
        self.ready = anyio.Event()
        self.reader: asyncio.Task[None] | None = None
        self._stderr = b""

    async def send_frame(self, stream_id: int, kind: int, payload: bytes = b"") -> None:
        if self.dead is not None:
            raise anyio.BrokenResourceError(self.dead)
        try:
            await self.chan.send(HEADER.pack(stream_id, kind, len(payload)) + payload)
        except (ConnectionError, RuntimeError, aiohttp.ClientError) as exc:
            self.die(f"the relay's stream broke: {exc}")
            raise anyio.BrokenResourceError(self.dead) from None

    def die(self, why: str) -> None:
        if self.dead is None:
            tail = self._stderr.decode(errors="replace").strip().splitlines()
            self.dead = f"{why}: {tail[-1][:200]}" if tail else why
        for stream in self.streams.values():
            stream.end(self.dead)
        self.streams.clear()
        self.ready.set()

    async def read(self, pod: PodRef) -> None:
        """Demultiplex the relay's stdout until the exec ends."""
        pending = bytearray()
        why = "the relay's exec ended"
        try:
            async for channel, data in self.chan.frames():
                if channel == STDOUT:
                    pending += data
                    self._dispatch(pending)
                elif channel == STDERR:
                    self._stderr = (self._stderr + data)[-4096:]
                elif channel == STATUS:
                    try:
                        why = (
                            f"the relay ended with exit status {exit_code(read_status(data), pod)}"
                        )
                    except ExecError as exc:
                        why = f"the relay ended: {exc}"
        except (aiohttp.ClientError, ConnectionError, ValueError) as exc:
            why = f"the relay's stream broke: {exc}"
        except RelayBroken as exc:
            why = f"the relay was ended: {exc}"
            self.die(why)
            await self.chan.aclose()  # its exec too: the next call starts a new relay
        finally:
            self.die(why)

    def _dispatch(self, pending: bytearray) -> None:
        while len(pending) >= HEADER.size:
            stream_id, kind, size = HEADER.unpack_from(pending)
            if size > MAX_PAYLOAD:
                mib = MAX_PAYLOAD // 2**20
                raise RelayBroken(f"it sent a frame of {size} bytes, over the {mib} MiB bound")
            if len(pending) < HEADER.size + size:
                return
            payload = bytes(pending[HEADER.size : HEADER.size + size])
            del pending[: HEADER.size + size]
            if kind == READY:
                self.ready.set()
            elif kind == DATA and (stream := self.streams.get(stream_id)) is not None:
                stream.deliver(payload)
            elif kind == WINDOW and (stream := self.streams.get(stream_id)) is not None:
                if size != CREDIT.size:
                    raise RelayBroken(f"it sent a WINDOW frame of {size} bytes")
                stream.grant(CREDIT.unpack(payload)[0])
            elif kind == CLOSE and (stream := self.streams.pop(stream_id, None)) is not None:
                stream.end(payload.decode(errors="replace"))

    async def aclose(self) -> None:
        self.die("the relay was closed")
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.reader
        await self.chan.aclose()


class Relay:
    """The relay of one pod, started on first use and again after it ended."""

    def __init__(self, client: ApiClient, pod: PodRef, *, start_within: float = START_WITHIN_S):
        self.client = client
        self.pod = pod
        self.start_within = start_within
        self._session: _Session | None = None
        self._lock = anyio.Lock()
        self._next_id = 1
        self._closed = False
        self.starts = 0
        """How many times the relay's exec was started (a test and the benchmark read it)."""

    @property
    def alive(self) -> bool:
        """Whether the relay's exec runs now (False before the first use)."""
        return self._session is not None and self._session.dead is None

    async def open_stream(self, path: str) -> ByteStream:
        """A connection to the Unix socket ``path`` in the pod. The connect happens in the pod
        as the first data flows: a socket nobody listens on breaks the stream's first read."""
        session = await self._live()
        stream_id, self._next_id = self._next_id, self._next_id + 1
        stream = RelayStream(session, stream_id)
        session.streams[stream_id] = stream
        await session.send_frame(stream_id, OPEN, path.encode())
        return stream

    async def _live(self) -> _Session:
        async with self._lock:
            if self._closed:
                raise AgentUnreachable(f"{self.pod}: its relay is closed")
            if self._session is not None and self._session.dead is None:
                return self._session
            if self._session is not None:
                await self._session.aclose()
                self._session = None
            self._session = await self._start()
            return self._session

    async def _start(self) -> _Session:
        session: _Session | None = None
        self.starts += 1
        try:
            with anyio.fail_after(self.start_within):
                chan = await connect(
                    self.client, self.pod, inpod.argv("relay"), stdin=True, heartbeat=HEARTBEAT_S
                )
                session = _Session(chan)
                # the reader outlives this call: it belongs to the session, which cancels and
                # awaits it in aclose (the relay has no task group that lives as long as it)
                session.reader = asyncio.get_running_loop().create_task(session.read(self.pod))
                await chan.send(inpod.preamble("relay"))
                await session.ready.wait()
        except TimeoutError:
            why = f"{self.pod}: the relay did not start within {self.start_within:g} s"
            await self._discard(session)
            raise AgentUnreachable(why) from None
        except ExecError as exc:
            raise AgentUnreachable(str(exc)) from None
        except (aiohttp.ClientError, ConnectionError, RuntimeError) as exc:
            await self._discard(session)
            raise AgentUnreachable(f"{self.pod}: the relay's stream broke: {exc}") from None
        except BaseException:
            await self._discard(session)
            raise
        if session.dead is not None:
            why = session.dead
            await self._discard(session)
            raise AgentUnreachable(f"{self.pod}: the relay could not start: {why}")
        return session

    @staticmethod
    async def _discard(session: _Session | None) -> None:
        if session is not None:
            with anyio.CancelScope(shield=True):
                await session.aclose()

    async def aclose(self) -> None:
        async with self._lock:
            self._closed = True
            session, self._session = self._session, None
        await self._discard(session)
