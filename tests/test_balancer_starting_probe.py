"""How soon a replica whose server has come up enters the balancer's rotation: a STARTING
replica is probed on the short starting period, not the (SkyServe's 10 s) probe period."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from tests.conftest import Stix, wait_until
from tests.test_serve import free_port, last_ready, replica_states, service_yaml, serving, up


def test_a_starting_replica_is_probed_often_until_its_first_pass(
    stix: Stix, task_file: Callable[[str], Path]
) -> None:
    serving(stix, probe="30")  # a READY replica is probed every 30 s
    stix.env["STIX__DAEMON__SERVE_STARTING_PROBE_SECONDS"] = "0.3"
    # the server listens 1.5 s after its command starts: the probe made on STARTING fails
    up(stix, service_yaml(task_file, free_port(), delay=1.5), "late")
    wait_until(lambda: replica_states(stix, "late").get(1) == "STARTING", timeout=30)
    starting = time.monotonic()
    wait_until(lambda: replica_states(stix, "late").get(1) == "READY", timeout=10)
    assert time.monotonic() - starting < 10  # the next 30 s probe would come far later
    wait_until(lambda: [r["id"] for r in last_ready(stix.home, "late") or []] == [1], timeout=5)
