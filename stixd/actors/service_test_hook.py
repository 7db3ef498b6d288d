"""TESTS ONLY: the load balancers a test daemon drives its services with.

`STIX_TEST_BALANCERS=module:factory` names a factory, called with the daemon's home, that
makes the `Balancers` (tests/fake_balancers.py's fake, which records the ready sets pushed to
it and serves nothing). Unset, as everywhere but in tests, this is None and the daemon's own
balancers are used.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from stixd.serve.seams import Balancers

ENV = "STIX_TEST_BALANCERS"


def balancers_for_tests(home: Path) -> Balancers | None:
    named = os.environ.get(ENV, "")
    if not named:
        return None
    module, _, factory = named.partition(":")
    made: Balancers = getattr(importlib.import_module(module), factory)(home)
    return made
