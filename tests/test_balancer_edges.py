"""The balancer's edges, each with real processes on real sockets: WebSocket passthrough, requests
that wait while every replica is ejected, and hostile clients, replicas and control connections,
each failing alone while other clients are served."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import msgspec
import pytest

from stixd.balancer import wire
from stixd.balancer.control import FIRST_FRAME_SECONDS
from stixd.balancer.fleet import Fleet
from stixd.balancer.limits import MAX_HEADER_FIELD, MAX_HEADERS, MAX_REQUEST_LINE
from stixd.balancer.link import RemoteBalancer
from stixd.serve.seams import ReadyReplica
from tests.conftest import kill_everything_under
from tests.test_balancer import RESETTING, Bed, client, free_port, get

pytestmark = pytest.mark.anyio

HOLD_SECONDS = 20.0
SHORT_HOLD_SECONDS = 1.0
HEAD_SECONDS = 0.5

WEBSOCKET = r"""
import sys
from aiohttp import web, WSMsgType
name = sys.argv[2]
async def ws(r):
    sock = web.WebSocketResponse(protocols=("chat",))
    await sock.prepare(r)
    await sock.send_str(f"hello from {name}")
    async for msg in sock:
        if msg.type is WSMsgType.TEXT:
            await sock.send_str(f"{name}: {msg.data}")
        elif msg.type is WSMsgType.BINARY:
            await sock.send_bytes(msg.data[::-1])
    return sock
async def hello(r):
    return web.Response(text=name)
app = web.Application()
app.add_routes([web.get("/ws", ws), web.get("/", hello)])
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""

SILENT = r"""
import asyncio, sys
async def on_conn(reader, writer):
    await reader.read(65536)
    await asyncio.sleep(3600)  # accepts, reads, never answers
async def main():
    server = await asyncio.start_server(on_conn, "127.0.0.1", int(sys.argv[1]))
    await server.serve_forever()
asyncio.run(main())
"""


@pytest.fixture
async def bed(tmp_path: Path) -> AsyncIterator[Bed]:
    """As tests/test_balancer.py's, with short head and hold times, under this test's tmp."""
    fleet = Fleet(tmp_path / "serve", hold_seconds=HOLD_SECONDS, head_seconds=HEAD_SECONDS)
    b = Bed(tmp_path, fleet)
    try:
        yield b
    finally:
        await b.fleet.aclose()
        for proc in b.procs.values():
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await asyncio.wait_for(proc.wait(), 5)
        kill_everything_under(tmp_path)
        b.fleet.layout("svc").control.unlink(missing_ok=True)  # under /tmp when tmp_path is long


async def _ws_echo_both_ways(ws: aiohttp.ClientWebSocketResponse, name: str) -> None:
    assert await asyncio.wait_for(ws.receive_str(), 5) == f"hello from {name}"
    await ws.send_str("ping")
    assert await asyncio.wait_for(ws.receive_str(), 5) == f"{name}: ping"
    await ws.send_bytes(b"\x00\x01\x02")
    assert await asyncio.wait_for(ws.receive_bytes(), 5) == b"\x02\x01\x00"


async def test_websocket_messages_pass_both_ways_and_count_as_one_request(bed: Bed) -> None:
    lb = await bed.balancer(policy="round_robin")
    refusing = ReadyReplica(2, f"http://127.0.0.1:{free_port()}")  # nothing listens there
    await lb.set_ready([await bed.replica(1, WEBSOCKET), refusing])
    await lb.take_traffic()
    async with client() as s:
        for _ in range(2):  # one of the two upgrades goes to the refusing replica first
            async with s.ws_connect(lb.endpoint + "/ws", protocols=("chat",)) as ws:
                assert ws.protocol == "chat"  # the replica's choice of the offered protocols
                await _ws_echo_both_ways(ws, "r1")
                await ws.close()
                assert ws.close_code == 1000
        assert await get(s, lb.endpoint + "/") == (200, "r1")  # plain requests go on
    traffic = await lb.take_traffic()
    assert len(traffic.arrivals) == 3  # each socket and the GET, once, retries or not
    assert set(traffic.suspects) == {2}  # once, or again after its backoff ran out


async def test_requests_waiting_when_the_balancer_stops_get_a_503_not_a_reset(bed: Bed) -> None:
    lb = await bed.balancer()  # no replica: requests wait (HOLD_SECONDS)
    async with client() as s:
        waiting = asyncio.create_task(get(s, lb.endpoint + "/"))
        deadline = time.monotonic() + 10
        while (await lb.take_traffic()).waiting == 0:
            assert time.monotonic() < deadline, "the request never waited"
            await asyncio.sleep(0.05)
        await bed.fleet.stop("svc")
        status, text = await asyncio.wait_for(waiting, 10)
    assert (status, text) == (503, "no ready replica and the balancer is stopping; retry\n")


