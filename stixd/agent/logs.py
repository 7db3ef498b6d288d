"""Reading a job's log by byte offset without ever splitting a line or a UTF-8 character."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

_UTF8_MAX = 4


@dataclasses.dataclass(frozen=True)
class LogChunk:
    data: bytes
    next_offset: int
    file_size: int


def read_log(path: Path, offset: int, max_bytes: int, *, finished: bool) -> LogChunk:
    """Bytes from ``offset``: whole lines only while the job runs, everything once it finished.

    A chunk cut short by ``max_bytes`` ends at a character boundary (while the job runs, at a
    line end if it holds one), so the next read continues cleanly. When ``max_bytes`` is smaller
    than the character at ``offset``, that one character is returned whole.
    """
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed just below, after fstat and read
    except FileNotFoundError:
        return LogChunk(b"", offset, 0)
    with f:
        size = os.fstat(f.fileno()).st_size
        f.seek(offset)
        raw = f.read(max_bytes + _UTF8_MAX - 1)
    window = raw[:max_bytes]
    truncated = offset + len(window) < size
    if finished and not truncated:
        cut = len(window)
    elif not finished and b"\n" in window:
        cut = window.rindex(b"\n") + 1
    elif not finished and len(window) < max_bytes:
        cut = 0  # a line still being written: wait for its end
    else:
        cut = _whole_characters(window) or _first_character(raw, finished=finished)
    return LogChunk(raw[:cut], offset + cut, size)


def _sequence_length(lead: int) -> int:
    if lead >= 0xF0:
        return 4
    if lead >= 0xE0:
        return 3
    return 2 if lead >= 0xC0 else 1


def _whole_characters(data: bytes) -> int:
    """Length of the longest prefix of ``data`` that does not end inside a UTF-8 sequence."""
    for back in range(1, min(_UTF8_MAX, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 != 0x80:  # not a continuation byte: the last sequence starts here
            complete = back >= _sequence_length(byte)
            return len(data) if complete else len(data) - back
    return len(data)  # only continuation bytes: not UTF-8 anyway, so pass them on


def _first_character(data: bytes, *, finished: bool) -> int:
    if not data:
        return 0
    need = _sequence_length(data[0])
    if need <= len(data):
        return need
    return len(data) if finished else 0
