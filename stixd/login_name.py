"""The name of the user this process runs as: who the Unix socket's clients are, and whose
rows from before owners were kept are (stixd.control.identity, stixd.actors.storage)."""

from __future__ import annotations

import os


def login_name() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:  # a uid with no passwd entry (some containers)
        return f"uid{os.getuid()}"
