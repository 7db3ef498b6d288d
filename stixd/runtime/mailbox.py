"""Messages an actor receives, and the envelope that lets a request stream back to its caller."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.lowlevel
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream


@dataclass
class Envelope:
    """A request from a client: progress and the final reply go back through `reply`.

    If the client went away, sends are dropped: an actor never blocks on a slow or gone caller.
    """

    payload: Any
    reply: MemoryObjectSendStream[Any] | None = None
    answered: bool = field(default=False)

    def progress(self, event: Any) -> None:
        if self.reply is None:
            return
        with contextlib.suppress(
            anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError
        ):
            self.reply.send_nowait(event)

    def answer(self, final: Any) -> None:
        if self.answered:
            return
        self.answered = True
        self.progress(final)
        if self.reply is not None:
            self.reply.close()


def reply_channel() -> tuple[MemoryObjectSendStream[Any], MemoryObjectReceiveStream[Any]]:
    return anyio.create_memory_object_stream[Any](max_buffer_size=1024)


class Mailbox:
    """Outlives actor restarts, so messages queued for a crashed actor reach its successor.

    `put` never blocks (the queue has no bound: an actor is never held up by another's
    backlog). One reader at a time, the running actor. Light on purpose, since every actor
    has one for its whole life: a queue while messages wait and, while its reader waits, one
    future (a memory object stream pair and its waiting receive cost about 3 KB per actor)."""

    __slots__ = ("_closed", "_queue", "_waiter")

    def __init__(self) -> None:
        self._queue: deque[Any] | None = None
        """Made on the first message and dropped once read: most mailboxes are empty."""
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False

    def put(self, message: Any) -> None:
        """Queue `message`; `anyio.ClosedResourceError` once the mailbox is closed."""
        if self._closed:
            raise anyio.ClosedResourceError
        if self._queue is None:
            self._queue = deque()
        self._queue.append(message)
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> Any:
        """The next message, waiting for one (a checkpoint either way, as a stream's receive);
        `anyio.ClosedResourceError` once the mailbox is closed."""
        await anyio.lowlevel.checkpoint()
        while not self._queue:
            if self._closed:
                raise anyio.ClosedResourceError
            # a bare future of the loop the daemon runs on (asyncio, for aiosqlite)
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                if self._waiter is waiter:
                    self._waiter = None
        if self._closed:
            raise anyio.ClosedResourceError
        message = self._queue.popleft()
        if not self._queue:
            self._queue = None
        return message

    def take_all(self) -> list[Any]:
        """Every message queued and not read, in order; the mailbox is left empty."""
        taken = list(self._queue or ())
        self._queue = None
        return taken

    def __len__(self) -> int:
        return len(self._queue or ())

    def close(self) -> None:
        """No message is put or read from now on; a reader waiting is woken to hear it."""
        self._closed = True
        self._queue = None
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
