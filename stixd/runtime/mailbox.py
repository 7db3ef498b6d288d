"""Messages an actor receives, and the envelope that lets a request stream back to its caller."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any

import anyio
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
    """Outlives actor restarts, so messages queued for a crashed actor reach its successor."""

    def __init__(self) -> None:
        self.send, self.receive = anyio.create_memory_object_stream[Any](max_buffer_size=math.inf)

    def put(self, message: Any) -> None:
        self.send.send_nowait(message)

    def close(self) -> None:
        self.send.close()
        self.receive.close()
