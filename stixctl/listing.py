"""Long listings (`jobs queue`, `status`): the note of what a default limit left out, and
JSON written a chunk at a time as the daemon streams it."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

DEFAULT_LIMIT = 50
"""Rows a listing shows unless `--limit N` or `--all` says otherwise: SkyPilot's `sky jobs
queue` shows the newest 50."""


def hidden_note(hidden: int, shown: int, what: str) -> str:
    """The line under a cut listing: how many were left out, and how to see them."""
    return (
        f"Only showing the latest {shown} {what}; {hidden:,} more hidden "
        f"(use --limit N to show more, or --all to show all)"
    )


class JsonArray:
    """One JSON array written as its items arrive: the same bytes as encoding the whole list
    at once (`output.print_json`), without holding it."""

    def __init__(self, out: TextIO = sys.stdout) -> None:
        import msgspec

        self._encode = msgspec.json.encode
        self._out = out
        self._empty = True
        out.write("[")

    def add(self, items: list[Any]) -> None:
        if not items:
            return
        body = self._encode(items)[1:-1].decode()  # `[a,b]` without its brackets
        self._out.write(body if self._empty else f",{body}")
        self._out.flush()
        self._empty = False

    def close(self) -> None:
        self._out.write("]\n")
        self._out.flush()


def stream_json(
    home: Path,
    req: Any,
    rows_of: Callable[[Any], list[Any] | None],
    on_event: Callable[[Any], None],
    what: str,
) -> None:
    """Send `req` (a listing asked to stream) and write its rows as one JSON array, a chunk at
    a time: `rows_of(event)` is a chunk's rows, None for any other event (shown as progress).
    The note of what a limit left out goes to stderr, so stdout stays valid JSON."""
    from stixctl.client import call

    out = JsonArray()

    def write(event: Any) -> None:
        rows = rows_of(event)
        if rows is None:
            on_event(event)
        else:
            out.add(rows)

    reply = call(home, req, write)
    out.close()
    if reply.hidden and req.limit is not None:
        print(hidden_note(reply.hidden, req.limit, what), file=sys.stderr)
