"""The balancer outlives whoever started it, and the daemon finds it again instead of starting a
second one; a balancer that died is started again with the last ready set."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time

import pytest

from stixd.balancer import wire
from stixd.balancer.fleet import Fleet
from stixd.balancer.link import Link
from stixd.serve.seams import BalancerSpec
from tests.conftest import pid_alive
from tests.test_balancer import Bed, bed, client, get

pytestmark = pytest.mark.anyio
__all__ = ["bed"]  # the fixture, shared with tests/test_balancer.py

PARENT = r"""
import asyncio, json, sys
from pathlib import Path
from stixd.balancer import wire
from stixd.balancer.fleet import Fleet
from stixd.balancer.link import Link
from stixd.serve.seams import BalancerSpec, ReadyReplica
async def main():
    fleet = Fleet(Path(sys.argv[1]))
    lb = await fleet.ensure(BalancerSpec(service="svc", port=0))
    await lb.set_ready([ReadyReplica(1, sys.argv[2])])
    print(json.dumps({"endpoint": lb.endpoint}), flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


async def test_balancer_keeps_serving_after_its_parent_is_killed_and_is_found_again(
    bed: Bed,
) -> None:
    replica = await bed.replica(1)
    parent = await asyncio.create_subprocess_exec(
        *(sys.executable, "-c", PARENT, str(bed.fleet.root), replica.url),
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert parent.stdout is not None
        endpoint = json.loads(await asyncio.wait_for(parent.stdout.readline(), 30))["endpoint"]
        pid = int(bed.fleet.layout("svc").pid.read_text())
    finally:
        with contextlib.suppress(ProcessLookupError):
            parent.send_signal(signal.SIGKILL)
        await asyncio.wait_for(parent.wait(), 5)
    async with client() as s:
        for _ in range(3):  # served with the ready set the dead parent pushed
            assert await get(s, endpoint + "/") == (200, "r1")
    lb = await bed.fleet.ensure(BalancerSpec(service="svc", port=0))
    assert lb.endpoint == endpoint
    assert int(lb.layout.pid.read_text()) == pid  # attached, not started again
    assert len((await lb.take_traffic()).arrivals) == 3


async def test_dead_balancer_is_started_again_with_the_last_ready_set(bed: Bed) -> None:
    lb = await bed.balancer()
    await lb.set_ready([await bed.replica(1)])
    pid = int(lb.layout.pid.read_text())
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while pid_alive(pid):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    await lb.take_traffic()  # the broken connection starts a new balancer
    assert int(lb.layout.pid.read_text()) != pid
    async with client() as s:
        assert await get(s, lb.endpoint + "/") == (200, "r1")


async def test_two_fleets_share_one_balancer_per_service(bed: Bed) -> None:
    first = await bed.balancer()
    second = await Fleet(bed.fleet.root).ensure(BalancerSpec(service="svc", port=0))
    assert second.endpoint == first.endpoint
    assert second.layout.pid.read_text() == first.layout.pid.read_text()
    await second.drop_link()


async def test_wait_for_demand_returns_only_when_a_request_waits(bed: Bed) -> None:
    lb = await bed.balancer()
    waiter = asyncio.create_task(lb.wait_for_demand())
    await asyncio.sleep(0.3)
    assert not waiter.done()
    async with client() as s:
        request = asyncio.create_task(get(s, lb.endpoint + "/"))
        await asyncio.wait_for(waiter, 10)
        await lb.set_ready([await bed.replica(1)])
        assert await asyncio.wait_for(request, 10) == (200, "r1")


async def test_zero_queue_limit_refuses_at_once_with_one_line(bed: Bed) -> None:
    lb = await bed.balancer(queue_limit=0)
    async with client() as s:
        status, text = await get(s, lb.endpoint + "/")
    assert status == 503 and text.endswith("\n") and text.count("\n") == 1
    assert (await lb.take_traffic()).waiting == 0


async def test_balancer_that_cannot_start_says_why_at_once(bed: Bed) -> None:
    start = time.monotonic()
    with pytest.raises(ConnectionError, match=r"exited .*No such file.*balancer\.log"):
        await bed.balancer(tls_keyfile="/nonexistent/key.pem", tls_certfile="/nonexistent/c.pem")
    assert time.monotonic() - start < 10


async def test_traffic_is_handed_out_again_until_acknowledged_and_never_twice(bed: Bed) -> None:
    lb = await bed.balancer()
    await lb.set_ready([await bed.replica(1)])
    async with client() as s:
        await get(s, lb.endpoint + "/")
    link = await Link.open(lb.layout.control)
    try:
        lost = await link.call(wire.TakeTraffic(lb.ack))  # as if its reply never arrived
        assert isinstance(lost, wire.TrafficBatch) and len(lost.arrivals) == 1
    finally:
        await link.aclose()
    assert len((await lb.take_traffic()).arrivals) == 1  # handed out again
    async with client() as s:
        await get(s, lb.endpoint + "/")
    other = Fleet(bed.fleet.root)  # a restarted daemon: what the last one took stays taken
    again = await other.ensure(BalancerSpec(service="svc", port=0))
    assert len((await again.take_traffic()).arrivals) == 1
    await other.aclose()


async def test_show_ready_reads_the_rotation_the_balancer_holds_and_changes_nothing(
    bed: Bed,
) -> None:
    from stixd.balancer.link import show_ready

    lb = await bed.balancer()
    assert await show_ready(lb.layout.control) == []
    one, two = await bed.replica(1), await bed.replica(2)
    await lb.set_ready([one, two])
    shown = await show_ready(lb.layout.control)
    assert [(r.replica_id, r.url) for r in shown] == [(1, one.url), (2, two.url)]
    await lb.set_ready([two])
    assert [r.replica_id for r in await show_ready(lb.layout.control)] == [2]
    assert [r.replica_id for r in await show_ready(lb.layout.control)] == [2]  # read only
