"""The balancer's front (`stixd.balancer.front`), spoken to raw on a real socket: what aiohttp's
server did for it before — a one-line 400 for a head it cannot read, heads that never end,
idle keep-alive connections, pipelined requests answered in order, HTTP/1.0 clients, chunked
request bodies, and a client that leaves mid-stream freeing its replica connection."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httptools
import pytest

from stixd.balancer.fleet import Fleet
from stixd.balancer.front import UNFINISHED_HEADER, origin_form
from tests.conftest import kill_everything_under
from tests.test_balancer import Bed

pytestmark = pytest.mark.anyio

HEAD_SECONDS = 0.5
REPO = Path(__file__).resolve().parents[1]

# Answers GET with a chunked stream that never ends and notes, in a file, each connection the
# balancer closes on it.
STREAMING = r"""
import asyncio, sys
from pathlib import Path
root = Path(sys.argv[3])
async def on_conn(reader, writer):
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
    await writer.drain()
    await reader.read()  # until the balancer closes this connection
    (root / f"closed-{id(writer)}").touch()
async def main():
    server = await asyncio.start_server(on_conn, "127.0.0.1", int(sys.argv[1]))
    await server.serve_forever()
asyncio.run(main())
"""


@pytest.fixture
async def bed() -> AsyncIterator[Bed]:
    root = Path(tempfile.mkdtemp(prefix="lbf", dir="/tmp"))
    b = Bed(root, Fleet(root / "serve", head_seconds=HEAD_SECONDS))
    try:
        yield b
    finally:
        await b.fleet.aclose()
        for proc in b.procs.values():
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await asyncio.wait_for(proc.wait(), 5)
        kill_everything_under(root)
        shutil.rmtree(root, ignore_errors=True)


class Answers:
    """HTTP/1.1 answers parsed off the bytes a client received."""

    def __init__(self) -> None:
        self.done: list[tuple[int, dict[str, str], bytes]] = []
        self._parser = httptools.HttpResponseParser(self)
        self._headers: dict[str, str] = {}
        self._body = b""

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode().lower()] = value.decode()

    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        self.done.append((self._parser.get_status_code(), self._headers, self._body))
        self._headers, self._body = {}, b""

    def feed(self, data: bytes) -> None:
        self._parser.feed_data(data)


class Raw:
    """A client on a plain socket to the balancer."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), 5)
        self.sock.settimeout(5)
        self.answers = Answers()

    def send(self, *pieces: bytes) -> None:
        for piece in pieces:
            self.sock.sendall(piece)

    def read(self, count: int) -> list[tuple[int, dict[str, str], bytes]]:
        """Until ``count`` answers are in."""
        while len(self.answers.done) < count:
            data = self.sock.recv(65536)
            assert data, f"closed after {len(self.answers.done)} of {count} answers"
            self.answers.feed(data)
        return self.answers.done[:count]

    def rest(self, seconds: float = 5) -> bytes:
        """Everything until the balancer closes the connection (AssertionError if it does not
        within ``seconds``)."""
        self.sock.settimeout(seconds)
        out = b""
        try:
            while data := self.sock.recv(65536):
                out += data
        except TimeoutError:
            raise AssertionError(f"still open after {seconds} s") from None
        return out

    def close(self) -> None:
        self.sock.close()


