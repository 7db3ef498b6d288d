"""Length-prefixed msgpack frames: a 4-byte big-endian length, then the body.

The same few functions serve both sides; the daemon wraps them around an anyio stream and the
client around a blocking socket. Decoding validates: a malformed body is a `ProtocolError`
naming what was wrong, never a crash.
"""

from __future__ import annotations

import struct
from typing import Any, Protocol, TypeVar

import msgspec

from stixproto.errors import ProtocolError

HEADER = struct.Struct(">I")
MAX_FRAME = 8 * 1024 * 1024
"""Largest body either side accepts; a task with its envs is far below this."""

T = TypeVar("T")


class Receiver(Protocol):
    """A blocking socket (`socket.socket`, or the `_socket.socket` the client uses)."""

    def recv(self, bufsize: int, /) -> bytes: ...


_encoder = msgspec.msgpack.Encoder()


def encode(msg: object) -> bytes:
    body = _encoder.encode(msg)
    if len(body) > MAX_FRAME:
        raise ProtocolError(
            f"message of {len(body)} bytes exceeds the {MAX_FRAME}-byte frame limit"
        )
    return HEADER.pack(len(body)) + body


def body_length(header: bytes, limit: int = MAX_FRAME) -> int:
    (length,) = HEADER.unpack(header)
    if length > limit:
        raise ProtocolError(f"frame of {length} bytes exceeds the {limit}-byte limit")
    return int(length)


TOO_DEEP = "malformed message: nested too deeply"


def clip(text: str, limit: int = 300) -> str:
    """A decode error quotes the sender's field names: keep replies and log lines short."""
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


def decode(body: bytes, decoder: msgspec.msgpack.Decoder[T]) -> T:
    try:
        return decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"malformed message: {clip(str(exc))}") from None
    except RecursionError:  # msgspec's guard against a deep bomb blowing the C stack
        raise ProtocolError(TOO_DEEP) from None


def peek_protocol(body: bytes) -> int | None:
    """The `protocol` field of a hello frame, read without knowing the rest of its shape.

    A client of another version may have changed every other message; this stays readable so
    the answer to version skew is one clear sentence.
    """
    try:
        raw: Any = msgspec.msgpack.decode(body)
    except (msgspec.DecodeError, RecursionError):
        return None
    if isinstance(raw, dict) and raw.get("type") == "hello":
        version = raw.get("protocol")
        return version if isinstance(version, int) else None
    return None


def recv_exactly(sock: Receiver, n: int) -> bytes:
    chunks: list[bytes] = []
    remaining = n
    while remaining:
        chunk = sock.recv(min(remaining, 1 << 20))
        if not chunk:
            raise ProtocolError("connection closed in the middle of a frame")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def recv_frame(sock: Receiver) -> bytes | None:
    """One frame body from a blocking socket, or None on a clean close between frames."""
    first = sock.recv(HEADER.size)
    if not first:
        return None
    header = (
        first if len(first) == HEADER.size else first + recv_exactly(sock, HEADER.size - len(first))
    )
    return recv_exactly(sock, body_length(header))
