"""No connection can stop the daemon: silence, deep nesting, vanishing and greedy clients.

Each test talks to a real stixd over its real socket, does the one bad thing, and then checks
that the daemon is the same process and still answers `status`.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import time
from collections.abc import Iterator

import msgspec
import pytest

from stixctl.aclient import acall
from stixproto import PROTOCOL_VERSION
from stixproto import messages as m
from stixproto.errors import DaemonUnavailable
from stixproto.framing import decode, encode, recv_frame
from tests.conftest import Stix, wait_until

_decoder = msgspec.msgpack.Decoder(m.ServerMessage)
IDLE = 1  # seconds a client may stay silent mid-request (the default is 10)


def deep(depth: int) -> bytes:
    """A msgpack value nested `depth` arrays deep: 1 byte per level."""
    return b"\x91" * depth + b"\xc0"


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


@pytest.fixture
def daemon(stix: Stix) -> Iterator[Stix]:
    stix.env["STIX__DAEMON__CLIENT_IDLE_SECONDS"] = str(IDLE)
    stix.run("daemon", "start", check=True)
    yield stix


@pytest.fixture
def capped(stix: Stix) -> Iterator[Stix]:
    stix.env["STIX__DAEMON__MAX_CONNECTIONS"] = "8"
    stix.run("daemon", "start", check=True)
    yield stix


def _connect(stix: Stix) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(15)
    s.connect(str(stix.home / "stixd.sock"))
    return s


def _hello(s: socket.socket) -> None:
    s.sendall(encode(m.Hello(protocol=PROTOCOL_VERSION)))
    assert isinstance(_reply(s), m.HelloOk)


def _reply(s: socket.socket) -> object:
    body = recv_frame(s)
    return None if body is None else decode(body, _decoder)


def _same_daemon_serving(stix: Stix, pid: int | None) -> None:
    assert pid is not None
    assert stix.run("status", check=True).returncode == 0
    assert stix.daemon_pid() == pid


def test_a_silent_connection_is_closed_and_the_daemon_lives(daemon: Stix) -> None:
    pid = daemon.daemon_pid()
    assert pid
    with _connect(daemon) as s:
        started = time.monotonic()
        reply = _reply(s)  # we send nothing; the daemon gives up on us
        waited = time.monotonic() - started
    assert isinstance(reply, m.ErrorReply) and reply.code == "protocol"
    assert f"{IDLE}s" in reply.message and "\n" not in reply.message
    assert IDLE * 0.9 <= waited < IDLE + 5
    _same_daemon_serving(daemon, pid)


def test_silence_after_the_hello_or_mid_frame_is_closed_too(daemon: Stix) -> None:
    pid = daemon.daemon_pid()
    with _connect(daemon) as after_hello, _connect(daemon) as mid_frame:
        _hello(after_hello)
        mid_frame.sendall(struct.pack(">I", 100) + b"ten bytes!")  # then nothing more
        assert isinstance(_reply(after_hello), m.ErrorReply)
        assert isinstance(_reply(mid_frame), m.ErrorReply)
    _same_daemon_serving(daemon, pid)


@pytest.mark.parametrize("depth", [100, 1000, 2000, 100_000])
def test_a_deeply_nested_first_frame_is_refused(daemon: Stix, depth: int) -> None:
    pid = daemon.daemon_pid()
    with _connect(daemon) as s:
        s.sendall(frame(deep(depth)))
        reply = _reply(s)
    assert isinstance(reply, m.ErrorReply) and reply.code == "protocol"
    _same_daemon_serving(daemon, pid)


def test_a_deeply_nested_hello_is_refused(daemon: Stix) -> None:
    pid = daemon.daemon_pid()
    body = b"\x82\xa4type\xa5hello\xa8protocol" + deep(2000)
    with _connect(daemon) as s:
        s.sendall(frame(body))
        reply = _reply(s)
    assert isinstance(reply, m.ErrorReply) and reply.code == "protocol"
    _same_daemon_serving(daemon, pid)


@pytest.mark.parametrize("depth", [1000, 2000])
def test_deep_nesting_inside_a_request_field_is_refused(daemon: Stix, depth: int) -> None:
    pid = daemon.daemon_pid()
    # a launch whose config layer holds the bomb in `values` (typed Any, so it is decoded)
    layer = {"source": "x", "values": {"k": "BOMB"}}
    body = msgspec.msgpack.encode({"type": "launch", "task": {}, "config": [layer]})
    body = body.replace(msgspec.msgpack.encode("BOMB"), deep(depth))
    with _connect(daemon) as s:
        _hello(s)
        s.sendall(frame(body))
        reply = _reply(s)
    assert isinstance(reply, m.ErrorReply) and reply.code == "protocol"
    assert "nested" in reply.message or "malformed" in reply.message
    _same_daemon_serving(daemon, pid)


def test_a_client_that_vanishes_mid_request_ends_only_itself(daemon: Stix) -> None:
    pid = daemon.daemon_pid()
    for _ in range(20):
        s = _connect(daemon)
        _hello(s)
        s.sendall(encode(m.Status(refresh=True)))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    _same_daemon_serving(daemon, pid)


def test_connections_past_the_limit_get_one_clear_refusal(capped: Stix) -> None:
    daemon = capped
    pid = daemon.daemon_pid()
    held = [_connect(daemon) for _ in range(8)]
    try:
        for s in held:
            _hello(s)  # all eight are being served (each waits for its request)
        proc = daemon.run("status")
        assert proc.returncode == 8, proc.stderr
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
        assert "8 connections" in proc.stderr and "max_connections" in proc.stderr
        with pytest.raises(DaemonUnavailable, match="max_connections"):
            asyncio.run(acall(daemon.home, m.Status(), autostart=False))
    finally:
        for s in held:
            s.close()
    wait_until(lambda: daemon.run("status").returncode == 0, timeout=10)
    _same_daemon_serving(daemon, pid)


def test_a_flood_of_bad_clients_is_logged_in_a_few_lines(daemon: Stix) -> None:
    pid = daemon.daemon_pid()
    log = daemon.home / "stixd.log"
    before = len(log.read_text().splitlines())
    for _ in range(300):
        with _connect(daemon) as s:
            s.sendall(b"\xff\xff\xff\xff")
            _reply(s)
    _same_daemon_serving(daemon, pid)
    lines = [json.loads(line) for line in log.read_text().splitlines()[before:]]
    bad = [e for e in lines if e["event"] == "bad_client"]
    assert 1 <= len(bad) <= 20, len(bad)
    assert len(lines) < 40


def test_a_client_that_never_reads_is_dropped_and_others_are_served(stix: Stix) -> None:
    stix.env["STIX__DAEMON__CLIENT_STALL_SECONDS"] = "1"
    run = "head -c 4000000 /dev/zero | tr '\\0' x; echo; sleep 600"
    stix.run("launch", "-c", "big", "-y", "-d", "--", run, check=True)
    pid = stix.daemon_pid()
    log = stix.home / "stixd.log"
    with _connect(stix) as greedy:
        greedy.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        _hello(greedy)
        greedy.sendall(encode(m.Logs(cluster="big", job_id=1, follow=True)))
        # we read nothing: the daemon's sends stall, and it gives up on us alone
        wait_until(lambda: "client_stalled" in log.read_text(), timeout=60)
        _same_daemon_serving(stix, pid)
        greedy.settimeout(30)
        while greedy.recv(1 << 20):
            pass  # what was in flight, then EOF: the daemon closed its end


def test_a_huge_unknown_field_name_gives_a_short_error_and_log_line(daemon: Stix) -> None:
    pid = daemon.daemon_pid()
    log = daemon.home / "stixd.log"
    before = log.stat().st_size
    with _connect(daemon) as s:
        _hello(s)
        s.sendall(encode({"type": "status", "x" * 500_000: 1}))
        reply = _reply(s)
    assert isinstance(reply, m.ErrorReply) and reply.code == "protocol"
    assert len(reply.message) < 400
    _same_daemon_serving(daemon, pid)
    assert log.stat().st_size - before < 4000
