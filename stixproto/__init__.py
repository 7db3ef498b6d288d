"""Messages, states, errors and framing shared by stixctl and stixd.

Nothing here imports anything of ours or anything heavy: the thin client imports it on every
command, so import time is part of every command's latency.
"""

VERSION = "0.1.0"
"""The release, as `stixctl --version` and the daemon's handshake report it (pyproject's)."""

PROTOCOL_VERSION = 8
"""Bumped whenever a message changes shape. Client and daemon must agree exactly."""
