"""Readiness end to end: real HTTP replicas on `local`, probed by their replica actors (late
servers, mute ones, POST probes, ejections the balancer reports, replicas that turn sick) and
a preempted replica on the fake infra. The balancer is the real one, in front of them."""

from __future__ import annotations

import asyncio
import contextlib
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest

from stixd.actors.replica_phases import probe_once
from stixproto.task.model import Service
from stixproto.task.service import effective_probe
from tests.conftest import Stix, wait_until
from tests.test_serve import (
    endpoint,
    free_port,
    last_ready,
    replica_states,
    service_yaml,
    serving,
    status,
    up,
)


def test_a_server_that_starts_late_becomes_ready_and_one_that_never_answers_fails_its_delay(
    stix: Stix, task_file: Callable[[str], Path]
) -> None:
    serving(stix)
    up(stix, service_yaml(task_file, free_port(), delay=2), "late")
    wait_until(lambda: replica_states(stix, "late").get(1) == "STARTING", timeout=30)
    wait_until(lambda: replica_states(stix, "late").get(1) == "READY", timeout=30)
    assert status(stix, "late")["status"] == "READY"  # type: ignore[index]
    # a command that never serves: its replica fails its initial delay and is torn down; a
    # version that failed before it was ever ready is broken (SkyServe): nothing is launched
    # again and the service is FAILED
    up(stix, service_yaml(task_file, free_port(), initial_delay=1, run="sleep 600"), "mute")
    failed = wait_until(lambda: status(stix, "mute")["status"] == "FAILED", timeout=60)  # type: ignore[index]
    assert failed
    # the service is FAILED as soon as its replica failed; the replica shows its end state once
    # its cluster is torn down (SHUTTING_DOWN until then)
    wait_until(lambda: replica_states(stix, "mute").get(1) != "SHUTTING_DOWN", timeout=30)
    record = status(stix, "mute")
    assert record is not None
    states = {r["replica_id"]: r["status"] for r in record["replicas"]}
    assert states == {1: "FAILED_INITIAL_DELAY"}
    assert "initial_delay_seconds" in record["replicas"][0]["failure_reason"]
    assert "replica 1 of version 1 failed before any was ready" in record["failure_reason"]
    assert not any(c.startswith("mute-") for c in stix.clusters())  # each was torn down
    assert last_ready(stix.home, "mute") in (None, [])


def test_a_post_probe_sends_its_body_and_headers_and_a_wrong_one_never_gets_ready(
    stix: Stix, task_file: Callable[[str], Path]
) -> None:
    serving(stix)

    def with_probe(headers: str) -> Path:
        path = service_yaml(task_file, free_port(), initial_delay=2)
        probe = (
            "  readiness_probe: {path: /health, initial_delay_seconds: 2, timeout_seconds: 2, "
            f"post_data: {{ping: 1}}, headers: {{X-Token: {headers}}}}}\n"
        )
        lines = path.read_text().splitlines(keepends=True)
        path.write_text("".join(probe if "readiness_probe" in x else x for x in lines))
        return path

    up(stix, with_probe("t1"), "good")
    up(stix, with_probe("wrong"), "bad")
    wait_until(lambda: replica_states(stix, "good").get(1) == "READY", timeout=40)
    wait_until(lambda: replica_states(stix, "bad").get(1) == "FAILED_INITIAL_DELAY", timeout=40)
    reason = status(stix, "bad")["replicas"][0]["failure_reason"]  # type: ignore[index]
    assert "HTTP 401 from POST /health" in reason


def test_a_replica_the_balancer_ejects_is_probed_at_once(
    stix: Stix, task_file: Callable[[str], Path]
) -> None:
    serving(stix)  # fast probes until the replica is READY, then a daemon with slow ones
    flag, hits = stix.home / "reset-now", stix.home / "hits"
    path = service_yaml(task_file, free_port())
    path.write_text(
        path.read_text().replace("envs:\n", f"envs:\n  RESET_FLAG: {flag}\n  HITS: {hits}\n")
    )
    up(stix, path, "web")
    wait_until(lambda: last_ready(stix.home, "web"), timeout=40)
    stix.run("daemon", "stop", check=True)
    probed = len(hits.read_text().splitlines())
    serving(stix, probe="30")  # left to its interval, the next probe would be 30 s away
    assert replica_states(stix, "web") == {1: "READY"}  # the daemon again: it probes once
    wait_until(lambda: len(hits.read_text().splitlines()) > probed, timeout=20)
    flag.with_name("reset-now-1").write_text("")  # replica 1 resets every connection
    url = endpoint(stix, "web") + "/"
    with pytest.raises(urllib.error.HTTPError) as answer:  # the balancer ejects it: 502
        urllib.request.urlopen(url, timeout=10)
    answer.value.close()
    assert answer.value.code == 502
    ejected_at = time.monotonic()
    wait_until(lambda: replica_states(stix, "web").get(1) == "NOT_READY", timeout=10)
    assert time.monotonic() - ejected_at < 10  # probed at once, not 30 s later
    wait_until(lambda: last_ready(stix.home, "web") == [], timeout=5)  # out of rotation
    reason = stix.json("events", "--kind", "replica", "web/1")[-1]["why"]
    assert "Disconnected" in reason or "Error" in reason, reason


