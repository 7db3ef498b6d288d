"""Socket fuzz: over ten thousand malformed frames of every shape, many connections at once.

Afterwards the same daemon answers `status`, no connection ended in an internal error, and its
log holds a bounded number of lines. Frames come from a seeded generator, so a failure repeats.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import struct
import time
from collections.abc import Callable, Iterator

import msgspec
import pytest

from stixproto import PROTOCOL_VERSION
from stixproto import messages as m
from stixproto.errors import StixError
from stixproto.framing import MAX_FRAME, encode
from tests.conftest import Stix

FRAMES = 10_500
WORKERS = 96
IDLE = 1.0
HELLO = encode(m.Hello(protocol=PROTOCOL_VERSION))
_request = msgspec.msgpack.Decoder(m.Request)
_server = msgspec.msgpack.Decoder(m.ServerMessage)
pack = msgspec.msgpack.encode


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def is_request(body: bytes) -> bool:
    """Whether the daemon would act on `body`: such frames are not malformed, never sent."""
    try:
        _request.decode(body)
    except (msgspec.DecodeError, RecursionError, StixError):  # StixError: a message's own check
        return False
    return True


def _value(rng: random.Random, depth: int = 0) -> object:
    kinds = ["int", "str", "float", "none", "bool", "bytes"]
    if depth < 3:
        kinds += ["list", "map"]
    kind = rng.choice(kinds)
    if kind == "int":
        return rng.choice([0, -1, 2**63 - 1, -(2**63), rng.randint(-(10**6), 10**6)])
    if kind == "str":
        return rng.choice(["", "status", "hello", "\u2603" * 5, "x" * rng.randint(0, 300)])
    if kind == "float":
        return rng.choice([float("nan"), float("inf"), -0.0, 1e308])
    if kind == "bytes":
        return rng.randbytes(rng.randint(0, 40))
    if kind == "list":
        return [_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    if kind == "map":
        return {rng.choice(["type", "protocol", "cluster", "x"]): _value(rng, depth + 1)}
    return None if kind == "none" else rng.random() < 0.5


def _deep(rng: random.Random) -> bytes:
    depth = rng.choice([900, 1000, 1100, 2000, 5000, 100_000])
    opener = rng.choice([b"\x91", b"\x81\xa1k", b"\xdc\x00\x01"])
    return opener * depth + b"\xc0"


def _request_shaped(rng: random.Random) -> bytes:
    """A body shaped like a request with one thing wrong: type, field, tag, size or bytes."""
    valid = [
        m.Status(),
        m.Queue(clusters=["c"]),
        m.Logs(cluster="c", job_id=1),
        m.Events(name="c"),
        m.DaemonStatus(),
    ]
    body = bytearray(pack(rng.choice(valid)))
    how = rng.randrange(5)
    if how == 0:  # flip bytes
        for _ in range(rng.randint(1, 4)):
            body[rng.randrange(len(body))] = rng.randrange(256)
    elif how == 1:  # wrong types everywhere
        return pack({"type": rng.choice(["status", "logs", "queue"]), "cluster": _value(rng)})
    elif how == 2:  # unknown tag
        return pack({"type": "no_such_request_" + str(rng.randrange(99)), "x": _value(rng)})
    elif how == 3:  # a huge map inside an Any field, then a bad field after it
        values = {f"k{i}": i for i in range(rng.choice([10, 1000, 50_000]))}
        return pack({"type": "launch", "config": [{"source": "x", "values": values}], "task": 7})
    else:  # cut short
        return bytes(body[: rng.randrange(len(body))])
    return bytes(body)


def _first_frames(rng: random.Random) -> bytes:
    """What a bad client sends as its very first bytes."""
    shape = rng.randrange(8)
    if shape == 0:  # random bytes
        return rng.randbytes(rng.randint(0, 64))
    if shape == 1:  # bad lengths
        return struct.pack(">I", rng.choice([MAX_FRAME + 1, 2**32 - 1, 70_000, 1 << 24]))
    if shape == 2:  # truncated: the header promises more than comes
        return struct.pack(">I", rng.randint(10, 500)) + rng.randbytes(rng.randint(0, 9))
    if shape == 3:  # valid msgpack of the wrong type
        return frame(pack(_value(rng)))
    if shape == 4:  # deep nesting
        return frame(_deep(rng))
    if shape == 5:  # hello with a wrong or missing protocol, or a huge string
        hello = {"type": "hello", "protocol": _value(rng)}
        if rng.random() < 0.3:
            hello["pad"] = "p" * rng.randint(1000, 60_000)
        return frame(pack(hello))
    if shape == 6:  # zero-length and a frame of garbage
        return frame(b"") + frame(rng.randbytes(20))
    return frame(pack([rng.randbytes(8) for _ in range(rng.randint(0, 2000))]))


def _after_hello(rng: random.Random) -> bytes:
    """A valid hello, then garbage of every shape where the request should be."""
    while True:
        shape = rng.randrange(4)
        if shape == 0:
            body = _request_shaped(rng)
        elif shape == 1:
            body = _deep(rng)
        elif shape == 2:
            body = pack(_value(rng))
        else:
            return HELLO + _first_frames(rng)
        if not is_request(body):
            return HELLO + frame(body)


def payloads(seed: int, n: int) -> Iterator[bytes]:
    rng = random.Random(seed)
    makers: list[Callable[[random.Random], bytes]] = [_first_frames, _after_hello]
    for _ in range(n):
        yield rng.choice(makers)(rng)


async def _one(path: str, data: bytes, stats: dict[str, int]) -> None:
    reader, writer = await asyncio.open_unix_connection(path)
    try:
        writer.write(data)
        try:
            await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
        except ConnectionError:
            pass  # the daemon refused before reading all of it: fine
        try:
            answer = await asyncio.wait_for(reader.read(), timeout=IDLE + 10)
        except ConnectionError:
            answer = b""
    finally:
        writer.close()
    stats["frames"] += 1
    while len(answer) >= 4:
        (length,) = struct.unpack(">I", answer[:4])
        reply = _server.decode(answer[4 : 4 + length])
        answer = answer[4 + length :]
        assert isinstance(reply, (m.HelloOk, m.ErrorReply)), reply
        if isinstance(reply, m.ErrorReply):
            stats[reply.code] = stats.get(reply.code, 0) + 1


async def _idle_and_half_open(path: str, n: int) -> int:
    """Connections that say nothing, or half a header; the daemon must close each one."""
    conns = [await asyncio.open_unix_connection(path) for _ in range(n)]
    for i, (_r, w) in enumerate(conns):
        if i % 2:
            w.write(b"\x00\x00")
    closed = 0
    for r, w in conns:
        # EOF: the daemon gave up on us; a broken pipe says the same of a connection it closed
        # before our half header was sent (the opening of forty took longer than IDLE)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            await asyncio.wait_for(r.read(), timeout=IDLE + 10)
        closed += 1
        w.close()
    return closed


async def fuzz(path: str, seed: int) -> dict[str, int]:
    stats = {"frames": 0}
    queue = iter(payloads(seed, FRAMES))

    async def worker() -> None:
        for data in queue:
            await _one(path, data, stats)

    idle = asyncio.create_task(_idle_and_half_open(path, 40))
    await asyncio.gather(*(worker() for _ in range(WORKERS)))
    stats["idle_closed"] = await idle
    return stats


@pytest.fixture
def daemon(stix: Stix) -> Iterator[Stix]:
    stix.env["STIX__DAEMON__CLIENT_IDLE_SECONDS"] = str(IDLE)
    stix.run("daemon", "start", check=True)
    yield stix


def test_ten_thousand_malformed_frames_leave_the_daemon_serving(daemon: Stix) -> None:
    pid = daemon.daemon_pid()
    log = daemon.home / "stixd.log"
    log_before = log.stat().st_size
    started = time.monotonic()
    stats = asyncio.run(fuzz(str(daemon.home / "stixd.sock"), seed=12))
    took = time.monotonic() - started
    assert stats["frames"] == FRAMES and stats["idle_closed"] == 40
    assert stats.get("internal", 0) == 0, stats
    assert stats.get("protocol", 0) > FRAMES // 2, stats
    assert took < 240, f"fuzzing took {took:.0f}s"  # a stall per frame or connection: hours
    assert daemon.run("status", check=True).returncode == 0
    assert daemon.daemon_pid() == pid
    added = log.read_bytes()[log_before:].decode().splitlines()
    events = [json.loads(line)["event"] for line in added]
    assert "connection_failed" not in events and "request_failed" not in events, events
    assert len(added) < 100 and log.stat().st_size - log_before < 50_000, events[:20]
