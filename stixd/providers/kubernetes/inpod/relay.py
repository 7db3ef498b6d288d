"""The relay in the pod: many connections to Unix sockets in the pod carried over one exec's
stdin and stdout. Runs on the pod's python3 (3.7+), standard library only.

Every frame, both ways, is a header (stream id: 4 bytes, kind: 1 byte, payload length: 4 bytes,
big-endian) and its payload. The daemon sends OPEN (payload: the socket's path), DATA, EOF (no
more data from the daemon: shut the socket's write side) and CLOSE; the relay answers DATA and
CLOSE (payload: why, when the connection failed), and READY on stream 0 once it runs. Stream ids
are never reused, so a frame for a stream already closed is dropped. The relay ends when its
stdin does: the exec is gone.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import sys
import threading
from typing import BinaryIO

HEADER = struct.Struct(">IBI")
OPEN, DATA, EOF, CLOSE, READY = 1, 2, 3, 4, 5
MAX_PAYLOAD = 16 * 1024 * 1024
VERSION = b"stix-relay 1"

_out = sys.stdout.buffer
_out_lock = threading.Lock()


def emit(stream: int, kind: int, payload: bytes = b"") -> None:
    with _out_lock:
        _out.write(HEADER.pack(stream, kind, len(payload)) + payload)
        _out.flush()


def pump(stream: int, sock: socket.socket, sockets: dict[int, socket.socket]) -> None:
    """The socket's bytes to the daemon, then CLOSE (with the error, if reading failed); the
    stream is forgotten here too, as the daemon sends no CLOSE for a stream the relay ended."""
    why = b""
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                break
            emit(stream, DATA, data)
    except OSError as exc:
        why = str(exc).encode()
    finally:
        sockets.pop(stream, None)
        sock.close()
    emit(stream, CLOSE, why)


def read_exactly(source: BinaryIO, size: int) -> bytes:
    data = source.read(size)  # a BufferedReader blocks until it has size bytes or sees EOF
    if len(data) < size:
        raise EOFError
    return bytes(data)


def serve() -> None:
    source = sys.stdin.buffer
    sockets: dict[int, socket.socket] = {}
    emit(0, READY, VERSION)
    while True:
        stream, kind, size = HEADER.unpack(read_exactly(source, HEADER.size))
        if size > MAX_PAYLOAD:
            raise ValueError("frame too large")
        payload = read_exactly(source, size)
        if kind == OPEN:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(payload.decode())
            except OSError as exc:
                sock.close()
                emit(stream, CLOSE, str(exc).encode())
                continue
            sockets[stream] = sock
            threading.Thread(target=pump, args=(stream, sock, sockets), daemon=True).start()
            continue
        conn = sockets.get(stream)
        if conn is None:
            continue
        try:
            if kind == DATA:
                conn.sendall(payload)
            elif kind == EOF:
                conn.shutdown(socket.SHUT_WR)
            elif kind == CLOSE:
                sockets.pop(stream, None)
                conn.shutdown(socket.SHUT_RDWR)  # wakes the pump, which closes it
        except OSError:
            sockets.pop(stream, None)  # the pump sees it too and says CLOSE


if __name__ == "__main__":
    with contextlib.suppress(EOFError, KeyboardInterrupt):
        serve()
