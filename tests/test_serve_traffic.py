"""Serving under load, end to end: a real daemon, real replicas on `local`, the real balancer in
front of them, and clients sending requests through the service's endpoint the whole time.
A replica killed, the daemon killed, an update rolled in: no client sees a failed request."""

from __future__ import annotations

import os
import signal
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from stixd.providers.local.netns import unavailable_reason
from tests.conftest import Stix, pid_alive, processes_mentioning, wait_until
from tests.shared_data import require
from tests.test_serve import (
    _environ,
    endpoint,
    free_port,
    last_ready,
    replica_states,
    self_signed,
    service_yaml,
    serving,
    status,
    up,
)
from tests.test_serve_updates import two_replicas

COMPAT = Path(
    os.environ.get("STIX_COMPAT_DIR")
    or Path(os.environ.get("STIX_SHARED") or Path(__file__).parents[1].parent / "shared") / "compat"
)
MINIMAL = COMPAT / "skypilot-yamls" / "examples__serve__minimal.yaml"
MAX_SECONDS = 120.0
"""No load runs longer than this, whatever the test waits for."""


@dataclass
class Load:
    """Clients sending GET / through `url` one request after another, each on a new
    connection, until stopped: every answer is kept as (status or error, body)."""

    url: str
    clients: int = 4
    headers: dict[str, str] = field(default_factory=dict)
    context: ssl.SSLContext | None = None
    answers: list[tuple[int | str, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _client(self) -> None:
        deadline = time.monotonic() + MAX_SECONDS
        while not self._stop.is_set() and time.monotonic() < deadline:
            request = urllib.request.Request(self.url, headers=self.headers)
            try:
                with urllib.request.urlopen(request, timeout=30, context=self.context) as resp:
                    answer: tuple[int | str, str] = (resp.status, resp.read().decode())
            except urllib.error.HTTPError as exc:
                answer = (exc.code, exc.read().decode(errors="replace"))
                exc.close()
            except OSError as exc:
                answer = (type(exc).__name__, str(exc))
            with self._lock:
                self.answers.append(answer)

    @property
    def failed(self) -> list[tuple[int | str, str]]:
        with self._lock:
            return [a for a in self.answers if not (isinstance(a[0], int) and a[0] < 300)]

    def bodies(self) -> list[str]:
        with self._lock:
            return [body for _, body in self.answers]

    def more(self, count: int) -> None:
        """Wait until `count` more answers came."""
        start = len(self.answers)
        wait_until(lambda: len(self.answers) >= start + count, timeout=30)


@contextmanager
def load(url: str, **kw: object) -> Iterator[Load]:
    running = Load(url, **kw)  # type: ignore[arg-type]
    threads = [threading.Thread(target=running._client) for _ in range(running.clients)]
    for t in threads:
        t.start()
    try:
        yield running
    finally:
        running._stop.set()
        for t in threads:
            t.join(timeout=40)


def servers_of(stix: Stix, replica_id: int) -> list[int]:
    """The server processes of one replica of a service of this home."""
    tag = f"SKYPILOT_SERVE_REPLICA_ID={replica_id}\0"
    return [
        p
        for p in processes_mentioning("server.py")
        if str(stix.home) in _environ(p) and tag in _environ(p)
    ]


def ready_ids(stix: Stix, name: str) -> list[int]:
    return [r["id"] for r in last_ready(stix.home, name) or []]


def test_a_replica_killed_under_load_fails_no_request_and_is_replaced(
    stix: Stix, task_file: Callable[[str], Path]
) -> None:
    serving(stix)
    path = service_yaml(task_file, free_port(), replicas=2)
    up(stix, path, "web")
    wait_until(lambda: ready_ids(stix, "web") == [1, 2], timeout=60)
    with load(endpoint(stix, "web") + "/") as running:
        wait_until(lambda: {"hello 1", "hello 2"} <= set(running.bodies()), timeout=20)
        killed = servers_of(stix, 1)
        assert killed
        for pid in killed:
            os.kill(pid, signal.SIGKILL)
        running.more(50)  # answered by replica 2 meanwhile
        wait_until(lambda: ready_ids(stix, "web") == [2, 3], timeout=60)
        wait_until(lambda: "hello 3" in running.bodies(), timeout=20)
    assert running.failed == [], running.failed[:5]
    assert replica_states(stix, "web") == {1: "FAILED", 2: "READY", 3: "READY"}
    print(f"{len(running.answers)} requests, none failed")


def test_stixd_killed_and_restarted_under_load_fails_no_request_and_keeps_its_replicas(
    stix: Stix, task_file: Callable[[str], Path]
) -> None:
    serving(stix)
    up(stix, service_yaml(task_file, free_port(), replicas=2), "web")
    wait_until(lambda: ready_ids(stix, "web") == [1, 2], timeout=60)
    clusters = {c: stix.clusters()[c]["launched_at"] for c in ("web-1", "web-2")}
    servers = servers_of(stix, 1) + servers_of(stix, 2)
    with load(endpoint(stix, "web") + "/") as running:
        running.more(20)
        stix.kill_daemon()
        running.more(200)  # served while no daemon runs
        assert status(stix, "web")["status"] == "READY"  # type: ignore[index]  # restarts it
        running.more(200)
    assert running.failed == [], running.failed[:5]
    assert replica_states(stix, "web") == {1: "READY", 2: "READY"}
    assert {c: stix.clusters()[c]["launched_at"] for c in clusters} == clusters
    assert all(pid_alive(p) for p in servers)
    assert ready_ids(stix, "web") == [1, 2]
    history = stix.json("events", "--kind", "service", "web")
    assert [e["id"] for e in history if e["event"] == "decided"] == ["web/1", "web/2"]


@pytest.mark.parametrize("mode", ["rolling", "blue_green"])
def test_an_update_under_load_answers_every_request_and_ends_on_the_new_version(
    stix: Stix, task_file: Callable[[str], Path], mode: str
) -> None:
    serving(stix)
    port = free_port()
    up(stix, two_replicas(task_file, port), "web")
    wait_until(lambda: ready_ids(stix, "web") == [1, 2], timeout=60)
    url = endpoint(stix, "web") + "/"
    with load(url) as running:
        running.more(20)
        v2 = two_replicas(task_file, port, reply="v2")
        stix.run("serve", "update", "-y", "--mode", mode, "web", str(v2), check=True)
        wait_until(lambda: ready_ids(stix, "web") == [3, 4], timeout=90)
        wait_until(lambda: set(replica_states(stix, "web")) == {3, 4}, timeout=30)
        running.more(50)
    assert running.failed == [], running.failed[:5]
    assert any(b.startswith("hello") for b in running.bodies())  # it did serve v1 first
    with load(url, clients=1) as after:
        after.more(20)
    assert after.failed == [] and all(b.startswith("v2 ") for b in after.bodies())


def test_tls_and_api_keys_at_the_endpoint(stix: Stix, task_file: Callable[[str], Path]) -> None:
    serving(stix)
    key, cert = stix.home / "key.pem", stix.home / "cert.pem"
    self_signed(key, cert)
    path = service_yaml(task_file, free_port())
    text = path.read_text().replace(
        "service:\n",
        f"service:\n  tls: {{keyfile: {key}, certfile: {cert}}}\n"
        "  auth: {api_keys: [k1, $API_KEY]}\n",  # the second one a secret's, given at `up`
    )
    path.write_text(text + "secrets:\n  API_KEY: null\n")
    stix.run("serve", "up", "-y", "-n", "api", "--secret", "API_KEY=k2", str(path), check=True)
    wait_until(lambda: ready_ids(stix, "api") == [1], timeout=40)
    url = endpoint(stix, "api") + "/"
    assert url.startswith("https://")
    trust = ssl.create_default_context(cafile=str(cert))
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url, timeout=10, context=trust)
    refused.value.close()
    assert refused.value.code == 401
    wrong = urllib.request.Request(url, headers={"Authorization": "Bearer nope"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(wrong, timeout=10, context=trust)
    refused.value.close()
    assert refused.value.code == 401
    good = urllib.request.Request(url, headers={"Authorization": "Bearer k2"})
    with urllib.request.urlopen(good, timeout=10, context=trust) as resp:
        assert (resp.status, resp.read()) == (200, b"hello 1")
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        urllib.request.urlopen(good, timeout=10)  # TLS indeed: an unknown certificate


def test_skypilots_minimal_service_runs_as_is_on_local(stix: Stix, tmp_path: Path) -> None:
    minimal = require(MINIMAL, "SkyPilot compat corpus")
    serving(stix)
    up(stix, minimal, "minimal")
    wait_until(lambda: ready_ids(stix, "minimal") == [1], timeout=60)
    assert status(stix, "minimal")["status"] == "READY"  # type: ignore[index]
    with urllib.request.urlopen(endpoint(stix, "minimal") + "/", timeout=10) as resp:
        assert resp.status == 200 and b"Directory listing" in resp.read()


def test_two_replicas_of_skypilots_minimal_service_both_bind_8080_on_their_own_nodes(
    stix: Stix, tmp_path: Path
) -> None:
    minimal = require(MINIMAL, "SkyPilot compat corpus")
    why = unavailable_reason()
    if why is not None:
        pytest.skip(f"local nodes share this machine's network here ({why})")
    serving(stix)
    two = tmp_path / "minimal-2.yaml"
    text = minimal.read_text()
    assert "  replicas: 1\n" in text
    two.write_text(text.replace("  replicas: 1\n", "  replicas: 2\n"))
    up(stix, two, "minimal")
    ready = wait_until(lambda: len(last_ready(stix.home, "minimal") or []) == 2, timeout=90)
    assert ready
    urls = [r["url"] for r in last_ready(stix.home, "minimal") or []]
    assert all(u.endswith(":8080") for u in urls) and len(set(urls)) == 2, urls
    for u in urls:  # each on its node's own address
        with urllib.request.urlopen(u + "/", timeout=10) as resp:
            assert resp.status == 200
    with load(endpoint(stix, "minimal") + "/", clients=2) as running:
        running.more(20)
    assert running.failed == []
