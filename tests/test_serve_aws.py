"""Serving on `infra: aws`, end to end: EC2 is a real moto server, the replica's instance is a
real sshd host (the testing-only STIX_TEST_SSH_HOSTS mapping of tests/test_aws_e2e.py), its
command a real HTTP server reached by the real balancer.

What AWS adds to serving: the service's port opened in the replica cluster's security group
(also when only `service.ports` names it), the replica found at the address this machine
reaches the instance at (its public one), and `serve down` removing what the launch made.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from stixd.providers.abilities import ReachedElsewhere
from stixd.providers.aws.provider import AwsProvider
from stixd.providers.base import NodeInfo, NodeStatus
from tests.awsbed import AwsBed, aws_fixtures
from tests.conftest import Stix, wait_until
from tests.sshbed import SshBed, bed_fixture
from tests.test_aws_e2e import _open_ports, _stix_groups, _use
from tests.test_serve import SERVER, endpoint, free_port, serving, status, up
from tests.test_serve_ssh import clean
from tests.test_serve_traffic import load, ready_ids

hosts = bed_fixture(1, scope="module")
aws_server, aws = aws_fixtures()


@pytest.fixture
def instance(hosts: SshBed) -> Iterator[SshBed]:
    """The host standing in for the replica's instance, left as a new instance would be
    (a terminated instance takes its processes with it; the stand-in keeps them)."""
    try:
        yield hosts
    finally:
        clean(hosts)


def test_a_service_on_aws_opens_its_port_serves_and_down_removes_what_it_made(
    stix: Stix, aws: AwsBed, instance: SshBed, task_file: Callable[[str], Path], tmp_path: Path
) -> None:
    hosts = instance
    _use(stix, aws, hosts)
    serving(stix)
    port = free_port()
    work = tmp_path / "work"
    work.mkdir()
    (work / "server.py").write_text(SERVER)
    path = task_file(
        "resources: {infra: aws/us-east-1}\n"  # no resources.ports: the service's port is opened
        f"workdir: {work}\n"
        "service:\n"
        "  readiness_probe: {path: /, initial_delay_seconds: 60, timeout_seconds: 2}\n"
        "  replicas: 1\n"
        f"  ports: {port}\n"
        "run: python3 server.py\n"
    )
    up(stix, path, "web")
    wait_until(lambda: ready_ids(stix, "web") == [1], timeout=90)
    [group] = [
        g["GroupId"]
        for g in aws.ec2("describe_security_groups")["SecurityGroups"]
        if g["GroupName"] == "stix-web-1"
    ]
    assert _open_ports(aws, group) == {22, port}  # SSH and the service's (probed) port
    record = status(stix, "web")
    assert record is not None
    [replica] = record["replicas"]
    assert replica["infra"].startswith("aws/us-east-1")
    assert replica["endpoint"] == f"http://{hosts.hosts[0].ip}:{port}"
    with load(endpoint(stix, "web") + "/", clients=2) as running:
        running.more(20)
    assert running.failed == [] and set(running.bodies()) == {"hello 1"}
    assert len(aws.live_instances("web-1")) == 1

    stix.run("serve", "down", "-y", "web", check=True, timeout=120)
    wait_until(lambda: status(stix, "web") is None, timeout=120)
    assert aws.live_instances("web-1") == []
    assert _stix_groups(aws) == []


def test_an_aws_replica_is_reached_at_the_address_this_machine_reaches_its_instance(
    tmp_path: Path,
) -> None:
    provider = AwsProvider(tmp_path, {})
    assert isinstance(provider, ReachedElsewhere)
    node = NodeInfo(0, "10.0.0.5", NodeStatus.RUNNING, "/s", "/w", "/h")
    provider.records.set_node("web-1", 0, ip="10.0.0.5", host="54.1.2.3", port=22)
    assert provider.reachable_address("web-1", node) == "54.1.2.3"  # not the private ip
    assert provider.reachable_address("web-2", node) == "10.0.0.5"  # no record: its ip
