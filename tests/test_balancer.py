"""The load balancer as a process: real replicas (aiohttp servers in their own processes), a real
balancer started by the daemon's `Fleet`, real clients. Every process is killed at teardown."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import ssl
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import msgspec
import pytest

from stixd.balancer import wire
from stixd.balancer.fleet import Fleet
from stixd.balancer.link import RemoteBalancer
from stixd.balancer.server import ORPHAN_CHECK_SECONDS
from stixd.serve.seams import BalancerSpec, ReadyReplica
from tests.conftest import kill_everything_under, pid_alive

pytestmark = pytest.mark.anyio

REPLICA = r"""
import asyncio, json, sys
from aiohttp import web
name = sys.argv[2]
async def hello(r):
    return web.Response(text=name)
async def echo(r):
    return web.Response(body=await r.read(), headers={"X-Replica": name})
async def headers(r):
    return web.json_response({k: v for k, v in r.headers.items()})
async def sse(r):
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(r)
    for i in range(3):
        await resp.write(f"data: {i}\n\n".encode())
        await asyncio.sleep(0.5)
    await resp.write_eof()
    return resp
async def stall(r):
    resp = web.StreamResponse()
    await resp.prepare(r)
    await resp.write(b"first")
    await asyncio.sleep(60)
    return resp
app = web.Application()
app.add_routes([web.get("/", hello), web.post("/echo", echo), web.get("/headers", headers),
                web.get("/sse", sse), web.get("/stall", stall)])
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""

RESETTING = r"""
import asyncio, socket, struct, sys
async def on_conn(reader, writer):
    await reader.read(65536)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
async def main():
    server = await asyncio.start_server(on_conn, "127.0.0.1", int(sys.argv[1]))
    await server.serve_forever()
asyncio.run(main())
"""


def _framed(payload: bytes) -> bytes:
    return wire.HEADER.pack(len(payload)) + payload


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
        return True
    return False


@dataclass
class Bed:
    """Replica processes and a fleet of balancers under one throw-away directory."""

    root: Path
    fleet: Fleet
    procs: dict[int, asyncio.subprocess.Process] = field(default_factory=dict)

    async def replica(
        self, replica_id: int, source: str = REPLICA, port: int | None = None
    ) -> ReadyReplica:
        port = port or free_port()
        self.procs[replica_id] = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-c", source, str(port), f"r{replica_id}", str(self.root)),
            start_new_session=True,  # so the teardown's kill by process group spares pytest
        )
        deadline = time.monotonic() + 15
        while not _answers(port):
            assert time.monotonic() < deadline, "replica did not start"
            await asyncio.sleep(0.02)
        return ReadyReplica(replica_id, f"http://127.0.0.1:{port}")

    async def kill(self, replica_id: int) -> None:
        proc = self.procs[replica_id]
        proc.send_signal(signal.SIGKILL)
        await asyncio.wait_for(proc.wait(), 5)

    async def balancer(self, **spec: object) -> RemoteBalancer:
        return await self.fleet.ensure(BalancerSpec(service="svc", port=0, **spec))  # type: ignore[arg-type]


@pytest.fixture
async def bed() -> AsyncIterator[Bed]:
    root = Path(tempfile.mkdtemp(prefix="lb", dir="/tmp"))
    b = Bed(root, Fleet(root / "serve"))
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


@contextlib.asynccontextmanager
async def client(**kw: object) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(**kw) as session:  # type: ignore[arg-type]
        yield session


async def get(session: aiohttp.ClientSession, url: str, **kw: object) -> tuple[int, str]:
    async with session.get(url, **kw) as r:  # type: ignore[arg-type]
        return r.status, await r.text()


async def test_request_is_routed_to_a_ready_replica_and_counted(bed: Bed) -> None:
    lb = await bed.balancer()
    await lb.set_ready([await bed.replica(1)])
    async with client() as s:
        for _ in range(5):
            assert await get(s, lb.endpoint + "/") == (200, "r1")
    traffic = await lb.take_traffic()
    assert len(traffic.arrivals) == 5
    assert all(abs(t - time.time()) < 60 for t in traffic.arrivals)
    assert (await lb.take_traffic()).arrivals == ()  # each arrival is handed out once


async def test_round_robin_spreads_requests_over_replicas(bed: Bed) -> None:
    lb = await bed.balancer(policy="round_robin")
    await lb.set_ready([await bed.replica(1), await bed.replica(2)])
    async with client() as s:
        names = [(await get(s, lb.endpoint + "/"))[1] for _ in range(10)]
    assert names.count("r1") == names.count("r2") == 5


