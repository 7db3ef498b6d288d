"""`launch --infra aws` end to end: stixctl → stixd → EC2 on a real moto server → agents on
real sshd hosts (the testing-only STIX_TEST_SSH_HOSTS mapping stands them in for instances)."""

from __future__ import annotations

import json
import os
from getpass import getuser
from pathlib import Path

from tests.awsbed import AwsBed, aws_fixtures
from tests.conftest import REPO, Stix, wait_until
from tests.sshbed import SshBed, bed_fixture

hosts = bed_fixture(2, scope="module")
aws_server, aws = aws_fixtures()
CATALOGS = Path(os.environ.get("STIX_CATALOG_DIR") or REPO.parent / "shared" / "catalogs")


def _use(stix: Stix, aws: AwsBed, bed: SshBed) -> None:
    stix.env.update(aws.env)
    stix.env.update(
        {
            "STIX_CATALOG_DIR": str(CATALOGS),
            "STIX_TEST_SSH_HOSTS": ",".join(f"root@{h.ip}:22" for h in bed.hosts),
            "STIX_TEST_SSH_KEY": str(bed.key),
            "AWS_SHARED_CREDENTIALS_FILE": str(stix.home / "no-aws-credentials"),
            "AWS_CONFIG_FILE": str(stix.home / "no-aws-config"),
        }
    )


def _stix_groups(aws: AwsBed) -> list[str]:
    groups = aws.ec2("describe_security_groups")["SecurityGroups"]
    return [g["GroupName"] for g in groups if g["GroupName"].startswith("stix-")]


def test_two_node_job_on_aws_then_down_terminates_everything(
    stix: Stix, aws: AwsBed, hosts: SshBed, task_file
) -> None:
    _use(stix, aws, hosts)
    path = task_file(
        "num_nodes: 2\n"
        "resources:\n  infra: aws/us-east-1\n  ports: 8080\n"
        "setup: echo setup-on-$(hostname)\n"
        "run: |\n"
        '  echo "rank=$SKYPILOT_NODE_RANK host=$(hostname) n=$SKYPILOT_NUM_NODES"\n'
    )
    out = stix.run("launch", "-c", "c", "-y", str(path), timeout=180)
    assert out.returncode == 0, out.stderr + (stix.home / "stixd.log").read_text()[-3000:]
    for rank, host in enumerate(hosts.hosts):
        assert f"rank={rank} host={host.name} n=2" in out.stdout
    cluster = stix.clusters()["c"]
    assert cluster["status"] == "UP" and cluster["infra"] == "aws/us-east-1"
    assert cluster["resources"].startswith("2x aws/us-east-1 ")
    assert cluster["hourly_price"] > 0  # the catalog's on-demand price of the instance type
    made = aws.live_instances("c")
    assert len(made) == 2 and {i["State"]["Name"] for i in made} == {"running"}
    assert {i["Placement"]["AvailabilityZone"][:9] for i in made} == {"us-east-1"}
    assert len({i["Placement"]["AvailabilityZone"] for i in made}) == 1  # one placement
    assert _stix_groups(aws) == ["stix-c"]

    again = stix.run("exec", "c", "echo again-$SKYPILOT_NODE_RANK", check=True, timeout=60)
    assert "again-0" in again.stdout
    refreshed = stix.json("status", "--refresh")
    assert [c["status"] for c in refreshed if c["name"] == "c"] == ["UP"]

    shell = stix.run("ssh", "c", "--node", "1", "hostname", check=True, timeout=60)
    assert shell.stdout.strip() == hosts.hosts[1].name

    stix.run("stop", "c", "-y", check=True, timeout=120)
    assert {i["State"]["Name"] for i in aws.live_instances("c")} == {"stopped"}
    assert stix.clusters()["c"]["status"] == "STOPPED"
    stix.run("start", "c", "-y", check=True, timeout=120)
    assert {i["State"]["Name"] for i in aws.live_instances("c")} == {"running"}
    assert sorted(i["InstanceId"] for i in aws.live_instances("c")) == sorted(
        i["InstanceId"] for i in made
    )  # the same instances, started again
    back = stix.run("exec", "c", "--num-nodes", "2", "echo back-$SKYPILOT_NODE_RANK", timeout=60)
    assert back.returncode == 0 and "back-1" in back.stdout, back.stderr

    stix.run("down", "c", "-y", check=True, timeout=120)
    assert "c" not in stix.clusters()
    [cost] = [r for r in stix.json("cost-report")["rows"] if r["name"] == "c"]
    assert cost["hourly_price"] == cluster["hourly_price"] and cost["cost"] > 0
    assert aws.live_instances("c") == []
    assert {i["State"]["Name"] for i in aws.instances("c")} == {"terminated"}
    assert _stix_groups(aws) == []
    # the key pair is the stix home's, kept for the next cluster
    keys = aws.ec2("describe_key_pairs")["KeyPairs"]
    assert [k["KeyName"][:5] for k in keys] == ["stix-"]


