"""The `stixctl` console script: the CLI's entry point, kept apart from the importable client."""

from __future__ import annotations

import os
import sys


def run() -> None:
    # msgspec prefers typing_extensions when it is installed, but needs nothing from it that
    # Python 3.11's typing lacks; not importing it (and the inspect module it pulls in) cuts
    # the client's start-up by a third. Only the CLI process does this, never a program that
    # imports stixctl as a library, and the block is lifted before any command runs.
    blocked = "typing_extensions" not in sys.modules
    if blocked:
        sys.modules["typing_extensions"] = None  # type: ignore[assignment]
    from stixctl.main import main

    if blocked and sys.modules.get("typing_extensions") is None:
        del sys.modules["typing_extensions"]
    end(main())


def end(code: int) -> None:
    """Exit once what was printed is flushed, without tearing the interpreter down: freeing
    every module a command imported costs a command that is done several milliseconds, and
    nothing of ours waits for it (no atexit work; completion's look-up thread is a daemon
    thread, left behind at exit either way)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BrokenPipeError:  # `stixctl status | head -1`: the reader left, as main treats it
            pass
        except (OSError, ValueError):  # a closed or failing stream: nothing more can be said
            code = code or 1
    os._exit(code)