async def test_headers_are_rewritten_for_the_replica(bed: Bed) -> None:
    lb = await bed.balancer()
    replica = await bed.replica(1)
    await lb.set_ready([replica])
    async with client() as s:
        sent = {"Connection": "keep-alive, X-Secret-Hop", "X-Secret-Hop": "1", "X-Kept": "yes"}
        async with s.get(lb.endpoint + "/headers", headers=sent) as r:
            seen = await r.json()
    assert seen["Host"] == replica.url.removeprefix("http://")
    assert seen["X-Forwarded-For"] == "127.0.0.1"
    assert seen["X-Kept"] == "yes"
    assert "X-Secret-Hop" not in seen


async def test_head_keeps_its_length_and_expect_continue_is_answered(bed: Bed) -> None:
    lb = await bed.balancer()
    await lb.set_ready([await bed.replica(1)])
    async with client() as s:
        async with s.head(lb.endpoint + "/") as r:
            assert r.status == 200 and r.headers["Content-Length"] == "2"
        body = b"x" * 200_000
        post = s.post(lb.endpoint + "/echo", data=body, expect100=True)
        async with await asyncio.wait_for(post, 2) as r:  # waits for the 100 Continue
            assert await r.read() == body


async def test_killed_replica_under_load_fails_no_request_and_is_ejected_at_once(
    bed: Bed,
) -> None:
    lb = await bed.balancer()
    await lb.set_ready([await bed.replica(1), await bed.replica(2)])
    await lb.take_traffic()
    failures: list[str] = []
    done = 0
    stop = asyncio.Event()

    async def load(s: aiohttp.ClientSession) -> None:
        nonlocal done
        while not stop.is_set():
            try:
                status, _ = await get(s, lb.endpoint + "/")
                if status != 200:
                    failures.append(str(status))
            except aiohttp.ClientError as exc:
                failures.append(repr(exc))
            done += 1

    async with client() as s:
        workers = [asyncio.create_task(load(s)) for _ in range(8)]
        await asyncio.sleep(0.5)  # steady load before the kill
        killed_at = time.monotonic()
        await bed.kill(2)
        ejected_after = None
        while time.monotonic() - killed_at < 5:
            if 2 in (await lb.take_traffic()).suspects:
                ejected_after = time.monotonic() - killed_at
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.5)  # keep the load on the survivor a while
        stop.set()
        await asyncio.gather(*workers)
    assert failures == []
    assert done > 50
    assert ejected_after is not None and ejected_after < 0.5


async def test_replica_that_resets_connections_is_ejected_and_requests_retried(bed: Bed) -> None:
    lb = await bed.balancer(policy="round_robin")
    await lb.set_ready([await bed.replica(1, RESETTING), await bed.replica(2)])
    async with client() as s:
        for i in range(6):
            async with s.post(lb.endpoint + "/echo", data=f"body {i}".encode()) as r:
                assert r.status == 200
                assert await r.read() == f"body {i}".encode()
                assert r.headers["X-Replica"] == "r2"
    assert (await lb.take_traffic()).suspects == (1,)  # ejected once, out for its backoff
    assert "replica 1 (http://127.0.0.1:" in lb.layout.log.read_text()


async def test_server_sent_events_pass_through_chunk_by_chunk(bed: Bed) -> None:
    lb = await bed.balancer()
    await lb.set_ready([await bed.replica(1)])
    async with client() as s, s.get(lb.endpoint + "/sse") as r:
        assert r.headers["Content-Type"] == "text/event-stream"
        start = time.monotonic()
        seen: list[tuple[float, bytes]] = []
        async for chunk in r.content.iter_any():
            seen.append((time.monotonic() - start, chunk))
    assert b"".join(c for _, c in seen) == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"
    assert seen[0][0] < 0.45  # the first event came before the replica wrote the second
    assert seen[-1][0] > 0.9


async def test_stream_timeout_cuts_a_stalled_stream(bed: Bed) -> None:
    lb = await bed.balancer(stream_timeout_seconds=0.5)
    await lb.set_ready([await bed.replica(1)])
    start = time.monotonic()
    async with client() as s, s.get(lb.endpoint + "/stall") as r:
        assert await r.content.readany() == b"first"
        with pytest.raises(aiohttp.ClientPayloadError):
            await r.read()
    assert time.monotonic() - start < 5


async def test_requests_wait_at_zero_replicas_and_go_once_a_set_is_pushed(bed: Bed) -> None:
    lb = await bed.balancer(queue_limit=2)
    replica = await bed.replica(1)
    async with client() as s:
        held = [asyncio.create_task(get(s, lb.endpoint + "/")) for _ in range(2)]
        await asyncio.wait_for(lb.wait_for_demand(), 10)
        deadline = time.monotonic() + 10
        while (await lb.take_traffic()).waiting < 2:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        status, text = await get(s, lb.endpoint + "/")  # a third one overflows the queue
        assert status == 503 and text.count("\n") == 1
        assert not any(t.done() for t in held)
        await lb.set_ready([replica])
        assert await asyncio.wait_for(asyncio.gather(*held), 10) == [(200, "r1")] * 2


