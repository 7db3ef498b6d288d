"""Helpers of the dashboard's tests and benchmark: a served daemon with seeded state, Chromium
through Playwright, and a screenshot's check that it shows something."""

from __future__ import annotations

import shutil
import sqlite3
import struct
import time
import zlib
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

HOSTILE = "<img src=x onerror=\"document.title='pwned'\">"
"""A cluster name from an earlier version's record (new names are refused by the name rule)."""
HOSTILE_JOB = "<b>bold</b>"
"""A job name `exec -n` takes as given."""


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@contextmanager
def browser() -> Iterator[Any]:
    """Headless Chromium of the distro (Playwright cannot download one here)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


def insert_old_cluster_row(db: Path, name: str) -> None:
    """A cluster row as an earlier version could write it, with a name the rule now refuses;
    and a spec cut short, written while no daemon runs: the daemon keeps it, quarantined, and
    shows it failed, as `status` does."""
    now = time.time()
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute(
            "INSERT INTO actors (kind, id, parent, state, terminal, spec, data, version, "
            "created_at, updated_at) VALUES ('cluster', ?, NULL, 'UP', 0, ?, '{}', 1, ?, ?)",
            (name, '{"provider": ', now, now),
        )


def png_rows(png: bytes) -> tuple[int, int, int]:
    """(width, height, distinct filtered scanlines) of a PNG: one colour makes very few
    distinct lines, a page with text and tables hundreds."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, b""
    width = height = 0
    channels = {2: 3, 6: 4, 0: 1, 4: 2}
    bpp = 4
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind = png[pos + 4 : pos + 8]
        chunk = png[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", chunk[:10])
            bpp = channels.get(colour, 4) * depth // 8
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * bpp + 1
    lines = {raw[i * stride + 1 : (i + 1) * stride] for i in range(height)}
    return width, height, len(lines)