def test_check_reports_aws_and_what_is_missing(stix: Stix, aws: AwsBed, hosts: SshBed) -> None:
    _use(stix, aws, hosts)
    rows = {r["infra"]: r for r in json.loads(stix.run("check", "--json", check=True).stdout)}
    assert rows["aws"]["enabled"], rows["aws"]
    assert "environment variables" in rows["aws"]["reason"]
    stix.run("daemon", "stop", check=True)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        del stix.env[name]
    rows = {r["infra"]: r for r in json.loads(stix.run("check", "--json", check=True).stdout)}
    assert not rows["aws"]["enabled"]
    assert "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in rows["aws"]["reason"]
    assert str(stix.home / "no-aws-credentials") in rows["aws"]["reason"]
    refused = stix.run("launch", "-c", "x", "--infra", "aws", "-y", "echo x", timeout=60)
    assert (
        refused.returncode == 2 and "'aws' is not available: no AWS credentials" in refused.stderr
    )
    assert aws.seen().count("RunInstances") == 0


def test_autostop_on_aws_stops_the_instances_and_with_down_terminates_them(
    stix: Stix, aws: AwsBed, hosts: SshBed
) -> None:
    _use(stix, aws, hosts)
    infra = ["--infra", "aws/us-east-1", "--instance-type", "m6i.large", "-y"]
    stix.run("launch", "-c", "idle", "-i", "0", *infra, "echo ok", check=True, timeout=120)
    wait_until(lambda: stix.clusters()["idle"]["status"] == "STOPPED", timeout=60)
    assert {i["State"]["Name"] for i in aws.live_instances("idle")} == {"stopped"}
    assert [c["status"] for c in stix.json("status", "--refresh")] == ["STOPPED"]
    stix.run("down", "idle", "-y", check=True, timeout=120)
    assert aws.live_instances("idle") == []

    stix.run("launch", "-c", "gone", "-i", "0", "--down", *infra, "echo ok", check=True)
    wait_until(lambda: "gone" not in stix.clusters(), timeout=60)
    assert aws.live_instances("gone") == []
    assert _stix_groups(aws) == []


def test_instances_terminated_outside_stix_show_in_status_refresh(
    stix: Stix, aws: AwsBed, hosts: SshBed
) -> None:
    """One node's instance gone (a spot interruption, the console): the cluster is INIT and
    says which instance and why; all of them gone: the cluster is gone."""
    _use(stix, aws, hosts)
    infra = ["--infra", "aws/us-east-1", "--instance-type", "m6i.large", "-y"]
    stix.run("launch", "-c", "ext", "--num-nodes", "2", *infra, "true", check=True, timeout=120)
    by_rank = {
        {t["Key"]: t["Value"] for t in i["Tags"]}["stix-node-rank"]: i["InstanceId"]
        for i in aws.live_instances("ext")
    }
    aws.ec2("terminate_instances", InstanceIds=[by_rank["1"]])
    [row] = [c for c in stix.json("status", "--refresh") if c["name"] == "ext"]
    assert row["status"] == "INIT"
    assert f"node 1 ({hosts.hosts[1].ip}) is unreachable" in row["last_error"]
    assert f"instance {by_rank['1']} is terminated" in row["last_error"]
    aws.ec2("terminate_instances", InstanceIds=[by_rank["0"]])
    assert "ext" not in {c["name"] for c in stix.json("status", "--refresh")}


def test_the_daemon_finds_and_terminates_leaks_but_never_a_live_cluster(
    stix: Stix, aws: AwsBed, hosts: SshBed
) -> None:
    _use(stix, aws, hosts)
    stix.env.update(
        {
            "STIX__AWS__LEAK_CHECK_MINUTES": "0.01",
            "STIX__AWS__LEAK_MIN_AGE_MINUTES": "0",
            "STIX__AWS__TERMINATE_LEAKS": "true",
        }
    )
    infra = ["--infra", "aws/us-east-1", "--instance-type", "m6i.large", "-y"]
    stix.run("launch", "-c", "keep", *infra, "true", check=True, timeout=120)
    tags = [{"Key": "stix-cluster", "Value": "ghost"}, {"Key": "stix-user", "Value": getuser()}]
    ghost = aws.ec2(
        "run_instances",
        ImageId=aws.an_image(),
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
    )["Instances"][0]["InstanceId"]
    wait_until(lambda: aws.live_instances("ghost") == [], timeout=30)
    log = (stix.home / "stixd.log").read_text()
    assert "aws_leak" in log and ghost in log and "aws_leaks_terminated" in log
    assert len(aws.live_instances("keep")) == 1
    assert stix.clusters()["keep"]["status"] == "UP"
    stix.run("down", "keep", "-y", check=True, timeout=120)


def test_status_refresh_asks_ec2_about_all_clusters_together(
    stix: Stix, aws: AwsBed, hosts: SshBed
) -> None:
    """One call per cluster, one after another, would cost N round trips to EC2: the actors
    look at the same time and their look-ups share calls (one in flight, the rest the next)."""
    _use(stix, aws, hosts)
    stix.env["STIX__DAEMON__HEALTH_CHECK_SECONDS"] = "3600"  # no look-ups but the refresh's
    infra = ["--infra", "aws/us-east-1", "--instance-type", "m6i.large", "-y"]
    names = ["r0", "r1", "r2", "r3"]
    for name in names:
        stix.run("launch", "-c", name, "-d", *infra, "true", check=True, timeout=120)
    before = aws.seen().count("DescribeInstances")
    rows = stix.json("status", "--refresh")
    assert sorted(r["name"] for r in rows if r["status"] == "UP") == names
    assert aws.seen().count("DescribeInstances") - before <= 2
    for name in names:
        stix.run("down", name, "-y", check=True, timeout=120)
