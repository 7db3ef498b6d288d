"""`launch --infra aws` end to end: stixctl → stixd → EC2 on a real moto server → agents on
real sshd hosts (the testing-only STIX_TEST_SSH_HOSTS mapping stands them in for instances)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
from getpass import getuser
from pathlib import Path

import pytest

from tests.awsbed import AwsBed, aws_fixtures
from tests.conftest import REPO, Stix, processes_mentioning, wait_until
from tests.sshbed import Host, SshBed, bed_fixture
from tests.stores_bed import Emulator
from tests.test_managed_jobs import managed
from tests.test_storage import buckets, s3
from tests.test_storage_ssh import moto_bridge  # noqa: F401 (a fixture)

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


def _open_ports(aws: AwsBed, group: str) -> set[int]:
    [found] = aws.ec2("describe_security_groups", GroupIds=[group])["SecurityGroups"]
    return {int(p["FromPort"]) for p in found.get("IpPermissions") or []}


def _revoke(aws: AwsBed, name: str, port: int) -> str:
    """Close ``port`` of the group called ``name``; its id."""
    [found] = aws.ec2(
        "describe_security_groups", Filters=[{"Name": "group-name", "Values": [name]}]
    )["SecurityGroups"]
    group = str(found["GroupId"])
    rule = {"IpProtocol": "tcp", "FromPort": port, "ToPort": port}
    aws.ec2(
        "revoke_security_group_ingress",
        GroupId=group,
        IpPermissions=[{**rule, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}],
    )
    assert port not in _open_ports(aws, group)
    return group


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
    group = _revoke(aws, "stix-c", 8080)  # someone closed the task's port outside stix
    stix.run("start", "c", "-y", check=True, timeout=120)
    assert 8080 in _open_ports(aws, group)  # the launch opens the task's ports again
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
    says which instance and why, and its running job ends at once; all of them gone: the
    cluster is gone."""
    _use(stix, aws, hosts)
    infra = ["--infra", "aws/us-east-1", "--instance-type", "m6i.large", "-y"]
    two = ["--num-nodes", "2", "-d"]
    stix.run("launch", "-c", "ext", *two, *infra, "sleep 300", check=True, timeout=120)
    wait_until(lambda: stix.job_status("ext", 1) == "RUNNING", timeout=30)
    by_rank = {
        {t["Key"]: t["Value"] for t in i["Tags"]}["stix-node-rank"]: i["InstanceId"]
        for i in aws.live_instances("ext")
    }
    aws.ec2("terminate_instances", InstanceIds=[by_rank["1"]])
    [row] = [c for c in stix.json("status", "--refresh") if c["name"] == "ext"]
    assert row["status"] == "INIT"
    assert f"node 1 ({hosts.hosts[1].ip}) is unreachable" in row["last_error"]
    assert f"instance {by_rank['1']} is terminated" in row["last_error"]
    wait_until(lambda: stix.job_status("ext", 1) == "FAILED_DRIVER", timeout=20)  # grace: 60 s
    [lost] = [e["why"] for e in stix.json("events", "ext") if e["event"] == "node_lost"]
    assert lost.startswith(f"node 1 instance {by_rank['1']} is terminated")
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
    # the daemon logs the termination once the call that made it has returned: a moment later
    wait_until(lambda: "leaks_terminated" in (stix.home / "stixd.log").read_text(), timeout=10)
    log = (stix.home / "stixd.log").read_text()
    assert "leak_found" in log and ghost in log
    assert len(aws.live_instances("keep")) == 1
    assert stix.clusters()["keep"]["status"] == "UP"
    stix.run("down", "keep", "-y", check=True, timeout=120)


def _ghost(aws: AwsBed, cluster: str = "ghost", itype: str = "m6i.large") -> str:
    """An instance with stix's tags for this user that no cluster record owns (a leak)."""
    tags = [{"Key": "stix-cluster", "Value": cluster}, {"Key": "stix-user", "Value": getuser()}]
    return str(
        aws.ec2(
            "run_instances",
            ImageId=aws.an_image(),
            InstanceType=itype,
            MinCount=1,
            MaxCount=1,
            TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
        )["Instances"][0]["InstanceId"]
    )


