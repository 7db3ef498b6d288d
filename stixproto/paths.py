"""Where stix keeps its files: the same answer for the client and the daemon."""

from __future__ import annotations

import os
from pathlib import Path


def stix_home() -> Path:
    return Path(os.environ.get("STIX_HOME") or "~/.stix").expanduser().resolve()


def socket_path(home: Path) -> Path:
    return home / "stixd.sock"
