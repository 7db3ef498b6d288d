"""Talking to stixd: connect (starting it if needed), handshake, one request, its stream."""

from __future__ import annotations

import _socket
import contextlib
import fcntl
import functools
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec

from stixctl.endpoint import Remote, remote_target
from stixproto import PROTOCOL_VERSION
from stixproto import messages as m
from stixproto.edge import request_body
from stixproto.errors import DaemonUnavailable, ProtocolError, error_from_code
from stixproto.framing import HEADER, decode, encode, recv_frame
from stixproto.paths import client_catalog_dir, socket_path

START_TIMEOUT = 40.0

REPLY_TO: dict[type, type] = {
    m.Status: m.ClusterList,
    m.Queue: m.JobList,
    m.JobsQueue: m.ManagedJobList,
    m.Exec: m.LaunchResult,
    m.Launch: m.LaunchResult,
    m.PlanRequest: m.PlanReply,
    m.ReadTask: m.TaskRead,
}
"""The final reply of the requests run most often: their client builds the decoder of only the
messages it can be sent (a decoder of every reply costs a `status` a few milliseconds: the
task model among them). Any other request, or a reply these do not decode, is read with the
decoder of every message."""


@functools.cache
def _decoder(request: type | None = None) -> msgspec.msgpack.Decoder[Any]:
    reply = REPLY_TO.get(request) if request is not None else None
    if reply is None:
        return msgspec.msgpack.Decoder(m.ServerMessage)
    return msgspec.msgpack.Decoder(m.HelloOk | m.ErrorReply | m.StreamEvent | reply)


def _connect(path: Path) -> _socket.socket:
    # `_socket`, the module `socket` wraps: building `socket`'s enums costs a client that
    # opens one Unix socket more at start-up than the rest of its connection
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        s.connect(str(path))
    except OSError:
        s.close()
        raise
    return s