def test_a_replica_whose_cluster_is_preempted_is_replaced(
    stix: Stix, task_file: Callable[[str], Path]
) -> None:
    serving(stix)
    stix.env["STIX__FAKE__ENABLED"] = "true"  # fake nodes run nothing: the replica stays STARTING
    path = task_file(
        "resources: {infra: fake, use_spot: true}\n"
        "service: {readiness_probe: {path: /, initial_delay_seconds: 600}, ports: 8080}\n"
        "run: serve\n"
    )
    up(stix, path, "spotty")
    wait_until(lambda: replica_states(stix, "spotty").get(1) == "STARTING", timeout=30)
    stix.run("fake", "preempt", "spotty-1", check=True)
    wait_until(lambda: replica_states(stix, "spotty").get(1) == "PREEMPTED", timeout=30)
    wait_until(lambda: replica_states(stix, "spotty").get(2) == "STARTING", timeout=30)
    record = status(stix, "spotty")
    assert record is not None and record["status"] == "REPLICA_INIT"
    assert "spotty-2" in stix.clusters() and record["replicas"][1]["infra"].startswith("fake")


def test_a_ready_replica_that_keeps_failing_probes_leaves_rotation_then_is_replaced(
    stix: Stix, task_file: Callable[[str], Path]
) -> None:
    serving(stix)
    flag = stix.home / "sick"
    path = service_yaml(task_file, free_port())
    path.write_text(path.read_text().replace("envs:\n", f"envs:\n  FAIL_FLAG: {flag}\n"))
    up(stix, path, "web")
    wait_until(lambda: [r["id"] for r in last_ready(stix.home, "web") or []] == [1], timeout=40)
    flag.with_name("sick-1").write_text("")  # replica 1 answers 503 from now on
    wait_until(lambda: replica_states(stix, "web").get(1) == "FAILED_PROBING", timeout=30)
    wait_until(lambda: [r["id"] for r in last_ready(stix.home, "web") or []] == [2], timeout=40)
    reason = status(stix, "web")["replicas"][0]["failure_reason"]  # type: ignore[index]
    assert "readiness probes failed in a row: HTTP 503" in reason
    history = stix.json("events", "--kind", "replica", "web/1")
    assert [e["to_state"] for e in history if e["to_state"]][-4:] == [
        "READY", "NOT_READY", "SHUTTING_DOWN", "FAILED_PROBING",
    ]  # fmt: skip


@contextlib.asynccontextmanager
async def _replica_answering(raw: bytes) -> AsyncIterator[str]:
    """A 'replica' answering any request with ``raw`` and then a body that goes on (for 20 s,
    unless the client leaves); every connection is closed on the way out."""
    handlers: set[asyncio.Task[None]] = set()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.add(asyncio.current_task())  # type: ignore[arg-type]
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(raw)
            for _ in range(200):
                await writer.drain()
                writer.write(b"x" * 65536)
                await asyncio.sleep(0.1)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_probe_takes_the_status_of_an_endless_answer_and_fails_a_garbled_one(
    anyio_backend: str,
) -> None:
    probe = effective_probe(Service(readiness_probe="/health"))
    endless = b"HTTP/1.1 200 OK\r\nContent-Length: 100000000000\r\n\r\n"
    garbled = b"HTTP/1.1 200 OK\r\nBad Header\x00: \xff\r\n\r\n"
    async with aiohttp.ClientSession() as session:
        async with _replica_answering(endless) as url:
            started = time.monotonic()
            assert await probe_once(session, url, probe) == (True, "HTTP 200 from GET /health")
            assert time.monotonic() - started < probe.timeout_seconds  # not the whole body
        async with _replica_answering(garbled) as url:
            passed, why = await probe_once(session, url, probe)
    assert not passed and why.split()[0] in {"ClientResponseError", "ServerDisconnectedError"}, why
