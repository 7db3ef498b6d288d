"""Reading a job's log by byte offset without ever splitting a line or a UTF-8 character."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class LogChunk:
    data: bytes
    next_offset: int
    file_size: int


def read_log(path: Path, offset: int, max_bytes: int, *, finished: bool) -> LogChunk:
    """Bytes from ``offset``: whole lines only while the job runs, everything once it finished.

    A chunk cut short by ``max_bytes`` ends at a character boundary (while the job runs, at a
    line end if it holds one), so the next read continues cleanly.
    """
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed just below, after fstat and read
    except FileNotFoundError:
        return LogChunk(b"", offset, 0)
    with f:
        size = os.fstat(f.fileno()).st_size
        f.seek(offset)
        raw = f.read(max_bytes)
    truncated = offset + len(raw) < size
    if finished:
        cut = _utf8_boundary(raw) if truncated else len(raw)
    elif b"\n" in raw:
        cut = raw.rindex(b"\n") + 1
    elif len(raw) == max_bytes:
        cut = _utf8_boundary(raw)
    else:
        cut = 0  # a line still being written: wait for its end
    return LogChunk(raw[:cut], offset + cut, size)


def _utf8_boundary(raw: bytes) -> int:
    """Length of the longest prefix of ``raw`` that does not end inside a UTF-8 sequence."""
    for back in range(1, min(4, len(raw)) + 1):
        byte = raw[-back]
        if byte & 0xC0 != 0x80:  # not a continuation byte: the last sequence starts here
            need = 2 if byte >= 0xC0 else 1
            need = 3 if byte >= 0xE0 else need
            need = 4 if byte >= 0xF0 else need
            cut = len(raw) if back >= need else len(raw) - back
            return cut or len(raw)  # never return nothing: a lone odd byte still moves on
    return len(raw)