def start_daemon(home: Path) -> None:
    """Run `stixd` (which detaches a foreground copy and returns once it answers).

    Safe to call from many clients at once: `stixd` serializes starts, and one that finds the
    daemon running succeeds. `-P` keeps the caller's working directory off the daemon's
    sys.path, so a project's own `stixd/` or `stixproto/` package cannot shadow stix's.
    """
    import subprocess

    try:
        proc = subprocess.run(
            [sys.executable, "-P", "-m", "stixd", "--home", str(home)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise DaemonUnavailable(
            f"stixd did not start within {START_TIMEOUT:g}s; see {home / 'stixd.out'}"
        ) from None
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()
        raise DaemonUnavailable(
            f"could not start stixd: {detail or f'exit code {proc.returncode}'}"
        )


def unreachable(path: Path, exc: OSError) -> DaemonUnavailable:
    return DaemonUnavailable(
        f"cannot reach stixd on {path}: {exc.strerror or exc}; check STIX_HOME"
    )


@contextlib.contextmanager
def _start_turn(home: Path) -> Iterator[None]:
    """This client's turn to start the daemon: clients that find none queue here, so one
    starts it and the others find it running (and no Python is spawned per waiting client).

    The lock is taken on the home folder itself, so a client writes nothing into a home the
    daemon would refuse (one that belongs to another user)."""
    try:
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(home, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise DaemonUnavailable(
            f"cannot start stixd in {home}: {exc.strerror or exc}; "
            "set STIX_HOME to a directory you can write"
        ) from None
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise DaemonUnavailable(
                        f"another stixctl has been starting stixd for {START_TIMEOUT:g}s; "
                        f"see {home / 'stixd.out'}"
                    ) from None
                time.sleep(0.01)
        yield
    finally:
        os.close(fd)  # releases the lock


def ensure_started(home: Path) -> None:
    """Start the daemon unless one answers; safe from any number of clients at once."""
    with _start_turn(home):
        try:
            _connect(socket_path(home)).close()
        except (FileNotFoundError, ConnectionRefusedError):
            start_daemon(home)


def open_connection(home: Path, autostart: bool = True) -> _socket.socket:
    path = socket_path(home)
    try:
        return _connect(path)
    except (FileNotFoundError, ConnectionRefusedError):
        if not autostart:
            raise DaemonUnavailable(f"stixd is not running (no daemon on {path})") from None
    except OSError as exc:
        raise unreachable(path, exc) from None
    ensure_started(home)
    try:
        return _connect(path)
    except OSError as exc:
        raise DaemonUnavailable(f"stixd started but its socket {path} refused: {exc}") from None


LOST = (
    "the connection to stixd was lost (did it stop or crash?); clusters and jobs keep "
    "running on their nodes — check them with `stixctl status` and `stixctl queue`"
)


def interpret(body: bytes | None, request: type | None = None) -> Any:
    """Decode one frame from the daemon (an answer to a `request` of this type); an error
    reply becomes its exception."""
    if body is None:
        raise DaemonUnavailable(LOST)
    try:
        msg = _decoder(request).decode(body)
    except (msgspec.DecodeError, RecursionError):  # not what `REPLY_TO` expects: any message
        msg = decode(body, _decoder())
    if isinstance(msg, m.ErrorReply):
        raise error_from_code(msg.code, msg.message)
    return msg


def is_final(msg: Any) -> bool:
    return isinstance(msg, m.FINAL_REPLIES)


def _receive(sock: _socket.socket, request: type | None = None) -> Any:
    try:
        body = recv_frame(sock)
    except (ProtocolError, OSError):
        body = None
    return interpret(body, request)


def stream(
    home: Path,
    request: Any,
    *,
    autostart: bool = True,
    tasks_checked: bool = False,
    local: bool = False,
) -> Iterator[Any]:
    """Send `request` and yield what comes back: stream events, then the final reply.
    `tasks_checked`: as for `stixproto.edge.request_body`. It goes to the remote API server
    when one is configured (`stixctl.endpoint`), unless `local`."""
    # a bad argument is refused here, before any daemon starts
    body = request_body(request, tasks_checked=tasks_checked)
    kind = type(request)
    remote = None if local else remote_target(home)
    if remote is not None:
        from stixctl.http_client import http_frames
        from stixctl.uploads import with_uploads

        sent = with_uploads(request, functools.partial(remote_reply, remote))
        if sent is not request:  # its local paths now name their uploads on the server
            body = request_body(sent, tasks_checked=tasks_checked)
        for frame in http_frames(remote, body):
            msg = interpret(frame, kind)
            yield msg
            if is_final(msg):
                return
    sock = open_connection(home, autostart)
    try:
        try:
            sock.sendall(
                encode(m.Hello(protocol=PROTOCOL_VERSION, catalog_dir=client_catalog_dir()))
            )
            _receive(sock, kind)
            sock.sendall(HEADER.pack(len(body)) + body)
        except (BrokenPipeError, ConnectionResetError):
            _receive(sock, kind)  # raises the daemon's reason when it sent one (e.g. too busy)
            raise DaemonUnavailable("stixd closed the connection during the handshake") from None
        while True:
            msg = _receive(sock, kind)
            yield msg
            if is_final(msg):
                return
    finally:
        sock.close()


def remote_reply(remote: Remote, request: Any) -> Any:
    """The final reply of the remote server to `request` (its stream events dropped)."""
    from stixctl.http_client import http_frames

    frames = http_frames(remote, request_body(request))
    try:
        for frame in frames:
            msg = interpret(frame, type(request))
            if is_final(msg):
                return msg
    finally:
        frames.close()
    raise DaemonUnavailable(LOST)  # not reached: the frames end in a reply or raise


def call(
    home: Path,
    request: Any,
    on_event: Callable[[Any], None] | None = None,
    *,
    autostart: bool = True,
    tasks_checked: bool = False,
    local: bool = False,
) -> Any:
    """Send `request`; pass stream events to `on_event`; return the final reply or raise."""
    for msg in stream(home, request, autostart=autostart, tasks_checked=tasks_checked, local=local):
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
