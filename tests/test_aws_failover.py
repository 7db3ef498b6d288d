"""Failover on AWS through stixctl: capacity and quota errors (from the fault proxy in front of
moto) block what they name, and the launch takes the optimizer's next choice."""

from __future__ import annotations

from tests.awsbed import AwsBed, aws_fixtures
from tests.conftest import Stix
from tests.sshbed import SshBed, bed_fixture
from tests.test_aws_e2e import _use

hosts = bed_fixture(1, scope="module")
aws_server, aws = aws_fixtures()
REGIONS = ("us-east-1", "us-west-2", "eu-west-1", "ap-northeast-1")  # m6i.large's, cheapest first
TASK = "resources:\n  infra: aws\n  instance_type: m6i.large\nrun: echo ran-on-$(hostname)\n"


def _stix_groups(aws: AwsBed, region: str) -> list[str]:
    groups = aws.ec2("describe_security_groups", region)["SecurityGroups"]
    return [g["GroupName"] for g in groups if g["GroupName"].startswith("stix-")]


def test_no_capacity_in_any_zone_of_a_region_moves_the_launch_to_the_next_region(
    stix: Stix, aws: AwsBed, hosts: SshBed, task_file
) -> None:
    _use(stix, aws, hosts)
    aws.fault("RunInstances", "InsufficientInstanceCapacity", status=500, region="us-east-1")
    out = stix.run("launch", "-c", "fo", "-y", str(task_file(TASK)), timeout=180)
    assert out.returncode == 0, out.stderr
    assert f"ran-on-{hosts.hosts[0].name}" in out.stdout
    assert "1x aws/us-east-1 m6i.large: no zone of AWS us-east-1" in out.stderr
    assert "; trying 1x aws/us-west-2 m6i.large next." in out.stderr
    assert stix.clusters()["fo"]["resources"] == "1x aws/us-west-2 m6i.large"
    assert aws.seen("us-east-1").count("RunInstances") == 3  # each of the region's zones, once
    assert aws.live_instances(region="us-east-1") == []
    assert len(aws.live_instances("fo", region="us-west-2")) == 1
    assert _stix_groups(aws, "us-east-1") == []  # the failed region keeps nothing
    events = [e["why"] for e in stix.json("events", "fo") if e.get("event") == "failover"]
    assert events and "InsufficientInstanceCapacity" in events[0], stix.json("events", "fo")
    stix.run("down", "fo", "-y", check=True, timeout=120)
    assert aws.live_instances(region="us-west-2") == []
    assert _stix_groups(aws, "us-west-2") == []


def test_a_quota_error_is_remembered_so_the_next_launch_skips_the_region(
    stix: Stix, aws: AwsBed, hosts: SshBed, task_file
) -> None:
    _use(stix, aws, hosts)
    aws.fault("RunInstances", "VcpuLimitExceeded", region="us-east-1")
    first = stix.run("launch", "-c", "q1", "-y", str(task_file(TASK)), timeout=180)
    assert first.returncode == 0, first.stderr
    assert "VcpuLimitExceeded" in first.stderr
    assert aws.seen("us-east-1").count("RunInstances") == 1  # a quota: no other zone tried
    second = stix.run("launch", "-c", "q2", "-y", str(task_file(TASK)), timeout=180)
    assert second.returncode == 0, second.stderr
    assert "VcpuLimitExceeded" not in second.stderr
    assert aws.seen("us-east-1").count("RunInstances") == 1  # not asked again
    assert stix.clusters()["q2"]["resources"] == "1x aws/us-west-2 m6i.large"
    for name in ("q1", "q2"):
        stix.run("down", name, "-y", check=True, timeout=120)
    assert aws.live_instances(region="us-west-2") == []


def test_when_every_choice_fails_one_summary_and_nothing_is_left_behind(
    stix: Stix, aws: AwsBed, hosts: SshBed, task_file
) -> None:
    _use(stix, aws, hosts)
    aws.fault("RunInstances", "InsufficientInstanceCapacity", status=500)
    out = stix.run("launch", "-c", "none", "-y", str(task_file(TASK)), timeout=180)
    assert out.returncode == 5, out.stderr
    summary = [line for line in out.stderr.splitlines() if "every choice on aws failed" in line]
    assert len(summary) == 1, out.stderr
    assert out.stderr.count(" next.\n") == len(REGIONS) - 1  # none after the last choice
    for region in REGIONS:
        assert f"aws/{region} m6i.large" in summary[0]
        assert aws.live_instances(region=region) == []
        assert _stix_groups(aws, region) == []
    assert aws.seen().count("RunInstances") == 12  # 4 regions x 3 zones, each once
    assert stix.clusters().get("none", {}).get("status") != "UP"
