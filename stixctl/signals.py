"""How a followed job ends on the terminal: one finish line and SkyPilot's exit code.

`launch` and `exec` without `-d`, `logs` (following, or `--status`), `jobs launch` and
`jobs logs` all end the same way, so a script reads every one of them alike.
"""

from __future__ import annotations

import sys

# `sky logs --status` exit codes (SkyPilot's JobExitCode), so scripts written for it keep working.
EXIT_FOR_STATUS = {"SUCCEEDED": 0, "CANCELLED": 103}
EXIT_FAILED, EXIT_NOT_FINISHED = 100, 101


def status_exit(state: str) -> int:
    if state in EXIT_FOR_STATUS:
        return EXIT_FOR_STATUS[state]
    return EXIT_FAILED if state.startswith("FAILED") else EXIT_NOT_FINISHED


def finish(what: str, state: str, failure: str | None = None) -> int:
    """Say on stderr how `what` ("Job 2 on c1", "Managed job 3") ended; return its exit code.
    ✓ only for a success: a failure or a cancel is ✗, with what failed it when known."""
    code = status_exit(state)
    if code == EXIT_NOT_FINISHED:
        line = f"⚠ {what} has not finished: it is {state}"
    else:
        mark = "✓" if code == 0 else "✗"
        line = f"{mark} {what} finished: {state}" + (f" ({failure})" if failure else "")
    sys.stderr.write(line + "\n")
    sys.stderr.flush()
    return code
