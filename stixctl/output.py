"""What every command prints: one-line notes on stderr, streamed events, JSON and tables.

Shared by `main` and the command modules beside it (`jobs`, `leaks`, `fake`, `confirm`), so none of
them imports `main`, which imports them.
"""

from __future__ import annotations

import sys
from typing import Any

from stixproto import messages as m


def err(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def on_event(event: Any) -> None:
    """A streamed event as the user sees it: log chunks on stdout, progress on stderr."""
    if isinstance(event, m.LogChunk):
        sys.stdout.write(event.data)
        sys.stdout.flush()
    elif isinstance(event, m.Progress):
        err(f"⚙ {event.message}")
    elif isinstance(event, m.JobSubmitted):
        err(f"⚙ Job submitted on {event.cluster}, ID: {event.job_id}")


def print_json(value: Any) -> None:
    import msgspec

    sys.stdout.write(msgspec.json.encode(value).decode() + "\n")


def print_table(reply: m.Table, as_json: bool) -> int:
    """A table reply as text (or its rows as JSON); exit code 1 when the daemon said not ok."""
    if as_json:
        print_json(reply.rows)
    else:
        print(reply.text)
    return 0 if reply.ok else 1
