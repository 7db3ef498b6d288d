"""What a test does when the data it needs from ../shared is missing (the price catalogs, the
SkyPilot compat corpus): on a developer's machine it is skipped, under CI (`CI` set) it fails,
so a CI checkout without the data cannot pass by testing less.

Every such test goes through here: `require(path, what)` inside a test or fixture, or the mark
`@needs(path, what)` (checked when the test is set up, by tests/conftest.py), also on a module
(`pytestmark = needs(...)`) or as the marks of a stand-in parameter when a corpus has no files.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

MARK = "needs_shared"
VARIABLES = "STIX_SHARED, STIX_CATALOG_DIR or STIX_COMPAT_DIR"


def in_ci() -> bool:
    """`CI` is set (to anything but empty, 0 or false), as every CI service sets it."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require(path: Path, what: str) -> Path:
    """`path`, if it exists; otherwise skip the test, or fail it under CI."""
    if path.exists():
        return path
    message = f"no {what} at {path} (set {VARIABLES} or put ../shared beside the repository)"
    if in_ci():
        pytest.fail(f"{message}; CI is set, so it fails instead of skipping", pytrace=False)
    pytest.skip(message)


def needs(path: Path, what: str) -> pytest.MarkDecorator:
    """A mark: `require(path, what)` when the marked test is set up (not when it is collected,
    so that a missing folder fails only the tests that read it)."""
    return pytest.mark.needs_shared(path, what)


def check_marks(item: pytest.Item) -> None:
    """Run every `needs` mark of `item` (the conftest's setup hook)."""
    for mark in item.iter_markers(MARK):
        require(*mark.args)