async def test_api_key_is_required_when_the_service_has_keys(bed: Bed) -> None:
    lb = await bed.balancer(api_keys=("k-one", "k-two"))
    await lb.set_ready([await bed.replica(1)])
    async with client() as s:
        assert (await get(s, lb.endpoint + "/"))[0] == 401
        bad = {"Authorization": "Bearer k-three"}
        assert (await get(s, lb.endpoint + "/", headers=bad))[0] == 401
        good = {"Authorization": "Bearer k-two"}
        assert await get(s, lb.endpoint + "/", headers=good) == (200, "r1")
    assert len((await lb.take_traffic()).arrivals) == 1  # refused requests scale nothing up


async def test_tls_endpoint_serves_with_the_given_certificate(bed: Bed) -> None:
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
    assert lb.endpoint.startswith("https://127.0.0.1:")
    await lb.set_ready([await bed.replica(1)])
    trust = ssl.create_default_context(cafile=str(cert))
    async with client() as s:
        assert await get(s, lb.endpoint + "/", ssl=trust) == (200, "r1")
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await get(s, lb.endpoint + "/")  # not trusted without the certificate


async def test_malformed_control_frames_fail_their_connection_only(bed: Bed) -> None:
    lb = await bed.balancer()
    await lb.set_ready([await bed.replica(1)])
    for junk in (
        wire.HEADER.pack(wire.MAX_FRAME + 1),  # oversized
        wire.HEADER.pack(5) + b"\xc1\xc1\xc1\xc1\xc1",  # not msgpack
        wire.encode(wire.Hello())[:-1] + b"\x07",  # an unknown message
        _framed(msgspec.msgpack.encode(wire.Frame(wire.VERSION + 1, wire.Hello()))),
    ):
        reader, writer = await asyncio.open_unix_connection(str(lb.layout.control))
        writer.write(junk)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 5)  # answered, then closed
        writer.close()
        assert b"Failed" in answer
    async with client() as s:
        assert await get(s, lb.endpoint + "/") == (200, "r1")
    assert len((await lb.take_traffic()).arrivals) == 1


async def test_changed_spec_replaces_the_balancer_on_the_same_port_dropping_nothing(
    bed: Bed,
) -> None:
    lb = await bed.balancer()
    await lb.set_ready([await bed.replica(1)])
    first = int(lb.layout.pid.read_text())
    failures: list[str] = []
    stop = asyncio.Event()

    async def load(s: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            try:
                status, text = await get(s, lb.endpoint + "/")
                if (status, text) != (200, "r1"):
                    failures.append(f"{status} {text}")
            except aiohttp.ClientError as exc:
                failures.append(repr(exc))

    async with client() as s:
        workers = [asyncio.create_task(load(s)) for _ in range(4)]
        await asyncio.sleep(0.2)
        again = await bed.balancer(policy="round_robin")
        await asyncio.sleep(0.3)
        stop.set()
        await asyncio.gather(*workers)
    assert again is lb and again.endpoint == lb.endpoint
    assert int(lb.layout.pid.read_text()) != first and not pid_alive(first)
    assert failures == []  # the new one got the last ready set before the old one left


async def test_stop_ends_the_balancer_and_forgets_it(bed: Bed) -> None:
    lb = await bed.balancer()
    pid = int(lb.layout.pid.read_text())
    await bed.fleet.stop("svc")
    assert not pid_alive(pid)
    assert not lb.layout.pid.exists() and not lb.layout.port.exists()
    with pytest.raises(ConnectionError):
        await lb.take_traffic()


async def test_balancer_process_is_no_child_of_the_daemon(bed: Bed) -> None:
    lb = await bed.balancer()
    pid = int(lb.layout.pid.read_text())
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[-1].split()
    assert int(fields[1]) != os.getpid()  # reparented, not our child
    assert int(fields[3]) == pid  # a session of its own


async def test_a_balancer_whose_home_is_deleted_stops_by_itself(bed: Bed) -> None:
    lb = await bed.balancer()
    pid = int(lb.layout.pid.read_text())
    shutil.rmtree(lb.layout.dir)  # a home removed by hand, not through `serve down`
    deadline = time.monotonic() + ORPHAN_CHECK_SECONDS + 10
    while pid_alive(pid):
        assert time.monotonic() < deadline, "the orphaned balancer kept running"
        await asyncio.sleep(0.1)
