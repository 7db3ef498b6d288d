"""A FAKE of the service balancers (`stixd.serve.seams.Balancers`), for the serving tests that
run before the real balancer process is merged: it serves and proxies nothing, and records every
ready set the daemon pushes, one JSON line per push, in `<home>/serve/<service>/fake-pushes.jsonl`
(a file, so a test reads it from outside the daemon, across a `kill -9` and restart).

A daemon uses it when started with `STIX_TEST_BALANCERS=tests.fake_balancers:FakeBalancers`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio

from stixd.serve.seams import BalancerSpec, ReadyReplica, Traffic

ENV = {"STIX_TEST_BALANCERS": "tests.fake_balancers:FakeBalancers"}
FAKE_ENDPOINT_PORT = 9


def pushes_file(home: Path, service: str) -> Path:
    return home / "serve" / service / "fake-pushes.jsonl"


def suspects_file(home: Path, service: str) -> Path:
    """Replica ids written here are reported as ejected by the next `take_traffic`."""
    return home / "serve" / service / "fake-suspects"


def report_suspect(home: Path, service: str, replica_id: int) -> None:
    """Make the next `take_traffic` of `service` report `replica_id` as ejected."""
    path = suspects_file(home, service)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{replica_id}\n")


def pushes(home: Path, service: str) -> list[dict[str, Any]]:
    """Every push recorded for `service`, oldest first: `{"at", "ready": [{id, url, version}]}`
    or `{"at", "stopped": true}`."""
    path = pushes_file(home, service)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def last_spec(home: Path, service: str) -> dict[str, Any] | None:
    """The `BalancerSpec` (as a dict) the balancer was last ensured with."""
    found = [p["ensured"] for p in pushes(home, service) if "ensured" in p]
    return found[-1] if found else None


def last_ready(home: Path, service: str) -> list[dict[str, Any]] | None:
    """The last ready set pushed (None: none yet, or the balancer was stopped since)."""
    found = pushes(home, service)
    if not found or "ready" not in found[-1]:
        return None
    ready: list[dict[str, Any]] = found[-1]["ready"]
    return ready


class FakeBalancer:
    def __init__(self, home: Path, spec: BalancerSpec) -> None:
        self.home = home
        self.spec = spec

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{FAKE_ENDPOINT_PORT}"

    def _record(self, entry: dict[str, Any]) -> None:
        path = pushes_file(self.home, self.spec.service)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as f:
            f.write(json.dumps({"at": time.time(), **entry}) + "\n")

    async def set_ready(self, replicas: Sequence[ReadyReplica]) -> None:
        ready = [{"id": r.replica_id, "url": r.url, "version": r.version} for r in replicas]
        self._record({"ready": ready})

    async def take_traffic(self) -> Traffic:
        """No requests (it serves none); the replica ids a test wrote to
        `suspects_file` as the ones it ejected, each handed out once."""
        path = suspects_file(self.home, self.spec.service)
        try:
            text = path.read_text()
            path.unlink()
        except FileNotFoundError:
            return Traffic()
        return Traffic(suspects=tuple(int(x) for x in text.split()))

    async def wait_for_demand(self) -> None:
        await anyio.sleep_forever()


class FakeBalancers:
    def __init__(self, home: Path) -> None:
        self.home = home

    async def ensure(self, spec: BalancerSpec) -> FakeBalancer:
        balancer = FakeBalancer(self.home, spec)
        balancer._record({"ensured": dataclasses.asdict(spec)})
        return balancer

    async def stop(self, service: str) -> None:
        FakeBalancer(self.home, BalancerSpec(service=service, port=0))._record({"stopped": True})
