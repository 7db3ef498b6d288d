"""A real moto server for AWS tests, with the fault-injecting proxy (tests/awsfault.py) in front.

Follows the recipe of the test-infrastructure notes (moto server for EC2): ``moto_server`` on a
free loopback port, the proxy on another; clients (and the daemon, through ``env``) talk to the
proxy. ``reset`` wipes moto's state and the proxy's rules between tests; ``close`` kills both
processes. Nothing listens beyond 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
UP_WITHIN_S = 20.0
REGION = "us-east-1"
EMPTY_LISTING = (
    '<DescribeInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
    "<requestId>00000000-0000-0000-0000-000000000000</requestId><reservationSet/>"
    "</DescribeInstancesResponse>"
)

SPOT_NOTICE = (
    '<DescribeSpotInstanceRequestsResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
    "<requestId>00000000-0000-0000-0000-000000000000</requestId><spotInstanceRequestSet><item>"
    "<spotInstanceRequestId>sir-stixtest</spotInstanceRequestId><state>active</state>"
    "<status><code>marked-for-termination</code><updateTime>2026-01-01T00:00:00.000Z</updateTime>"
    "<message>Spot Instance is marked for termination</message></status>"
    "<instanceId>{instance}</instanceId></item></spotInstanceRequestSet>"
    "</DescribeSpotInstanceRequestsResponse>"
)


MOTO_UNPAGED = {
    "DescribeSecurityGroups": "securityGroupInfo",
    "DescribeVpcs": "vpcSet",
    "DescribeSubnets": "subnetSet",
    "DescribeImages": "imagesSet",
    "DescribeVolumes": "volumeSet",
    "DescribeSpotInstanceRequests": "spotInstanceRequestSet",
}
"""The paginated EC2 listings stix reads that moto always answers whole (it pages
``describe_instances`` itself), and the XML element of each one's items."""
NEXT_PAGE = "stix-page-2"
EMPTY_FIRST_PAGE = (
    '<{action}Response xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
    "<requestId>00000000-0000-0000-0000-000000000000</requestId><{items}/>"
    f"<nextToken>{NEXT_PAGE}</nextToken></{{action}}Response>"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _http(method: str, url: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as answer:
        text = answer.read()
    return json.loads(text) if text.strip().startswith((b"{", b"[")) else text


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + UP_WITHIN_S
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited {proc.returncode}: {log.read_text()[-2000:]}")
        with contextlib.suppress(OSError, urllib.error.URLError):
            urllib.request.urlopen(url, timeout=1).close()
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer within {UP_WITHIN_S} s")
        time.sleep(0.05)


class AwsBed:
    """moto on ``moto_url``, the fault proxy on ``url`` (what stix is pointed at)."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="stixaws-"))
        self.procs: list[subprocess.Popen[bytes]] = []
        moto_port, proxy_port = _free_port(), _free_port()
        self.moto_url = f"http://127.0.0.1:{moto_port}"
        self.url = f"http://127.0.0.1:{proxy_port}"
        try:
            moto = self._spawn(
                "moto",
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(moto_port)],
            )
            _wait_http(f"{self.moto_url}/moto-api/", moto, self.dir / "moto.log")
            proxy = self._spawn(
                "proxy", [sys.executable, "-m", "tests.awsfault", str(proxy_port), self.moto_url]
            )
            _wait_http(f"{self.url}/_fault", proxy, self.dir / "proxy.log")
        except BaseException:
            self.close()
            raise

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.dir / f"{name}.log", "wb")  # noqa: SIM115 (kept by the child)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.Popen(argv, stdout=log, stderr=log, env=env, start_new_session=True)
        log.close()
        self.procs.append(proc)
        return proc

    @property
    def env(self) -> dict[str, str]:
        """What a daemon needs to use this bed as its AWS."""
        return {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ENDPOINT_URL": self.url,
        }

    # -- state -------------------------------------------------------------------------

    def reset(self) -> None:
        _http("POST", f"{self.moto_url}/moto-api/reset")
        _http("DELETE", f"{self.url}/_fault")

    def fault(self, action: str, code: str, **rule: Any) -> None:
        """From now on, answer ``action`` (where ``match`` holds) with the AWS error ``code``."""
        _http("POST", f"{self.url}/_fault", {"action": action, "code": code, **rule})

    def hide_from_listings(self, cluster: str) -> None:
        """From now on, tag look-ups of ``cluster`` list nothing (EC2's listing delay)."""
        self.fault(
            "DescribeInstances",
            "",
            match={"Filter.1.Name": "tag:stix-cluster", "Filter.1.Value.1": cluster},
            body=EMPTY_LISTING,
        )

    def interrupt_spot(self, instance: str, stop: bool = False) -> None:
        """Terminate (or stop) ``instance`` as a spot interruption would: EC2 then gives
        ``Server.SpotInstanceTermination`` (``...Shutdown``) as its state reason, which moto
        cannot, so the proxy puts it into every answer that says why an instance went."""
        code = "Server.SpotInstanceShutdown" if stop else "Server.SpotInstanceTermination"
        text = f"{code}: Spot instance {'stop' if stop else 'termination'}"
        self.fault(
            "DescribeInstances",
            "",
            rewrite=[
                ["Client.UserInitiatedShutdown: User initiated shutdown", text],
                ["Client.UserInitiatedShutdown", code],
            ],
        )
        self.ec2("stop_instances" if stop else "terminate_instances", InstanceIds=[instance])

    def spot_notice(self, instance: str) -> None:
        """From now on EC2 says ``instance`` is marked for termination (a spot interruption
        notice, two minutes ahead), which moto cannot: its spot request list is empty."""
        self.fault("DescribeSpotInstanceRequests", "", body=SPOT_NOTICE.format(instance=instance))

    def hold(self, action: str, **rule: Any) -> None:
        """Keep the next ``action`` request in the proxy until ``let_go`` (then it is done)."""
        self.fault(action, "", hold=True, times=1, **rule)

    def first_page_empty(self, action: str) -> None:
        """From now on, the first page of every ``action`` listing is empty and names a next
        page (as EC2 may answer a long listing): only a caller that follows ``NextToken`` sees
        anything. moto ignores the token of these listings and answers the next page whole."""
        page = EMPTY_FIRST_PAGE.format(action=action, items=MOTO_UNPAGED[action])
        self.fault(action, "", match={"NextToken": None}, body=page)

    def requests(self, action: str) -> list[dict[str, str]]:
        """The form of every ``action`` request that reached the proxy since the last reset."""
        forms = _http("GET", f"{self.url}/_fault/forms")
        return [f for f in forms if f.get("Action") == action]

    def held(self) -> dict[str, int]:
        got = _http("GET", f"{self.url}/_fault")
        return {"waiting": got["waiting"], "forwarded": got["forwarded"]}

    def let_go(self) -> None:
        _http("POST", f"{self.url}/_fault/release")

    def seen(self, region: str | None = None) -> list[str]:
        """The EC2 ``Action``s that reached the proxy since the last reset (in ``region``)."""
        got = _http("GET", f"{self.url}/_fault")
        return [a for a, r in zip(got["seen"], got["regions"], strict=True) if region in (None, r)]

    def ec2(self, operation: str, region: str = REGION, **params: Any) -> Any:
        """One EC2 call straight to moto (not through the proxy), for the test's own checks."""
        from aiobotocore.session import get_session  # type: ignore[import-untyped]

        async def call() -> Any:
            async with get_session().create_client(
                "ec2",
                region_name=region,
                endpoint_url=self.moto_url,
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
            ) as client:
                return await getattr(client, operation)(**params)

        # its own thread and loop: callers may be inside an event loop (async tests) or not
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, call()).result(timeout=60)

    def instances(self, cluster: str | None = None, region: str = REGION) -> list[dict[str, Any]]:
        filters = [{"Name": "tag:stix-cluster", "Values": [cluster]}] if cluster else []
        found = self.ec2("describe_instances", region, Filters=filters)
        return [i for r in found["Reservations"] for i in r["Instances"]]

    def live_instances(self, cluster: str | None = None, region: str = REGION) -> list[Any]:
        gone = ("terminated", "shutting-down")
        return [i for i in self.instances(cluster, region) if i["State"]["Name"] not in gone]

    def an_image(self, region: str = REGION) -> str:
        """An AMI moto knows (its canned images) for tasks that name ``image_id``."""
        images = self.ec2("describe_images", region, Owners=["amazon"])["Images"]
        return str(sorted(i["ImageId"] for i in images)[0])

    # -- teardown ----------------------------------------------------------------------

    def close(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        self.procs.clear()
        for log in self.dir.glob("*.log"):
            log.unlink()
        with contextlib.suppress(OSError):
            self.dir.rmdir()

    def alive(self) -> list[int]:
        return [p.pid for p in self.procs if p.poll() is None]


def aws_fixtures() -> tuple[Any, Any]:
    """(``aws_server``, ``aws``) fixtures: one moto per test module, wiped before each test.

    In a test module: ``aws_server, aws = aws_fixtures()``.
    """

    @pytest.fixture(scope="module")
    def aws_server() -> Iterator[AwsBed]:
        bed = AwsBed()
        procs = list(bed.procs)
        try:
            yield bed
        finally:
            bed.close()
            assert all(p.poll() is not None for p in procs), "moto or the proxy outlived the bed"

    @pytest.fixture
    def aws(aws_server: AwsBed) -> Iterator[AwsBed]:
        aws_server.reset()
        yield aws_server

    return aws_server, aws
