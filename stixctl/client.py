"""Talking to stixd: connect (starting it if needed), handshake, one request, its stream."""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec

from stixproto import PROTOCOL_VERSION
from stixproto import messages as m
from stixproto.edge import request_body
from stixproto.errors import DaemonUnavailable, ProtocolError, error_from_code
from stixproto.framing import HEADER, decode, encode, recv_frame
from stixproto.paths import socket_path

_decoder = msgspec.msgpack.Decoder(m.ServerMessage)
START_TIMEOUT = 40.0


def _connect(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(str(path))
    except OSError:
        s.close()
        raise
    return s


def start_daemon(home: Path) -> None:
    """Run `stixd` (which detaches a foreground copy and returns once it answers)."""
    import subprocess

    proc = subprocess.run(
        [sys.executable, "-m", "stixd", "--home", str(home)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
        check=False,
    )
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()
        raise DaemonUnavailable(
            f"could not start stixd: {detail or f'exit code {proc.returncode}'}"
        )


def open_connection(home: Path, autostart: bool = True) -> socket.socket:
    path = socket_path(home)
    try:
        return _connect(path)
    except (FileNotFoundError, ConnectionRefusedError):
        if not autostart:
            raise DaemonUnavailable(f"stixd is not running (no daemon on {path})") from None
    start_daemon(home)
    try:
        return _connect(path)
    except OSError as exc:
        raise DaemonUnavailable(f"stixd started but its socket {path} refused: {exc}") from None


LOST = (
    "the connection to stixd was lost (did it stop or crash?); clusters and jobs keep "
    "running on their nodes — check them with `stixctl status` and `stixctl queue`"
)


def interpret(body: bytes | None) -> Any:
    """Decode one frame from the daemon; an error reply becomes its exception."""
    if body is None:
        raise DaemonUnavailable(LOST)
    msg = decode(body, _decoder)
    if isinstance(msg, m.ErrorReply):
        raise error_from_code(msg.code, msg.message)
    return msg


def is_final(msg: Any) -> bool:
    return isinstance(msg, m.FINAL_REPLIES)


def _receive(sock: socket.socket) -> Any:
    try:
        body = recv_frame(sock)
    except (ProtocolError, OSError):
        body = None
    return interpret(body)


def stream(home: Path, request: Any, *, autostart: bool = True) -> Iterator[Any]:
    """Send `request` and yield what comes back: stream events, then the final reply."""
    body = request_body(request)  # a bad argument is refused here, before any daemon starts
    sock = open_connection(home, autostart)
    with sock:
        try:
            sock.sendall(encode(m.Hello(protocol=PROTOCOL_VERSION)))
            _receive(sock)
            sock.sendall(HEADER.pack(len(body)) + body)
        except (BrokenPipeError, ConnectionResetError):
            raise DaemonUnavailable("stixd closed the connection during the handshake") from None
        while True:
            msg = _receive(sock)
            yield msg
            if is_final(msg):
                return


def call(
    home: Path,
    request: Any,
    on_event: Callable[[Any], None] | None = None,
    *,
    autostart: bool = True,
) -> Any:
    """Send `request`; pass stream events to `on_event`; return the final reply or raise."""
    for msg in stream(home, request, autostart=autostart):
        if is_final(msg):
            return msg
        if on_event is not None:
            on_event(msg)
    raise DaemonUnavailable(LOST)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie has exited; only its parent has not collected it yet
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[-1][:1] != "Z"
    except OSError:
        return True


def wait_gone(home: Path, pid: int, timeout: float = 30.0) -> bool:
    """True once the daemon process `pid` has exited and its socket no longer answers."""
    path = socket_path(home)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _running(pid):
            try:
                _connect(path).close()
            except OSError:
                return True
        time.sleep(0.05)
    return False
