"""The balancer's own HTTP/1.1 connections to replicas (`stixd.balancer.upstream`), against a
replica that answers in each of the ways HTTP/1.x allows, raw on a real socket: bodies until the
connection closes, chunked with trailers, interim answers, long ones streamed, keep-alive
connections the replica closes while idle, and answers that are not HTTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from stixd.balancer.proxy import KEEPALIVE_SECONDS
from tests.test_balancer import REPLICA, Bed, bed, client, get

pytestmark = pytest.mark.anyio
__all__ = ["bed"]  # the fixture, shared with tests/test_balancer.py

RAW = r"""
import asyncio, sys
name = sys.argv[2].encode()
BIG = b"x" * 300_000
ANSWERS = {
    b"/until-close": b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n" + BIG,
    b"/chunked": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Replica: " + name
                  + b"\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"),
    b"/interim": (b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
                  b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlate"),
    b"/big": b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BIG) + BIG,
    b"/garbage": b"SPEAKING NONSENSE\r\n\r\n",
    b"/short": b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this",
    b"/junk": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n",
    b"/odd-length": b"HTTP/1.1 200 OK\r\nContent-Length: \xc2\xb2\r\n\r\nok",
    b"/odd-reason": b"HTTP/1.1 200 \xff\xfe\r\nContent-Length: 2\r\n\r\nok",
}
async def on_conn(reader, writer):
    # Keep-alive, but the connection is closed after 0.1 s idle (as uvicorn does after 5 s).
    while True:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 0.1)
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            break
        path = head.split(b" ")[1]
        if path == b"/drop" and name == b"r1":
            break  # closed without a word (no reset), as a pooled connection may be
        answer = ANSWERS.get(path, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n" + name[:2])
        writer.write(answer)
        await writer.drain()
        if path in (b"/until-close", b"/short"):
            break
    writer.close()
async def main():
    server = await asyncio.start_server(on_conn, "127.0.0.1", int(sys.argv[1]))
    await server.serve_forever()
asyncio.run(main())
"""


KEEPING = r"""
import asyncio, sys
open_now = 0
async def on_conn(reader, writer):  # never closes a connection itself
    global open_now
    open_now += 1
    try:
        while head := await reader.readuntil(b"\r\n\r\n"):
            if head.startswith(b"GET /slow "):
                await asyncio.sleep(0.3)
            body = str(open_now).encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body))
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        open_now -= 1
async def main():
    server = await asyncio.start_server(on_conn, "127.0.0.1", int(sys.argv[1]))
    await server.serve_forever()
asyncio.run(main())
"""


async def test_answers_framed_every_way_http_allows_come_through_whole(bed: Bed) -> None:
    lb = await bed.balancer()
    await lb.set_ready([await bed.replica(1, RAW)])
    async with client() as s:
        async with s.get(lb.endpoint + "/until-close") as r:
            assert r.status == 200 and await r.read() == b"x" * 300_000
        async with s.get(lb.endpoint + "/chunked") as r:
            assert (r.status, await r.read()) == (200, b"hello world")
            assert r.headers["X-Replica"] == "r1"
        async with s.get(lb.endpoint + "/interim") as r:
            assert (r.status, await r.read()) == (200, b"late")
        async with s.get(lb.endpoint + "/big") as r:
            assert r.headers["Content-Length"] == "300000"
            assert await r.read() == b"x" * 300_000
        for _ in range(3):  # bytes past an answer's end: its connection is not used again
            assert await get(s, lb.endpoint + "/junk") == (200, "ok")
            assert await get(s, lb.endpoint + "/") == (200, "r1")
    assert (await lb.take_traffic()).suspects == ()


async def test_connections_the_replica_closes_without_answering_are_not_held_against_it(
    bed: Bed,
) -> None:
    lb = await bed.balancer(policy="round_robin")
    await lb.set_ready([await bed.replica(1, RAW), await bed.replica(2, RAW)])
    async with client() as s:
        for _ in range(4):  # each replica in turn closes the connection pooled to it, idle
            assert (await get(s, lb.endpoint + "/"))[0] == 200
            await asyncio.sleep(0.2)
        for _ in range(4):  # replica 1 closes it on reading the request: it goes to 2
            assert await get(s, lb.endpoint + "/drop") == (200, "r2")
    assert (await lb.take_traffic()).suspects == ()


async def test_an_answer_that_is_not_http_is_a_502_and_one_cut_short_ejects(bed: Bed) -> None:
    lb = await bed.balancer()
    await lb.set_ready([await bed.replica(1, RAW)])
    async with client() as s:
        for path in ("/garbage", "/odd-length"):
            status, text = await get(s, lb.endpoint + path)
            assert status == 502 and "unreadable" in text
        async with s.get(lb.endpoint + "/odd-reason") as r:  # the standard phrase instead
            assert (r.status, r.reason, await r.read()) == (200, "OK", b"ok")
        status, text = await get(s, lb.endpoint + "/short")  # 9 of 100 bytes, then closed
        assert status == 502
    assert (await lb.take_traffic()).suspects == (1,)


async def test_a_chunked_request_body_reaches_the_replica_whole(bed: Bed) -> None:
    lb = await bed.balancer()
    await lb.set_ready([await bed.replica(1, REPLICA)])

    async def body() -> AsyncIterator[bytes]:  # no length given: the client sends it chunked
        for i in range(50):
            yield b"%d," % i * 1000

    async with client() as s, s.post(lb.endpoint + "/echo", data=body()) as r:
        assert r.status == 200
        assert await r.read() == b"".join(b"%d," % i * 1000 for i in range(50))


async def test_many_clients_share_few_connections_and_every_answer_is_its_own(bed: Bed) -> None:
    lb = await bed.balancer(policy="round_robin")
    await lb.set_ready([await bed.replica(1, REPLICA), await bed.replica(2, REPLICA)])
    deadline = time.monotonic() + 20
    async with client() as s:

        async def echo(i: int) -> bytes:
            assert time.monotonic() < deadline
            async with s.post(lb.endpoint + "/echo", data=b"request %d" % i) as r:
                return await r.read()

        answers = await asyncio.gather(*(echo(i) for i in range(400)))
    assert answers == [b"request %d" % i for i in range(400)]


async def test_idle_connections_are_closed_after_the_keepalive_with_no_request_to_prompt_it(
    bed: Bed,
) -> None:
    lb = await bed.balancer()
    await lb.set_ready([await bed.replica(1, KEEPING)])
    async with client() as s:
        await asyncio.gather(*(get(s, lb.endpoint + "/slow") for _ in range(8)))  # 8 at once
        assert int((await get(s, lb.endpoint + "/open"))[1]) == 8
        deadline = time.monotonic() + 2 * KEEPALIVE_SECONDS + 5
        while int((await get(s, lb.endpoint + "/open"))[1]) > 1:  # only the one asking is left
            assert time.monotonic() < deadline, "idle connections to the replica stayed open"
            await asyncio.sleep(0.5)
