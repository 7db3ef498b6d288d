"""The daemon's side of the agent's JSON-lines protocol, over any byte-stream transport."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from anyio.abc import ByteStream
from anyio.streams.buffered import BufferedByteReceiveStream

MAX_LINE = 16 * 1024 * 1024


class AgentUnreachable(Exception):
    """The node's agent did not answer: the node may be stopped, gone or partitioned."""


class AgentError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


Opener = Callable[[], Awaitable[ByteStream]]


class AgentClient:
    """One request per connection: cheap on a Unix socket, and nothing to resynchronise."""

    long_poll_s: float | None = None
    """How long one long poll (``wait``, ``tail``) may be held on this transport; None: the
    caller's own bound, short enough that a node gone silent (no reset, no reply) is noticed
    at the call's deadline within the node grace."""

    def __init__(self, open_stream: Opener, name: str) -> None:
        self._open = open_stream
        self.name = name

    async def call(self, op: str, *, deadline: float = 10.0, **fields: Any) -> dict[str, Any]:
        line = json.dumps({"op": op, **fields}).encode() + b"\n"
        try:
            with anyio.fail_after(deadline):
                stream = await self._open()
                async with stream:
                    await stream.send(line)
                    reader = BufferedByteReceiveStream(stream)
                    raw = await reader.receive_until(b"\n", MAX_LINE)
        except TimeoutError:
            raise AgentUnreachable(
                f"agent {self.name} did not answer {op!r} in {deadline:g}s"
            ) from None
        except (OSError, anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError) as exc:
            raise AgentUnreachable(f"agent {self.name} is unreachable: {exc}") from None
        try:
            reply = json.loads(raw)
        except (ValueError, RecursionError):  # garbage, or nested past the parser's depth
            reply = None
        if not isinstance(reply, dict):  # whatever answers on the agent's socket, it is no agent
            raise AgentError("bad_reply", f"agent {self.name} answered garbage to {op!r}")
        if not reply.get("ok"):
            raise AgentError(str(reply.get("code", "error")), str(reply.get("error", reply)))
        return reply


def unix_agent(path: str) -> AgentClient:
    async def open_stream() -> ByteStream:
        return await anyio.connect_unix(path)

    return AgentClient(open_stream, path)
