"""The relay in the pod: many connections to Unix sockets in the pod carried over one exec's
stdin and stdout. Runs on the pod's python3 (3.7+), standard library only.

Every frame, both ways, is a header (stream id: 4 bytes, kind: 1 byte, payload length: 4 bytes,
big-endian) and its payload. The daemon sends OPEN (payload: the socket's path), DATA, EOF (no
more data from the daemon: shut the socket's write side), CLOSE and WINDOW; the relay answers
DATA, CLOSE (payload: why, when the connection failed), WINDOW, and READY on stream 0 once it
runs. Stream ids are never reused, so a frame for a stream already closed is dropped.

Each stream is flow-controlled both ways, as an SSH channel is: a side may send at most
``WINDOW_BYTES`` of DATA the other has not yet taken; the taker grants more with WINDOW
(payload: 4 bytes, how many more). The relay stops reading a socket whose window is used up, so
a slow reader in the daemon holds back its own connection only, and every buffer is bounded. A
frame over ``MAX_PAYLOAD`` or DATA past a window is a broken peer: the relay ends with one line
on stderr. The relay ends when its stdin does: the exec is gone.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import struct
import sys
import threading
from typing import BinaryIO

HEADER = struct.Struct(">IBI")
CREDIT = struct.Struct(">I")
OPEN, DATA, EOF, CLOSE, READY, WINDOW = 1, 2, 3, 4, 5, 6
MAX_PAYLOAD = 16 * 1024 * 1024
WINDOW_BYTES = 2 * 1024 * 1024
READ_SIZE = 65536
VERSION = b"stix-relay 2"

_out = sys.stdout.buffer
_out_lock = threading.Lock()


class Broken(Exception):
    """The other side broke the framing: the relay cannot go on."""


def emit(stream: int, kind: int, payload: bytes = b"") -> None:
    with _out_lock:
        _out.write(HEADER.pack(stream, kind, len(payload)) + payload)
        _out.flush()


class Conn:
    """One stream: its socket, a pump (socket to daemon) and a writer (daemon to socket)."""

    def __init__(self, stream: int, sock: socket.socket) -> None:
        self.stream = stream
        self.sock = sock
        self.cond = threading.Condition()
        self.credit = WINDOW_BYTES
        """Bytes the pump may still send the daemon before it grants more."""
        self.room = WINDOW_BYTES
        """Bytes the daemon may still send before the writer has written them."""
        self.stopped = False
        self.inbox: queue.Queue[tuple[int, bytes]] = queue.Queue()
        self._users = 2

    def grant(self, more: int) -> None:
        with self.cond:
            if self.credit + more > WINDOW_BYTES:
                raise Broken(f"the daemon granted more than the window on stream {self.stream}")
            self.credit += more
            self.cond.notify_all()

    def take(self, payload: bytes) -> None:
        with self.cond:
            if len(payload) > self.room:
                raise Broken(f"the daemon sent past the window on stream {self.stream}")
            self.room -= len(payload)
        self.inbox.put((DATA, payload))

    def stop(self) -> None:
        """No more of this stream: wakes the pump and the writer, whatever they wait on."""
        with self.cond:
            self.stopped = True
            self.cond.notify_all()
        self.inbox.put((CLOSE, b""))
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def release(self) -> None:
        """The socket is closed once both threads are done with it."""
        with self.cond:
            self._users -= 1
            last = self._users == 0
        if last:
            self.sock.close()


def pump(conn: Conn, conns: dict[int, Conn]) -> None:
    """The socket's bytes to the daemon as its window allows, then CLOSE (with the error, if
    reading failed); the stream is forgotten here too, as the daemon sends no CLOSE for a
    stream the relay ended."""
    why = b""
    try:
        while True:
            with conn.cond:
                while conn.credit <= 0 and not conn.stopped:
                    conn.cond.wait()
                if conn.stopped:
                    break
                want = min(READ_SIZE, conn.credit)
            data = conn.sock.recv(want)
            if not data:
                break
            with conn.cond:
                conn.credit -= len(data)
            emit(conn.stream, DATA, data)
    except OSError as exc:
        why = str(exc).encode()
    finally:
        conns.pop(conn.stream, None)
        conn.stop()
        conn.release()
    emit(conn.stream, CLOSE, why)


def writer(conn: Conn) -> None:
    """The daemon's bytes to the socket in order, each written one granted back."""
    try:
        while True:
            kind, payload = conn.inbox.get()
            if kind == CLOSE:
                break
            if kind == EOF:
                conn.sock.shutdown(socket.SHUT_WR)
                continue
            conn.sock.sendall(payload)
            with conn.cond:
                conn.room += len(payload)
            emit(conn.stream, WINDOW, CREDIT.pack(len(payload)))
    except OSError:
        conn.stop()  # the pump sees the socket shut and says CLOSE
    finally:
        conn.release()


def read_exactly(source: BinaryIO, size: int) -> bytes:
    data = source.read(size)  # a BufferedReader blocks until it has size bytes or sees EOF
    if len(data) < size:
        raise EOFError
    return bytes(data)


def open_conn(stream: int, path: bytes, conns: dict[int, Conn]) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path.decode())
    except OSError as exc:
        sock.close()
        emit(stream, CLOSE, str(exc).encode())
        return
    conn = conns[stream] = Conn(stream, sock)
    threading.Thread(target=pump, args=(conn, conns), daemon=True).start()
    threading.Thread(target=writer, args=(conn,), daemon=True).start()


def serve() -> None:
    source = sys.stdin.buffer
    conns: dict[int, Conn] = {}
    emit(0, READY, VERSION)
    while True:
        stream, kind, size = HEADER.unpack(read_exactly(source, HEADER.size))
        if size > MAX_PAYLOAD:
            raise Broken(f"the daemon sent a frame of {size} bytes, over the 16 MiB bound")
        payload = read_exactly(source, size)
        if kind == OPEN:
            open_conn(stream, payload, conns)
            continue
        conn = conns.get(stream)
        if conn is None:
            continue
        if kind == DATA:
            conn.take(payload)
        elif kind == EOF:
            conn.inbox.put((EOF, b""))
        elif kind == WINDOW and size == CREDIT.size:
            conn.grant(CREDIT.unpack(payload)[0])
        elif kind == CLOSE:
            conns.pop(stream, None)
            conn.stop()  # the pump ends and closes the socket


if __name__ == "__main__":
    try:
        serve()
    except (EOFError, KeyboardInterrupt):
        pass
    except Broken as exc:
        sys.exit(f"stix-relay: {exc}")