def test_stixctl_leaks_lists_and_terminates_leaks_which_status_mentions_meanwhile(
    stix: Stix, aws: AwsBed, hosts: SshBed
) -> None:
    _use(stix, aws, hosts)
    stix.env["STIX__AWS__LEAK_MIN_AGE_MINUTES"] = "0"  # the reconciler itself stays 10 min away
    infra = ["--infra", "aws/us-east-1", "--instance-type", "m6i.large", "-y"]
    stix.run("launch", "-c", "keep", *infra, "true", check=True, timeout=120)
    assert "leak" not in stix.run("status", check=True).stdout  # no scan yet, nothing to say
    ghost = _ghost(aws)

    [leak] = stix.json("leaks")["leaks"]
    assert (leak["id"], leak["region"], leak["cluster"], leak["kind"]) == (
        ghost,
        "us-east-1",
        "ghost",
        "instance",
    )
    assert leak["instance_type"] == "m6i.large" and leak["age_seconds"] >= 0
    assert leak["hourly_price"] == stix.clusters()["keep"]["hourly_price"]  # the catalog's price
    table = stix.run("leaks", check=True).stdout
    assert ghost in table and "ghost" in table and "$" in table

    status = stix.run("status", check=True).stdout
    assert f"1 leaked instance(s) no cluster owns ({ghost})" in status
    assert [c["name"] for c in stix.json("status")] == ["keep"]  # --json keeps its list shape

    declined = stix.run("leaks", "--terminate", input="n\n", check=True)
    assert ghost in declined.stdout and "Nothing terminated" in declined.stderr
    assert len(aws.live_instances("ghost")) == 1
    done = stix.run("leaks", "--terminate", "-y", check=True, timeout=120)
    assert f"Terminated 1: {ghost}" in done.stdout
    assert aws.live_instances("ghost") == []
    assert len(aws.live_instances("keep")) == 1 and stix.clusters()["keep"]["status"] == "UP"
    assert "leak" not in stix.run("status", check=True).stdout
    assert stix.run("leaks", check=True).stdout.strip() == "No leaked instances."
    stix.run("down", "keep", "-y", check=True, timeout=120)


