"""The socket survives anything a client sends, and version skew is one clear sentence."""

from __future__ import annotations

import socket
import struct
import subprocess
import sys

import msgspec
import pytest

from stixproto import PROTOCOL_VERSION
from stixproto import messages as m
from stixproto.framing import MAX_FRAME, decode, encode, recv_frame
from tests.conftest import Stix

_decoder = msgspec.msgpack.Decoder(m.ServerMessage)


@pytest.fixture
def daemon(stix: Stix) -> Stix:
    stix.run("daemon", "start", check=True)
    return stix


def _connect(stix: Stix) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(15)
    s.connect(str(stix.home / "stixd.sock"))
    return s


def _reply(s: socket.socket) -> m.ServerMessage | None:
    body = recv_frame(s)
    return None if body is None else decode(body, _decoder)


def _still_serving(stix: Stix) -> None:
    assert stix.run("status", check=True).returncode == 0


def test_garbage_gets_an_error_and_the_daemon_lives(daemon: Stix) -> None:
    with _connect(daemon) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = _reply(s)
    assert isinstance(reply, m.ErrorReply) and reply.code == "protocol"
    assert "exceeds" in reply.message
    _still_serving(daemon)


def test_oversized_frame_is_refused_before_reading_it(daemon: Stix) -> None:
    with _connect(daemon) as s:
        s.sendall(struct.pack(">I", MAX_FRAME + 1))
        reply = _reply(s)
    assert isinstance(reply, m.ErrorReply) and f"{MAX_FRAME + 1} bytes" in reply.message
    _still_serving(daemon)


def test_truncated_frame_and_silent_close(daemon: Stix) -> None:
    with _connect(daemon) as s:
        s.sendall(struct.pack(">I", 100) + b"only a few bytes")
        s.shutdown(socket.SHUT_WR)
        reply = _reply(s)
    assert isinstance(reply, m.ErrorReply) and "truncated" in reply.message
    with _connect(daemon):
        pass  # connect and close without a byte
    _still_serving(daemon)


def test_a_request_before_hello_is_refused(daemon: Stix) -> None:
    with _connect(daemon) as s:
        s.sendall(encode(m.Status()))
        reply = _reply(s)
    assert isinstance(reply, m.ErrorReply) and "hello" in reply.message
    _still_serving(daemon)


def test_malformed_request_after_hello(daemon: Stix) -> None:
    with _connect(daemon) as s:
        s.sendall(encode(m.Hello(protocol=PROTOCOL_VERSION)))
        assert isinstance(_reply(s), m.HelloOk)
        s.sendall(encode({"type": "status", "refresh": "yes please"}))
        reply = _reply(s)
    assert isinstance(reply, m.ErrorReply) and reply.code == "protocol"
    assert "refresh" in reply.message
    with _connect(daemon) as s:
        s.sendall(encode(m.Hello(protocol=PROTOCOL_VERSION)))
        _reply(s)
        s.sendall(encode({"type": "no_such_request"}))
        reply = _reply(s)
    assert isinstance(reply, m.ErrorReply) and "no_such_request" in reply.message
    _still_serving(daemon)


def test_version_skew_is_one_clear_sentence(daemon: Stix) -> None:
    with _connect(daemon) as s:
        s.sendall(encode({"type": "hello", "protocol": PROTOCOL_VERSION + 1, "new_field": [1]}))
        reply = _reply(s)
    assert isinstance(reply, m.ErrorReply) and reply.code == "version_mismatch"
    assert f"protocol {PROTOCOL_VERSION + 1}" in reply.message
    assert f"protocol {PROTOCOL_VERSION}" in reply.message
    assert "\n" not in reply.message
    # and through the real client: the message, an exit code, no traceback
    code = (
        "import sys, stixproto, stixctl.main as cli\n"
        f"stixproto.PROTOCOL_VERSION = {PROTOCOL_VERSION + 1}\n"
        "import stixctl.client as c; c.PROTOCOL_VERSION = stixproto.PROTOCOL_VERSION\n"
        "sys.exit(cli.main(['status']))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=daemon.env, capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 6
    assert "speaks protocol" in proc.stderr and "Traceback" not in proc.stderr
    _still_serving(daemon)


def test_many_bad_clients_at_once_leave_the_daemon_serving(daemon: Stix) -> None:
    socks = [_connect(daemon) for _ in range(50)]
    for i, s in enumerate(socks):
        s.sendall(b"\xff" * (i + 1))
    for s in socks:
        s.close()
    _still_serving(daemon)


@pytest.mark.skipif(
    not (hasattr(socket, "SO_PEERCRED") and __import__("os").geteuid() == 0),
    reason="needs root (to connect as another user) and SO_PEERCRED",
)
def test_a_peer_with_another_uid_is_refused_before_a_byte_is_read(daemon: Stix) -> None:
    import os
    import shutil

    sock = daemon.home / "stixd.sock"
    os.chmod(daemon.home, 0o711)
    os.chmod(sock, 0o666)  # open the door on purpose: the uid check must still hold
    client = (
        "import socket,sys\n"
        "s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])\n"
        "data=b''\n"
        "while True:\n"
        "    c=s.recv(4096)\n"
        "    if not c: break\n"
        "    data+=c\n"
        "sys.stdout.write(data.hex())\n"
    )
    python = shutil.which("python3", path="/usr/bin:/bin") or "python3"
    proc = subprocess.run(
        ["runuser", "-u", "nobody", "--", python, "-c", client, str(sock)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    reply = decode(bytes.fromhex(proc.stdout)[4:], _decoder)
    assert isinstance(reply, m.ErrorReply) and reply.code == "permission_denied"
    assert "uid" in reply.message
    _still_serving(daemon)
