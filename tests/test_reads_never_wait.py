"""Reads never wait behind launches: `status`, `queue`, `logs` and `/metrics` answer as fast
while 20 launches are in flight (half over the socket, half over HTTP) as before them.

The launches are slow on purpose: the fake provider takes a minute to bring a node up, so
every launch is mid-provisioning while the reads are timed. Each read is timed as a client
sees it (a connection, the request, the final reply), several times in turn, and the median
during the launches is compared with the median before, as a ratio with a generous margin: the
suite runs on two busy cores, and what this catches is a read queued behind a launch (seconds),
not a few milliseconds of noise.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import urllib.request
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import pytest

from stixctl.aclient import acall
from stixctl.ahttp_client import ahttp_frames
from stixctl.client import interpret, is_final
from stixctl.endpoint import Remote
from stixproto import messages as m
from stixproto.edge import request_body
from stixproto.task.load import task_from_dict
from tests.conftest import Stix
from tests.test_http_api import make_token, serve_http
from tests.test_metrics import parse, value

LAUNCHES = 20
ROUNDS = 7
SLOWER = 4.0
"""A read during the launches may take this many times its time before them..."""
MARGIN = 0.25
"""...plus this many seconds (scheduling noise on two shared cores): a read that waited for a
launch would wait the minute the launch takes."""

Read = Callable[[], Awaitable[Any]]


async def over_http(remote: Remote, request: Any) -> Any:
    frames = ahttp_frames(remote, request_body(request))
    try:
        async for frame in frames:
            msg = interpret(frame, type(request))
            if is_final(msg):
                return msg
    finally:
        await frames.aclose()
    raise AssertionError("the answer ended before its final reply")


def scrape(url: str, token: str) -> str:
    req = urllib.request.Request(url + "/metrics", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        text: str = resp.read().decode()
        return text


def reads(stix: Stix, remote: Remote) -> dict[str, Read]:
    asks: dict[str, Any] = {
        "status": m.Status(),
        "status -r": m.Status(refresh=True),
        "queue": m.Queue(),
        "logs": m.Logs(cluster="base", job_id=1, follow=False),
    }
    out: dict[str, Read] = {}
    for name, req in asks.items():
        out[f"{name} (socket)"] = partial(acall, stix.home, req, autostart=False, local=True)
        out[f"{name} (http)"] = partial(over_http, remote, req)
    out["/metrics (http)"] = lambda: asyncio.to_thread(scrape, remote.endpoint, remote.token or "")
    return out


async def medians(checks: dict[str, Read]) -> dict[str, float]:
    """Each read's median time over `ROUNDS` rounds, the reads taken in turn within a round."""
    times: dict[str, list[float]] = {name: [] for name in checks}
    for _ in range(ROUNDS):
        for name, read in checks.items():
            start = time.perf_counter()
            await asyncio.wait_for(read(), timeout=30)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(xs) for name, xs in times.items()}


async def wait_for_launches(url: str, token: str, n: int) -> None:
    """Until `n` launch requests are being answered and their clusters are provisioning."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        samples = parse(await asyncio.to_thread(scrape, url, token))
        flying = value(samples, "stix_requests_in_flight", request="launch") or 0
        launching = value(samples, "stix_actors", kind="cluster", state="INIT") or 0
        if flying >= n and launching >= n:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{n} launches were not in flight within 60 s")


@pytest.mark.anyio
async def test_status_queue_logs_and_metrics_answer_as_fast_during_twenty_launches(
    stix: Stix,
) -> None:
    stix.env["STIX__FAKE__ENABLED"] = "true"
    stix.env["STIX__FAKE__LAUNCH_SECONDS"] = "120"  # every launch stays mid-provisioning
    url = serve_http(stix)
    token = make_token(stix, "alice", "user")
    remote = Remote(url, token, "test")
    # alice's own cluster (a user reads the logs of hers only), on local: no delay
    base = task_from_dict({"run": "echo hello-base"})
    await over_http(remote, m.Launch(task=base, cluster="base"))
    checks = reads(stix, remote)
    logs = await checks["logs (http)"]()
    assert logs.status == "SUCCEEDED"
    await medians(checks)  # warm: the first of each loads code in the daemon
    before = await medians(checks)

    task = task_from_dict({"resources": {"infra": "fake"}, "run": "echo never"})
    launches = []
    for i in range(LAUNCHES):
        req = m.Launch(task=task, cluster=f"slow{i}", detach=True)
        if i % 2:
            ask = over_http(remote, req)
        else:
            ask = acall(stix.home, req, autostart=False, local=True)
        launches.append(asyncio.ensure_future(ask))
    try:
        await wait_for_launches(url, token, LAUNCHES)
        during = await medians(checks)
        assert not any(t.done() for t in launches), (
            "a launch ended: the reads were not timed during it"
        )
    finally:
        for t in launches:
            t.cancel()
        await asyncio.gather(*launches, return_exceptions=True)
    shown = ", ".join(f"{k}: {before[k] * 1e3:.0f}->{during[k] * 1e3:.0f} ms" for k in checks)
    print(f"\nmedian before -> during {LAUNCHES} launches: {shown}")
    for name in checks:
        assert during[name] <= SLOWER * before[name] + MARGIN, f"{name} waited: {shown}"