def _machine_gone(host: Host, cluster: str, rank: int = 0) -> None:
    """What the end of an instance does to the node: its agent, its jobs and its disk are gone
    (the sshd host that stands in for the instance stays, for the next instance)."""
    on_host = set(host.pids())
    for pid in processes_mentioning(f"/.stix/nodes/{cluster}-{rank} "):
        if pid in on_host:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(os.getpgid(pid), signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    shutil.rmtree(host.home / ".stix" / "nodes" / f"{cluster}-{rank}", ignore_errors=True)


def test_a_preempted_spot_instance_ends_its_run_at_once_and_the_managed_job_recovers(
    stix: Stix, aws: AwsBed, hosts: SshBed, task_file, tmp_path: Path
) -> None:
    """EC2 takes a spot instance back: the health check (1 s here) sees it terminated with
    EC2's reason, records the preemption, ends the run FAILED_DRIVER at once (not after the
    60 s node grace), and the managed job comes back RUNNING on a new spot instance."""
    _use(stix, aws, hosts)
    stix.env["STIX__DAEMON__HEALTH_CHECK_SECONDS"] = "1"
    marks = tmp_path / "runs"
    marks.mkdir()
    path = task_file(
        "name: sp\n"
        "run: |\n"
        f"  echo run > {marks}/$(date +%s%N)\n"
        f"  [ $(ls {marks} | wc -l) -ge 2 ] || sleep 600\n"
    )
    spot = ["--infra", "aws/us-east-1", "--instance-type", "m6i.large", "--use-spot"]
    stix.run("jobs", "launch", "-d", "-y", *spot, str(path), check=True, timeout=120)
    wait_until(lambda: managed(stix, 1)["status"] == "RUNNING" and any(marks.iterdir()), 120)
    [first] = aws.live_instances("sp-1")
    assert first["InstanceLifecycle"] == "spot"

    aws.interrupt_spot(first["InstanceId"])
    _machine_gone(hosts.hosts[0], "sp-1")
    job = wait_until(lambda: (j := managed(stix, 1))["recoveries"] == 1 and j, timeout=40)
    [reason] = job["recovery_reasons"]
    assert f"preempted: spot instance {first['InstanceId']} is terminated" in reason
    assert "Server.SpotInstanceTermination" in reason
    events = stix.json("events", "sp-1")
    [preempted] = [e for e in events if e["event"] == "node_preempted"]
    assert first["InstanceId"] in preempted["why"] and "Server.Spot" in preempted["why"]

    done = wait_until(lambda: (j := managed(stix, 1))["status"] == "SUCCEEDED" and j, 120)
    assert done["recoveries"] == 1 and len(list(marks.iterdir())) == 2
    wait_until(lambda: aws.live_instances("sp-1") == [], timeout=60)
    [second] = [i for i in aws.instances("sp-1") if i["InstanceId"] != first["InstanceId"]]
    assert second["InstanceLifecycle"] == "spot"
    assert _stix_groups(aws) == []


def test_a_resize_made_outside_stix_shows_in_status_events_and_cost_report(
    stix: Stix, aws: AwsBed, hosts: SshBed
) -> None:
    """Stopped from the console, given another instance type and a bigger disk, started again:
    `status --refresh` follows each step and prices the cluster at the new type from then on."""
    _use(stix, aws, hosts)
    infra = ["--infra", "aws/us-east-1", "--instance-type", "m6i.large", "-y"]
    stix.run("launch", "-c", "rs", *infra, "true", check=True, timeout=120)
    before = stix.clusters()["rs"]
    assert before["resources"] == "1x aws/us-east-1 m6i.large"
    [inst] = aws.live_instances("rs")
    iid = inst["InstanceId"]
    [volume] = [b["Ebs"]["VolumeId"] for b in inst["BlockDeviceMappings"]]

    aws.ec2("stop_instances", InstanceIds=[iid])
    [row] = [c for c in stix.json("status", "--refresh") if c["name"] == "rs"]
    assert row["status"] == "STOPPED" and f"instance {iid} is stopped" in row["last_error"]
    aws.ec2("modify_instance_attribute", InstanceId=iid, InstanceType={"Value": "m6i.xlarge"})
    aws.ec2("modify_volume", VolumeId=volume, Size=300)
    aws.ec2("start_instances", InstanceIds=[iid])
    [row] = [c for c in stix.json("status", "--refresh") if c["name"] == "rs"]
    assert row["status"] == "UP"
    assert row["resources"] == "1x aws/us-east-1 m6i.xlarge, disk 300 GB"
    assert row["hourly_price"] > 1.5 * before["hourly_price"]  # the catalog's xlarge price
    changes = [e["why"] for e in stix.json("events", "rs") if e["event"] == "machine_changed"]
    assert "node 0: instance type m6i.large -> m6i.xlarge (made outside stix)" in changes
    assert "node 0: disk 256 -> 300 GB (made outside stix)" in changes
    [cost] = [r for r in stix.json("cost-report")["rows"] if r["name"] == "rs"]
    assert cost["resources"] == row["resources"] and cost["hourly_price"] == row["hourly_price"]
    # the time before the resize stays at the old price: less than all of it at the new one
    assert 0 < cost["cost"] < cost["duration_seconds"] / 3600 * row["hourly_price"]
    stix.run("down", "rs", "-y", check=True, timeout=120)


def test_the_agent_stops_its_machine_when_autostop_is_due_and_the_daemon_is_gone(
    stix: Stix, aws: AwsBed, hosts: SshBed, tmp_path: Path
) -> None:
    """The dead-man's switch on a cloud node: with no daemon to stop the instance, the agent
    runs the machine's own shutdown (here a stand-in that says where it ran)."""
    _use(stix, aws, hosts)
    marker = tmp_path / "self-stopped"
    stix.env["STIX_TEST_SELF_STOP_COMMAND"] = f"hostname > {marker}"
    stix.env["STIX__AUTOSTOP__GRACE_MINUTES"] = "0"
    infra = ["--infra", "aws/us-east-1", "--instance-type", "m6i.large", "-y"]
    # 9 s idle: the daemon, which would stop the instance itself, is gone well before
    stix.run("launch", "-c", "dm", "-i", "0.15", *infra, "true", check=True, timeout=120)
    stix.run("daemon", "stop", check=True)
    # the shell makes the file before `hostname` writes to it: wait for the name itself
    ran_on = wait_until(lambda: marker.exists() and marker.read_text().strip(), timeout=30)
    assert ran_on == hosts.hosts[0].name
    states = {i["State"]["Name"] for i in aws.live_instances("dm")}
    log = (stix.home / "stixd.log").read_text()
    assert states == {"running"}, f"the daemon acted: {states}\n{log[-3000:]}"
    stix.run("down", "dm", "-y", check=True, timeout=120)
    assert aws.live_instances("dm") == []


def test_a_spot_interruption_notice_ends_the_running_job_before_the_instance_goes(
    stix: Stix, aws: AwsBed, hosts: SshBed
) -> None:
    _use(stix, aws, hosts)
    infra = ["--infra", "aws/us-east-1", "--instance-type", "m6i.large", "--use-spot", "-y"]
    stix.run("launch", "-c", "sn", "-d", *infra, "sleep 300", check=True, timeout=120)
    wait_until(lambda: stix.job_status("sn", 1) == "RUNNING", timeout=30)
    [inst] = aws.live_instances("sn")
    aws.spot_notice(inst["InstanceId"])
    stix.run("status", "--refresh", check=True)
    wait_until(lambda: stix.job_status("sn", 1) == "FAILED_DRIVER", timeout=20)  # grace: 60 s
    [notice] = [e for e in stix.json("events", "sn") if e["event"] == "node_preempted"]
    assert f"spot instance {inst['InstanceId']} has an interruption notice" in notice["why"]
    assert "marked-for-termination" in notice["why"]
    stix.run("down", "sn", "-y", check=True, timeout=120)
    assert aws.live_instances("sn") == []


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


def _host_mounts(host: Host) -> list[str]:
    """The rclone mounts under root's home in the host's own mount namespace (its sshd's)."""
    text = host.exec("sh", "-c", f"cat /proc/$(cat {host.dir}/sshd.pid)/mounts").stdout
    points = [line.split()[1] for line in text.splitlines() if " fuse.rclone " in line]
    return [p for p in points if p.startswith("/root/")]


def _instance_ends(host: Host, cluster: str, rank: int = 0) -> None:
    """EC2's end of the instance for the node's mounts: its rclone and the FUSE mount go with
    the machine (the sshd host that stands in for it stays; see ``_machine_gone``)."""
    on_host = set(host.pids())
    for pid in set(processes_mentioning(f"/.stix/nodes/{cluster}-{rank}/mounts/")) & on_host:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _machine_gone(host, cluster, rank)
    sshd = (host.dir / "sshd.pid").read_text().strip()
    for point in _host_mounts(host):
        host.exec("nsenter", "-t", sshd, "-m", "umount", "-l", point)


@pytest.mark.slow
def test_a_bucket_for_an_aws_job_is_made_in_its_region_mounted_on_its_node_and_gone_after_down(
    stix: Stix,
    aws: AwsBed,
    hosts: SshBed,
    moto_bridge: Emulator,  # noqa: F811 (the fixture)
    task_file,
    tmp_path: Path,
) -> None:
    """A storage naming no store, on a launch placed in us-west-2 (not the default region):
    its bucket is made there, as SkyPilot makes a task's bucket in the cluster's region; the
    job reads and writes it through rclone's FUSE mount (MOUNT, the default) on its node, whose
    rclone got the bucket's region and STS session keys (not the daemon's); `down` deletes the
    non-persistent bucket. S3 is the moto on the bed's bridge, the one address both the daemon
    and the instance's namespace reach; EC2 stays the bed's moto (STS too). Before EC2 ends the
    instance, `down` asks its agent to flush and unmount the bucket (as on every infra), so no
    mount is left on the sshd host standing in for it; the test then ends the rest there as
    EC2 would."""
    _use(stix, aws, hosts)
    config = f"storage:\n  s3: {{endpoint_url: '{moto_bridge.url}'}}\n"
    (stix.home / "config.yaml").write_text(config)
    data = tmp_path / "data"
    data.mkdir()
    (data / "in.txt").write_text("from-the-bucket\n")
    path = task_file(
        "resources:\n  infra: aws/us-west-2\n"
        f"file_mounts:\n  ~/w:\n    name: stix-aws-west\n    source: {data}\n"
        "    persistent: false\n"
        "run: |\n  set -e\n  echo read-$(cat ~/w/in.txt)\n  echo from-the-job > ~/w/out.txt\n"
    )
    out = stix.run("launch", "-c", "w", "-y", str(path), timeout=180)
    assert out.returncode == 0, out.stderr + (stix.home / "stixd.log").read_text()[-3000:]
    assert "read-from-the-bucket" in out.stdout
    assert stix.clusters()["w"]["infra"] == "aws/us-west-2"
    assert len(aws.live_instances("w", region="us-west-2")) == 1
    west = s3(moto_bridge)
    assert west.get_bucket_location(Bucket="stix-aws-west")["LocationConstraint"] == "us-west-2"
    head = west.head_bucket(Bucket="stix-aws-west")["ResponseMetadata"]["HTTPHeaders"]
    assert head["x-amz-bucket-region"] == "us-west-2"
    got = west.get_object(Bucket="stix-aws-west", Key="out.txt")["Body"].read()
    assert got == b"from-the-job\n"  # the job's write, through the mount
    host = hosts.hosts[0]
    assert _host_mounts(host) == ["/root/w"]
    [folder] = (host.home / ".stix" / "nodes" / "w-0" / "mounts").iterdir()
    remote = (folder / "rclone.conf").read_text().splitlines()
    assert {"region = us-west-2", f"endpoint = {moto_bridge.url}", "env_auth = true"} <= {*remote}
    assert not [line for line in remote if "secret" in line or "testing" in line]
    keys = json.loads((folder / "keys.json").read_text())  # minted by STS for the bucket
    assert keys["SessionToken"] and keys["AccessKeyId"] != "testing"

    stix.run("down", "w", "-y", check=True, timeout=120)
    # the bucket goes with its last cluster, after `down` answers (told, not awaited)
    wait_until(lambda: "stix-aws-west" not in buckets(moto_bridge), timeout=60, interval=0.3)
    assert aws.live_instances("w", region="us-west-2") == []
    assert _host_mounts(host) == []  # flushed and unmounted by its agent before EC2's end
    _instance_ends(host, "w")