def port_of(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


async def served(bed: Bed) -> int:
    lb = await bed.balancer()
    await lb.set_ready([await bed.replica(1)])
    return port_of(lb.endpoint)


def _one(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    raw = Raw(port)
    try:
        raw.send(request)
        return raw.read(1)[0]
    finally:
        raw.close()


@pytest.mark.parametrize(
    "junk",
    [
        b"NOT HTTP AT ALL\r\n\r\n",
        b"GET / HTTP/1.1\r\nno colon in this header\r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
)
async def test_a_head_or_body_that_cannot_be_read_gets_a_one_line_400_and_a_close(
    bed: Bed, junk: bytes
) -> None:
    port = await served(bed)
    raw = Raw(port)
    try:
        raw.send(junk)
        status, headers, text = raw.read(1)[0]
        assert status == 400 and headers["connection"] == "close"
        assert text.startswith(b"malformed request: ") and text.count(b"\n") == 1
        raw.rest()  # and the connection is closed
    finally:
        raw.close()
    status, _, body = await asyncio.to_thread(_one, port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (status, body) == (200, b"r1")  # other clients are served on


async def test_a_header_that_never_ends_gets_431_before_its_end(bed: Bed) -> None:
    port = await served(bed)
    raw = Raw(port)
    try:
        raw.send(b"GET / HTTP/1.1\r\nX-Long: ", b"a" * (UNFINISHED_HEADER + 1000))
        status, _, text = (await asyncio.to_thread(raw.read, 1))[0]
        assert (status, text) == (431, b"a header over 16380 bytes\n")
    finally:
        raw.close()


async def test_an_idle_keep_alive_connection_is_closed_after_the_head_time(bed: Bed) -> None:
    port = await served(bed)
    raw = Raw(port)
    try:
        raw.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await asyncio.to_thread(raw.read, 1))[0][2] == b"r1"
        start = time.monotonic()
        assert await asyncio.to_thread(raw.rest, HEAD_SECONDS + 3) == b""
        assert time.monotonic() - start >= HEAD_SECONDS * 0.8  # kept for the time, not less
    finally:
        raw.close()


def _post(body: bytes) -> bytes:
    return b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body)


def _chunked(*chunks: bytes) -> bytes:
    framed = b"".join(b"%x;ext=1\r\n%b\r\n" % (len(c), c) for c in chunks)
    head = b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    return head + framed + b"0\r\nX-Trailer: t\r\n\r\n"


async def test_pipelined_requests_are_answered_in_the_order_they_came(bed: Bed) -> None:
    port = await served(bed)
    requests = [
        _post(b"one"),
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        _chunked(b"th", b"ree"),
        _post(b"x" * 100_000),
        _post(b"five"),
    ]
    wanted = [b"one", b"r1", b"three", b"x" * 100_000, b"five"]
    whole = b"".join(requests)
    for pieces in ([whole], [whole[i : i + 7] for i in range(0, len(whole), 7)]):
        raw = Raw(port)
        try:
            await asyncio.to_thread(raw.send, *pieces)
            answers = await asyncio.to_thread(raw.read, len(requests))
            assert [body for _, _, body in answers] == wanted
        finally:
            raw.close()


async def test_a_chunked_request_body_is_forwarded_whole_and_the_connection_kept(
    bed: Bed,
) -> None:
    port = await served(bed)
    raw = Raw(port)
    try:
        chunks = [b"%d," % i * 500 for i in range(40)]
        await asyncio.to_thread(raw.send, _chunked(*chunks), _post(b"after"))
        answers = await asyncio.to_thread(raw.read, 2)
        assert [body for _, _, body in answers] == [b"".join(chunks), b"after"]
    finally:
        raw.close()


async def test_http_1_0_clients_get_answers_framed_for_them(bed: Bed) -> None:
    port = await served(bed)
    raw = Raw(port)
    try:  # no keep-alive asked: the answer, then the connection closes
        raw.send(b"GET / HTTP/1.0\r\n\r\n")
        answer = await asyncio.to_thread(raw.rest)
        assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"\r\n\r\nr1")
        assert b"Connection: close\r\n" in answer
    finally:
        raw.close()
    raw = Raw(port)
    try:  # a stream of unknown length: not chunked, it ends with the connection
        raw.send(b"GET /sse HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        answer = await asyncio.to_thread(raw.rest)
        assert b"chunked" not in answer.lower()
        assert answer.endswith(b"\r\n\r\ndata: 0\n\ndata: 1\n\ndata: 2\n\n")
    finally:
        raw.close()
    raw = Raw(port)
    try:  # keep-alive asked: kept, and said so
        for _ in range(2):
            raw.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        answers = await asyncio.to_thread(raw.read, 2)
        assert [(s, h["connection"], b) for s, h, b in answers] == [(200, "keep-alive", b"r1")] * 2
    finally:
        raw.close()


async def test_connection_close_and_other_upgrades_are_answered_then_closed(bed: Bed) -> None:
    port = await served(bed)
    for head in (b"Connection: close\r\n", b"Connection: Upgrade\r\nUpgrade: h2c\r\n"):
        raw = Raw(port)
        try:
            raw.send(b"GET http://x/?q=1 HTTP/1.1\r\nHost: x\r\n" + head + b"\r\n")
            status, headers, body = (await asyncio.to_thread(raw.read, 1))[0]
            assert (status, headers["connection"], body) == (200, "close", b"r1")
            await asyncio.to_thread(raw.rest)
        finally:
            raw.close()


async def test_a_client_leaving_mid_stream_closes_its_replica_connection_at_once(
    bed: Bed,
) -> None:
    lb = await bed.balancer()
    await lb.set_ready([await bed.replica(1, STREAMING)])
    for left in range(1, 3):
        raw = Raw(port_of(lb.endpoint))
        try:
            raw.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            got = b""
            while b"first" not in got:
                got += await asyncio.to_thread(raw.sock.recv, 65536)
        finally:
            raw.close()
        deadline = time.monotonic() + 5
        while len(list(bed.root.glob("closed-*"))) < left:
            assert time.monotonic() < deadline, "the replica's connection stayed open"
            await asyncio.sleep(0.02)


def test_a_target_written_whole_reaches_the_replica_as_its_path_and_query() -> None:
    assert origin_form(b"http://h:8/p/a?x=1#f") == b"/p/a?x=1"
    assert origin_form(b"https://h") == b"/"
    assert origin_form(b"/p?x") == b"/p?x" and origin_form(b"*") == b"*"


def test_the_daemon_imports_neither_uvloop_nor_httptools() -> None:
    """They are the balancer process's alone (its own dependencies, never loaded at start)."""
    probe = "import sys, stixd.daemon; print(sorted({'uvloop', 'httptools'} & set(sys.modules)))"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
