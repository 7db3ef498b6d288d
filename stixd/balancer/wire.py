"""The control protocol between the daemon and a balancer: msgpack frames behind a 4-byte length.

Every frame carries the protocol version; a frame that is too long, does not decode, or names
another version fails its connection only (the balancer answers `Failed` once and closes).
"""

from __future__ import annotations

import math
import struct
from urllib.parse import urlsplit

import msgspec

VERSION = 1
MAX_FRAME = 16 * 1024 * 1024
"""Arrivals of a long absence of the daemon fit (`MAX_ARRIVALS` floats), a ready set easily."""
MAX_REPLICAS = 4096
MAX_ARRIVALS = 500_000
HEADER = struct.Struct(">I")


class ProtocolBroken(Exception):
    """A frame that cannot be read: the connection it came on is dropped."""


class Replica(msgspec.Struct, frozen=True):
    replica_id: int
    url: str
    version: int = 1
    accelerator: str | None = None
    weight: float = 1.0

    def __post_init__(self) -> None:
        if not 0 <= self.replica_id < 2**31 or not 0 <= self.version < 2**31:
            raise ValueError("replica_id and version are 0 .. 2**31-1")
        if not (math.isfinite(self.weight) and 0 < self.weight <= 1e6):
            raise ValueError("weight is a finite number in (0, 1e6]")
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname or len(self.url) > 2048:
            raise ValueError(f"replica url {self.url[:80]!r} is not http(s)://host:port")
        if self.accelerator is not None and len(self.accelerator) > 256:
            raise ValueError("accelerator name longer than 256 characters")


# -- requests, daemon -> balancer --------------------------------------------------------------


class Hello(msgspec.Struct, tag=True, frozen=True):
    """Who are you: answered with `Welcome`."""


class SetReady(msgspec.Struct, tag=True, frozen=True):
    replicas: list[Replica]

    def __post_init__(self) -> None:
        if len(self.replicas) > MAX_REPLICAS:
            raise ValueError(f"more than {MAX_REPLICAS} replicas")
        if len({r.replica_id for r in self.replicas}) != len(self.replicas):
            raise ValueError("replica ids repeat")


class TakeTraffic(msgspec.Struct, tag=True, frozen=True):
    ack: int = 0
    """The batch the daemon has received (0: none); an unacknowledged batch is handed out again,
    so a reply lost with its connection loses no count."""


class WaitDemand(msgspec.Struct, tag=True, frozen=True):
    """Answered with `Demand` once a request waits for want of a ready replica."""


class Stop(msgspec.Struct, tag=True, frozen=True):
    """Exit (answered with `Ok` first)."""


class ShowReady(msgspec.Struct, tag=True, frozen=True):
    """Read only: the rotation as the balancer holds it now (answered with `ReadySet`)."""


Request = Hello | SetReady | TakeTraffic | WaitDemand | Stop | ShowReady


# -- answers, balancer -> daemon ---------------------------------------------------------------


class Welcome(msgspec.Struct, tag=True, frozen=True):
    pid: int
    spec_digest: str
    port: int
    ready: int
    """Replicas in the rotation now (0 after a start: the daemon pushes its set)."""
    unacked: int = 0
    """The traffic batch handed out and not acknowledged yet: a daemon that attaches anew takes
    it as received (its predecessor most likely was), so no arrival is counted twice."""


class Ok(msgspec.Struct, tag=True, frozen=True):
    pass


class TrafficBatch(msgspec.Struct, tag=True, frozen=True):
    batch: int
    arrivals: list[float]
    suspects: list[int]
    waiting: int


class Demand(msgspec.Struct, tag=True, frozen=True):
    waiting: int


class Failed(msgspec.Struct, tag=True, frozen=True):
    message: str


class ReadySet(msgspec.Struct, tag=True, frozen=True):
    replicas: list[Replica]


Answer = Welcome | Ok | TrafficBatch | Demand | Failed | ReadySet


class Frame(msgspec.Struct, frozen=True):
    v: int
    body: Request | Answer


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Frame)


def encode(body: Request | Answer) -> bytes:
    payload = _encoder.encode(Frame(VERSION, body))
    if len(payload) > MAX_FRAME:
        raise ProtocolBroken(f"frame of {len(payload)} bytes is over {MAX_FRAME}")
    return HEADER.pack(len(payload)) + payload


def frame_length(header: bytes) -> int:
    (length,) = HEADER.unpack(header)
    if length > MAX_FRAME:
        raise ProtocolBroken(f"frame of {length} bytes is over {MAX_FRAME}")
    return int(length)


def decode(payload: bytes) -> Request | Answer:
    try:
        frame = _decoder.decode(payload)
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
        raise ProtocolBroken(f"bad frame: {str(exc)[:200]}") from None
    except RecursionError:  # nesting in a field the frame's type skips over
        raise ProtocolBroken("bad frame: nested too deep") from None
    if frame.v != VERSION:
        raise ProtocolBroken(f"protocol version {frame.v} (this side speaks {VERSION})")
    return frame.body