async def test_stopping_the_balancer_closes_its_websockets_at_once(bed: Bed) -> None:
    lb = await bed.balancer()
    await lb.set_ready([await bed.replica(1, WEBSOCKET)])
    async with client() as s, s.ws_connect(lb.endpoint + "/ws") as ws:
        await _ws_echo_both_ways(ws, "r1")
        start = time.monotonic()
        await bed.fleet.stop("svc")
        assert time.monotonic() - start < 3  # an open socket does not hold the stop
        msg = await asyncio.wait_for(ws.receive(), 5)
        assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, 1001)  # going away


async def test_a_dying_replica_closes_the_clients_websocket(bed: Bed) -> None:
    lb = await bed.balancer()
    await lb.set_ready([await bed.replica(1, WEBSOCKET)])
    async with client() as s, s.ws_connect(lb.endpoint + "/ws") as ws:
        await _ws_echo_both_ways(ws, "r1")
        await bed.kill(1)
        msg = await asyncio.wait_for(ws.receive(), 5)
        assert msg.type is aiohttp.WSMsgType.CLOSE
        assert ws.closed and ws.close_code == 1011  # the replica went away


async def test_websocket_through_a_tls_endpoint(bed: Bed) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("no openssl to make a certificate")
    key, cert = bed.root / "key.pem", bed.root / "cert.pem"
    openssl = await asyncio.create_subprocess_exec(
        *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
        *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
        *("-addext", "subjectAltName=IP:127.0.0.1"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert await openssl.wait() == 0
    lb = await bed.balancer(tls_keyfile=str(key), tls_certfile=str(cert))
    await lb.set_ready([await bed.replica(1, WEBSOCKET)])
    trust = ssl.create_default_context(cafile=str(cert))
    wss = "wss" + lb.endpoint.removeprefix("https")
    async with client() as s, s.ws_connect(wss + "/ws", ssl=trust) as ws:
        await _ws_echo_both_ways(ws, "r1")


async def test_requests_wait_while_every_replica_is_ejected_and_go_when_it_is_back(
    bed: Bed,
) -> None:
    lb = await bed.balancer(queue_limit=3)
    port = free_port()
    await lb.set_ready([await bed.replica(1, port=port)])
    await bed.kill(1)  # stopped: the next request's connect is refused and it is ejected
    async with client() as s:
        held = [asyncio.create_task(get(s, lb.endpoint + "/")) for _ in range(3)]
        deadline = time.monotonic() + 5
        while (await lb.take_traffic()).waiting < 3:
            assert time.monotonic() < deadline, "the requests did not wait"
            assert not any(t.done() for t in held), [t.result() for t in held if t.done()]
            await asyncio.sleep(0.02)
        status, text = await get(s, lb.endpoint + "/")  # the queue is full
        assert status == 503 and text == "every replica is failing and 3 requests already wait\n"
        await bed.replica(1, port=port)  # back on the same port, the set unchanged
        assert await asyncio.wait_for(asyncio.gather(*held), 5) == [(200, "r1")] * 3
        assert await get(s, lb.endpoint + "/") == (200, "r1")


async def test_a_request_waits_for_an_ejected_replica_no_longer_than_the_hold(bed: Bed) -> None:
    bed.fleet = Fleet(bed.root / "serve-short", hold_seconds=SHORT_HOLD_SECONDS)
    lb = await bed.balancer()
    await lb.set_ready([await bed.replica(1)])
    await bed.kill(1)
    start = time.monotonic()
    async with client() as s:
        status, text = await get(s, lb.endpoint + "/")
    took = time.monotonic() - start
    assert status == 503 and text.count("\n") == 1 and "retry later" in text
    assert SHORT_HOLD_SECONDS - 0.2 < took < SHORT_HOLD_SECONDS + 3


async def test_requests_do_not_wait_for_a_replica_that_accepts_and_resets(bed: Bed) -> None:
    lb = await bed.balancer()
    await lb.set_ready([await bed.replica(1, RESETTING)])
    async with client() as s:
        for _ in range(2):  # up, it may be fine in a moment: tried, not waited for
            start = time.monotonic()
            status, text = await get(s, lb.endpoint + "/")
            assert (status, text) == (502, "no replica answered (1 tried)\n")
            assert time.monotonic() - start < 10  # far from the hold's 20 s
    assert (await lb.take_traffic()).suspects == (1,)


async def test_a_client_that_never_finishes_its_head_is_dropped_while_others_are_served(
    bed: Bed,
) -> None:
    lb = await bed.balancer()
    await lb.set_ready([await bed.replica(1)])
    port = int(lb.endpoint.rsplit(":", 1)[1])
    slow = socket.create_connection(("127.0.0.1", port), 5)
    try:
        slow.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        start = time.monotonic()
        async with client() as s:
            assert await get(s, lb.endpoint + "/") == (200, "r1")
        slow.settimeout(HEAD_SECONDS + 5)
        assert await asyncio.to_thread(slow.recv, 1024) == b""  # closed by the balancer
        assert time.monotonic() - start < HEAD_SECONDS + 3
    finally:
        slow.close()


def _raw_status(port: int, request: bytes) -> tuple[int, str]:
    with socket.create_connection(("127.0.0.1", port), 5) as sock:
        sock.settimeout(5)
        sock.sendall(request)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


async def test_oversized_request_line_and_headers_get_414_and_431(bed: Bed) -> None:
    lb = await bed.balancer()
    await lb.set_ready([await bed.replica(1)])
    port = int(lb.endpoint.rsplit(":", 1)[1])
    long_path = b"/" + b"a" * MAX_REQUEST_LINE
    status, why = await asyncio.to_thread(
        _raw_status, port, b"GET " + long_path + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    assert (status, why) == (414, f"request line over {MAX_REQUEST_LINE} bytes\n")
    big = b"X-Big: " + b"b" * (MAX_HEADER_FIELD + 1) + b"\r\n"
    status, why = await asyncio.to_thread(
        _raw_status, port, b"GET / HTTP/1.1\r\nHost: x\r\n" + big + b"\r\n"
    )
    assert (status, why) == (431, f"a header over {MAX_HEADER_FIELD} bytes\n")
    many = b"".join(b"X-H%d: 1\r\n" % i for i in range(MAX_HEADERS + 1))
    status, why = await asyncio.to_thread(
        _raw_status, port, b"GET / HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n"
    )
    assert (status, why) == (431, f"more than {MAX_HEADERS} headers\n")
    async with client() as s:
        assert await get(s, lb.endpoint + "/", headers={"X-Fine": "b" * 8000}) == (200, "r1")


async def test_a_silent_replica_times_out_and_the_request_is_retried_on_another(
    bed: Bed,
) -> None:
    lb = await bed.balancer(policy="round_robin", stream_timeout_seconds=0.5)
    silent, good = await bed.replica(1, SILENT), await bed.replica(2)
    await lb.set_ready([silent, good])
    async with client() as s:
        for _ in range(4):  # round robin: every other one is sent to the silent replica first
            start = time.monotonic()
            assert await get(s, lb.endpoint + "/") == (200, "r2")
            assert time.monotonic() - start < 30  # the service's 0.5 s, not SkyServe's 120 s
        await lb.set_ready([silent])  # none left to retry on: a 504 saying why
        status, text = await get(s, lb.endpoint + "/")
        assert status == 504 and text.count("\n") == 1 and "stream timeout (1 tried)" in text
        # a silent replica may be working on it still: a POST is never sent to a second one,
        # and any request to two at most
        await lb.set_ready([silent, good])
        answers = []
        for _ in range(2):  # round robin: one of the two goes to the silent replica first
            async with s.post(lb.endpoint + "/echo", data=b"once") as r:
                answers.append((r.status, await r.text()))
        one_try = "no replica answered within the stream timeout (1 tried)\n"
        assert sorted(answers) == [(200, "once"), (504, one_try)], answers
        others = [await bed.replica(i, SILENT) for i in (3, 4)]
        await lb.set_ready([silent, *others])
        status, text = await get(s, lb.endpoint + "/")
    assert status == 504 and "stream timeout (2 tried)" in text


async def test_a_stream_that_never_ends_is_cut_at_the_stream_timeout_while_others_go_on(
    bed: Bed,
) -> None:
    lb = await bed.balancer(stream_timeout_seconds=0.5)
    await lb.set_ready([await bed.replica(1)])
    async with client() as s:
        start = time.monotonic()
        async with s.get(lb.endpoint + "/stall") as r:
            assert await r.content.readany() == b"first"
            others = [await get(s, lb.endpoint + "/") for _ in range(3)]  # served meanwhile
            with pytest.raises(aiohttp.ClientPayloadError):
                await r.read()  # ended, and seen as incomplete: never taken for a whole answer
        assert time.monotonic() - start < 3
        assert others == [(200, "r1")] * 3
        assert await get(s, lb.endpoint + "/") == (200, "r1")


async def _control(lb: RemoteBalancer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_unix_connection(str(lb.layout.control))


async def test_hostile_control_connections_fail_alone_and_the_balancer_serves_on(
    bed: Bed,
) -> None:
    lb = await bed.balancer()
    await lb.set_ready([await bed.replica(1)])
    mute_reader, mute_writer = await _control(lb)  # connects and never speaks
    nested = b"\x91" * 1000 + b"\xc0"  # a field the frame's type skips, a thousand deep
    hello = b"\x82\xa4type\xa5Hello\xa4junk" + nested
    deep = msgspec.msgpack.encode({"v": wire.VERSION, "body": msgspec.Raw(hello)})
    for junk in (wire.HEADER.pack(len(deep)) + deep, wire.HEADER.pack(wire.MAX_FRAME + 1)):
        reader, writer = await _control(lb)
        writer.write(junk)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 5)  # answered, then closed
        writer.close()
        assert b"Failed" in answer
    async with client() as s:
        assert await get(s, lb.endpoint + "/") == (200, "r1")
    assert len((await lb.take_traffic()).arrivals) == 1  # the daemon's link works meanwhile
    assert await asyncio.wait_for(mute_reader.read(), FIRST_FRAME_SECONDS + 3) == b""
    mute_writer.close()
    assert len((await lb.take_traffic()).arrivals) == 0
