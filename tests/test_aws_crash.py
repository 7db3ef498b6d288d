"""`kill -9` of the daemon in the middle of an AWS launch: after a restart, one complete cluster,
never a duplicate or an orphan.

The fault proxy holds one EC2 request of the launch; the daemon is killed while it waits for
the answer; the proxy then lets the request through (EC2 finishes what a dead caller asked);
the next stixctl command starts a new daemon, which resumes the launch from its record.
"""

from __future__ import annotations

import pytest

from tests.awsbed import AwsBed, aws_fixtures
from tests.conftest import Stix, wait_until
from tests.sshbed import SshBed, bed_fixture
from tests.test_aws_e2e import _use

hosts = bed_fixture(2, scope="module")
aws_server, aws = aws_fixtures()
TASK = (
    "num_nodes: 2\n"
    "resources:\n  infra: aws/us-east-1\n  instance_type: m6i.large\n"
    "run: echo done-$SKYPILOT_NODE_RANK\n"
)
STEPS = ["ImportKeyPair", "CreateSecurityGroup", "RunInstances", "CreateTags"]


def _stix_groups(aws: AwsBed) -> list[str]:
    groups = aws.ec2("describe_security_groups")["SecurityGroups"]
    return [g["GroupName"] for g in groups if g["GroupName"].startswith("stix-")]


@pytest.mark.parametrize("step", STEPS)
def test_a_daemon_killed_during_provisioning_resumes_to_one_complete_cluster(
    stix: Stix, aws: AwsBed, hosts: SshBed, task_file, step: str
) -> None:
    _use(stix, aws, hosts)
    aws.hold(step)
    client = stix.popen("launch", "-c", "k", "-y", str(task_file(TASK)))
    wait_until(lambda: aws.held()["waiting"] == 1, timeout=60)
    stix.kill_daemon()
    client.communicate(timeout=30)
    assert client.returncode != 0  # its daemon died under it
    aws.let_go()
    wait_until(lambda: aws.held()["forwarded"] == 1, timeout=30)

    wait_until(lambda: stix.clusters().get("k", {}).get("status") == "UP", timeout=120)
    wait_until(lambda: stix.job_status("k", 1) == "SUCCEEDED", timeout=60)
    made = aws.live_instances("k")
    assert len(made) == 2, made
    assert aws.seen().count("RunInstances") == 1  # found by its tags, not made again
    ranks = sorted({t["Key"]: t["Value"] for t in i["Tags"]}["stix-node-rank"] for i in made)
    assert ranks == ["0", "1"]
    assert _stix_groups(aws) == ["stix-k"]
    assert len(aws.ec2("describe_key_pairs")["KeyPairs"]) == 1

    stix.run("down", "k", "-y", check=True, timeout=120)
    assert aws.live_instances() == []
    assert _stix_groups(aws) == []
