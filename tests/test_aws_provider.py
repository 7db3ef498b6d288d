"""The aws provider against a real moto server (and real sshd hosts standing in for instances).

moto cannot fail a launch for lack of capacity or quota, so those errors come from the fault
proxy of tests/awsfault.py, which answers chosen EC2 actions the way EC2 does.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import structlog

from stixd.agent_bundle import build_agent_zipapp
from stixd.logs import make_logger
from stixd.providers.aws import AwsProvider, credentials, instances
from stixd.providers.aws.errors import QUOTA_MEMORY_S, AwsAuthError, AwsCapacityError
from stixd.providers.aws.instances import TAG_RANK, TAG_USER
from stixd.providers.aws.nodes import AwsNodes
from stixd.providers.aws.records import Records
from stixd.providers.base import Block, NodeInfo, NodeStatus, ProvisionRequest
from stixd.providers.shared.ssh_transport import SshSettings
from stixproto.errors import ProvisionError
from tests.awsbed import AwsBed, aws_fixtures
from tests.sshbed import SshBed, bed_fixture

pytestmark = pytest.mark.anyio
hosts = bed_fixture(2, scope="module")
aws_server, aws = aws_fixtures()


@pytest.fixture(scope="module")
def pyz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_agent_zipapp(tmp_path_factory.mktemp("agent"))


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path


def _env(aws: AwsBed, bed: SshBed | None = None) -> dict[str, str]:
    env = {**aws.env, "HOME": "/nonexistent", "AWS_CONFIG_FILE": "/nonexistent/config"}
    if bed is not None:
        env["STIX_TEST_SSH_HOSTS"] = ",".join(f"root@{h.ip}:22" for h in bed.hosts)
        env["STIX_TEST_SSH_KEY"] = str(bed.key)
    return env


def _request(cluster: str, pyz: Path, n: int, aws: AwsBed, **resources: object) -> ProvisionRequest:
    res = {"region": "us-east-1", "instance_type": "t3.micro", "image_id": aws.an_image()}
    return ProvisionRequest(cluster, n, pyz, resources={**res, **resources})


async def test_check_names_where_credentials_come_from_and_what_is_missing(aws: AwsBed) -> None:
    provider = AwsProvider(Path("/nonexistent"), _env(aws))
    ok = await provider.check()
    assert ok.enabled and "environment variables" in ok.reason and aws.url in ok.reason
    aws.fault("DescribeAvailabilityZones", "AuthFailure", status=401, message="bad keys")
    refused = await provider.check()
    assert not refused.enabled and "AuthFailure: bad keys" in refused.reason
    await provider.aclose()
    bare = {"HOME": "/nonexistent", "PATH": "/usr/bin"}
    missing = await AwsProvider(Path("/nonexistent"), bare).check()
    assert not missing.enabled
    assert "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in missing.reason
    assert "/nonexistent/.aws/credentials" in missing.reason


async def test_check_reads_profiles_of_the_shared_files_and_says_what_a_profile_lacks(
    aws: AwsBed, tmp_path: Path
) -> None:
    creds, conf = tmp_path / "credentials", tmp_path / "config"
    creds.write_text(
        "[default]\naws_access_key_id = half\n\n"
        "[work]\naws_access_key_id = testing\naws_secret_access_key = testing\n"
    )
    conf.write_text(
        f"[profile work]\nregion = us-west-2\nendpoint_url = {aws.url}\n\n"
        "[profile sso]\nsso_start_url = https://example.invalid/start\n"
    )
    base = {
        "HOME": str(tmp_path),
        "AWS_SHARED_CREDENTIALS_FILE": str(creds),
        "AWS_CONFIG_FILE": str(conf),
    }

    async def check(**env: str) -> tuple[bool, str]:
        provider = AwsProvider(tmp_path, {**base, **env})
        try:
            result = await provider.check()
        finally:
            await provider.aclose()
        return result.enabled, result.reason

    enabled, reason = await check(AWS_PROFILE="work")
    assert enabled, reason
    assert f"profile work in {creds}" in reason and "us-west-2" in reason and aws.url in reason
    half = f"AWS profile 'default' in {creds} has no aws_secret_access_key"
    assert await check() == (False, half)
    enabled, reason = await check(AWS_PROFILE="sso")
    assert not enabled and "gets its keys through sso_start_url" in reason
    enabled, reason = await check(AWS_PROFILE="ghost")
    assert not enabled and f"'ghost' (from AWS_PROFILE) is in neither {creds} nor {conf}" in reason


async def test_an_answer_that_is_no_aws_response_is_retried_like_a_5xx(aws: AwsBed) -> None:
    """An overloaded endpoint or a proxy may answer with an HTML error page: botocore cannot
    parse it; stix tries again instead of failing the request as an internal error."""
    page = "<!doctype html>\n<title>500 Internal Server Error</title>\n"
    aws.fault("DescribeAvailabilityZones", "", body=page, status=500, times=1)
    provider = AwsProvider(Path("/nonexistent"), _env(aws))
    try:
        result = await provider.check()
    finally:
        await provider.aclose()
    assert result.enabled, result.reason


async def test_credentials_are_parsed_again_only_when_a_file_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every plan asks whether AWS is usable: the answer is kept until a credentials or config
    file is written, created or removed."""
    creds, conf = tmp_path / "credentials", tmp_path / "config"
    env = {
        "HOME": str(tmp_path),
        "AWS_SHARED_CREDENTIALS_FILE": str(creds),
        "AWS_CONFIG_FILE": str(conf),
    }
    provider = AwsProvider(tmp_path, env)
    parsed: list[Path] = []
    real = credentials._read

    def counted(path: Path) -> Any:
        parsed.append(path)
        return real(path)

    monkeypatch.setattr(credentials, "_read", counted)
    for _ in range(3):
        assert "no AWS credentials" in (provider.credentials_problem() or "")
    assert parsed == [creds, conf]
    creds.write_text("[default]\naws_access_key_id = k\naws_secret_access_key = s\n")
    assert provider.credentials_problem() is None
    assert provider.credentials_problem() is None
    assert len(parsed) == 4
    conf.write_text("[default]\nregion = eu-west-1\n")
    assert provider.credentials_problem() is None and len(parsed) == 6
    creds.unlink()
    assert "no AWS credentials" in (provider.credentials_problem() or "")
    await provider.aclose()


async def test_at_debug_level_every_ec2_request_is_logged_with_its_duration(
    aws: AwsBed, home: Path
) -> None:
    """What bench/bench_aws.py splits a launch with; at the default level nothing is logged."""
    for level in ("debug", "info"):
        path = home / f"{level}.log"
        log, stream = make_logger(path, level)
        provider = AwsProvider(home, _env(aws), log=log)
        before = time.time()
        assert (await provider.check()).enabled
        aws.fault("DescribeAvailabilityZones", "AuthFailure", status=401, times=1)
        assert not (await provider.check()).enabled
        await provider.aclose()
        stream.close()
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        calls = [r for r in lines if r["event"] == "aws_call"]
        made = [r for r in lines if r["event"] == "aws_client_made"]
        if level == "info":
            assert calls == [] and made == []
            continue
        assert [c["operation"] for c in calls] == ["describe_availability_zones"] * 2
        assert all(c["region"] == "us-east-1" and c["attempt"] == 1 for c in calls)
        assert all(before <= c["began"] <= time.time() and c["s"] > 0 for c in calls)
        assert len(made) == 1 and made[0]["s"] > 0


async def test_clusters_queried_at_once_share_one_describe_call_and_get_their_own_nodes(
    aws: AwsBed, home: Path
) -> None:
    """A daemon restart or `status --refresh` asks about every cluster at the same time."""
    provider = AwsProvider(home, _env(aws))
    image = aws.an_image()
    made: dict[str, list[str]] = {}
    for name, n in (("q0", 2), ("q1", 1), ("q2", 3)):
        tags = [{"Key": "stix-cluster", "Value": name}, {"Key": TAG_USER, "Value": provider.user}]
        spec: dict[str, Any] = {"TagSpecifications": [{"ResourceType": "instance", "Tags": tags}]}
        run = aws.ec2("run_instances", ImageId=image, MinCount=n, MaxCount=n, **spec)
        made[name] = [i["InstanceId"] for i in run["Instances"]]
        for rank, iid in enumerate(made[name]):
            aws.ec2("create_tags", Resources=[iid], Tags=[{"Key": TAG_RANK, "Value": str(rank)}])
    names = [*made, "q3-empty"]
    for name in names:
        provider.records.update(name, region="us-east-1")
    before = aws.seen().count("DescribeInstances")
    got: dict[str, list[int]] = {}

    async def query(name: str) -> None:
        got[name] = [n.rank for n in await provider.query(name)]

    async with anyio.create_task_group() as tg:
        for name in names:
            tg.start_soon(query, name)
    assert aws.seen().count("DescribeInstances") - before == 1
    assert got == {"q0": [0, 1], "q1": [0], "q2": [0, 1, 2], "q3-empty": []}
    aws.ec2("terminate_instances", InstanceIds=made["q1"])  # one after another: a call each
    assert await provider.query("q1") == []
    assert [n.rank for n in await provider.query("q0")] == [0, 1]
    assert aws.seen().count("DescribeInstances") - before == 3
    await provider.aclose()


async def test_a_look_up_waits_for_the_next_call_and_survives_its_makers_cancellation(
    aws: AwsBed, home: Path
) -> None:
    """While one call is in flight, later look-ups go together in the next; when the look-up
    that was to make that call is cancelled, the others still get their answer."""
    provider = AwsProvider(home, _env(aws))
    image = aws.an_image()
    for name in ("la", "lb", "lc"):
        tags = [{"Key": "stix-cluster", "Value": name}, {"Key": TAG_USER, "Value": provider.user}]
        spec: dict[str, Any] = {"TagSpecifications": [{"ResourceType": "instance", "Tags": tags}]}
        [inst] = aws.ec2("run_instances", ImageId=image, MinCount=1, MaxCount=1, **spec)[
            "Instances"
        ]
        aws.ec2(
            "create_tags", Resources=[inst["InstanceId"]], Tags=[{"Key": TAG_RANK, "Value": "0"}]
        )
    listing = provider.listing()
    got: dict[str, list[str]] = {}

    async def find(name: str) -> None:
        got[name] = [i.id for i in await listing.find("us-east-1", name)]

    aws.hold("DescribeInstances")
    async with anyio.create_task_group() as tg:
        tg.start_soon(find, "la")
        await _until(lambda: aws.held()["waiting"] == 1)
        doomed = anyio.CancelScope()
        tg.start_soon(_cancellable, doomed, find, "lb")
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(find, "lc")
        await anyio.wait_all_tasks_blocked()
        doomed.cancel()
        await anyio.wait_all_tasks_blocked()
        aws.let_go()
    assert "lb" not in got
    assert len(got["la"]) == 1 and len(got["lc"]) == 1 and got["la"] != got["lc"]
    assert aws.seen().count("DescribeInstances") == 2  # la's, then lc's asked again alone
    await provider.aclose()


async def _cancellable(scope: anyio.CancelScope, fn: Any, *args: Any) -> None:
    with scope:
        await fn(*args)


async def _until(check: Any, within: float = 10.0) -> None:
    with anyio.fail_after(within):
        while not check():
            await anyio.sleep(0.02)


async def test_a_capacity_error_reaches_stix_at_once_and_blocks_the_zone(
    aws: AwsBed, home: Path, pyz: Path
) -> None:
    """EC2 sends capacity errors as a 500: botocore's own retries would take 10 s."""
    aws.fault(
        "RunInstances",
        "InsufficientInstanceCapacity",
        status=500,
        match={"InstanceType": "p3.2xlarge"},
    )
    provider = AwsProvider(home, _env(aws))
    with pytest.raises(AwsCapacityError) as caught:
        await provider.launch(
            _request("cap", pyz, 1, aws, instance_type="p3.2xlarge", zones=["us-east-1a"])
        )
    assert aws.seen().count("RunInstances") == 1  # botocore did not retry it
    assert caught.value.block == Block(
        infra="aws",
        region="us-east-1",
        instance_type="p3.2xlarge",
        use_spot=False,
        reason="InsufficientInstanceCapacity",
        remember_s=0.0,  # capacity comes back: blocked for this launch's failover only
    )  # every zone asked for failed: the region is blocked for this type
    assert "us-east-1a: InsufficientInstanceCapacity" in caught.value.message
    assert aws.live_instances("cap") == []
    groups = aws.ec2("describe_security_groups")["SecurityGroups"]
    assert [g["GroupName"] for g in groups if g["GroupName"].startswith("stix-")] == []
    await provider.aclose()


async def test_quota_blocks_the_region_and_bad_keys_block_the_cloud(
    aws: AwsBed, home: Path, pyz: Path
) -> None:
    aws.fault("RunInstances", "VcpuLimitExceeded", times=1)
    provider = AwsProvider(home, _env(aws))
    with pytest.raises(AwsCapacityError) as quota:
        await provider.launch(_request("q", pyz, 1, aws))
    assert quota.value.block.region == "us-east-1" and quota.value.block.zone is None
    assert quota.value.block.reason == "VcpuLimitExceeded"
    assert quota.value.block.remember_s == QUOTA_MEMORY_S  # later launches avoid it too
    assert aws.seen().count("RunInstances") == 1  # no other zone is tried for a quota
    aws.fault("DescribeInstances", "AuthFailure", status=401)
    with pytest.raises(AwsAuthError) as auth:
        await provider.launch(_request("q", pyz, 1, aws))
    assert auth.value.block == Block(infra="aws", reason="AuthFailure")
    await provider.aclose()


async def test_capacity_in_one_zone_moves_the_launch_to_the_next(
    aws: AwsBed, hosts: SshBed, home: Path, pyz: Path
) -> None:
    first_subnet = aws.ec2(
        "describe_subnets", Filters=[{"Name": "availability-zone", "Values": ["us-east-1a"]}]
    )["Subnets"][0]["SubnetId"]
    aws.fault(
        "RunInstances",
        "InsufficientInstanceCapacity",
        status=500,
        match={"NetworkInterface.1.SubnetId": first_subnet},
    )
    provider = AwsProvider(home, _env(aws, hosts))
    nodes = await provider.launch(_request("zb", pyz, 1, aws, zones=["us-east-1a", "us-east-1b"]))
    assert [n.status for n in nodes] == [NodeStatus.RUNNING]
    [inst] = aws.live_instances("zb")
    assert inst["Placement"]["AvailabilityZone"] == "us-east-1b"
    assert aws.seen().count("RunInstances") == 2
    await provider.terminate("zb")
    await provider.aclose()


async def test_launch_is_idempotent_by_tags_and_down_leaves_nothing(
    aws: AwsBed, hosts: SshBed, home: Path, pyz: Path
) -> None:
    provider = AwsProvider(home, _env(aws, hosts))
    req = _request("idem", pyz, 2, aws, ports=[8080], disk_size=64)
    nodes = await provider.launch(req)
    assert [(n.rank, n.ip, n.status) for n in nodes] == [
        (0, hosts.hosts[0].ip, NodeStatus.RUNNING),
        (1, hosts.hosts[1].ip, NodeStatus.RUNNING),
    ]
    made = aws.live_instances("idem")
    assert len(made) == 2
    ranks = sorted({t["Key"]: t["Value"] for t in i["Tags"]}[TAG_RANK] for i in made)
    assert ranks == ["0", "1"]
    assert all(any(t["Key"] == TAG_USER for t in i["Tags"]) for i in made)
    volumes = aws.ec2("describe_volumes")["Volumes"]
    assert sorted(v["Size"] for v in volumes) == [64, 64]
    [group] = aws.ec2(
        "describe_security_groups", Filters=[{"Name": "group-name", "Values": ["stix-idem"]}]
    )["SecurityGroups"]
    assert {p["FromPort"] for p in group["IpPermissions"]} == {22, 8080}
    await provider.open_ports("idem", [8080, 9000])
    [group] = aws.ec2("describe_security_groups", GroupIds=[group["GroupId"]])["SecurityGroups"]
    assert sorted(p["FromPort"] for p in group["IpPermissions"]) == [22, 8080, 9000]

    # a retry (a new provider: the daemon restarted) finds the first try's instances
    again = AwsProvider(home, _env(aws, hosts))
    found = await again.launch(req)
    assert [(n.rank, n.ip, n.agent_address) for n in found] == [
        (n.rank, n.ip, n.agent_address) for n in nodes
    ]
    assert aws.seen().count("RunInstances") == 1
    assert sorted(i["InstanceId"] for i in aws.live_instances("idem")) == sorted(
        i["InstanceId"] for i in made
    )
    assert [n.status for n in await again.query("idem")] == [NodeStatus.RUNNING] * 2

    await again.stop("idem")
    assert {i["State"]["Name"] for i in aws.live_instances("idem")} == {"stopped"}
    assert [n.status for n in await again.query("idem")] == [NodeStatus.STOPPED] * 2
    restarted = await again.launch(req)  # a start is a launch
    assert [n.status for n in restarted] == [NodeStatus.RUNNING] * 2
    assert aws.seen().count("RunInstances") == 1

    await again.terminate("idem")
    assert aws.live_instances("idem") == []
    assert (
        aws.ec2(
            "describe_security_groups", Filters=[{"Name": "group-name", "Values": ["stix-idem"]}]
        )["SecurityGroups"]
        == []
    )
    assert await again.query("idem") == []
    await provider.aclose()
    await again.aclose()


async def test_a_crash_between_create_and_rank_tags_is_repaired_not_duplicated(
    aws: AwsBed, hosts: SshBed, home: Path, pyz: Path
) -> None:
    """Instances made but never tagged with a rank (the daemon died in between) are found by
    their cluster tag and given ranks; none is made twice."""
    aws.fault("CreateTags", "InternalError", status=500, times=4)  # every attempt of one call
    provider = AwsProvider(home, _env(aws, hosts))
    req = _request("crash", pyz, 2, aws)
    with pytest.raises(Exception, match="InternalError"):
        await provider.launch(req)
    assert len(aws.live_instances("crash")) == 2
    retry = AwsProvider(home, _env(aws, hosts))
    nodes = await retry.launch(req)
    await retry.aclose()
    assert [n.rank for n in nodes] == [0, 1]
    assert aws.seen().count("RunInstances") == 1
    assert len(aws.live_instances("crash")) == 2
    await provider.terminate("crash")
    assert aws.live_instances("crash") == []
    await provider.aclose()


async def test_a_cluster_is_not_taken_for_gone_while_ec2_does_not_list_it_yet(
    aws: AwsBed, hosts: SshBed, home: Path, pyz: Path
) -> None:
    """EC2 lists new instances late; a record deleted then is a leaked instance later."""
    provider = AwsProvider(home, _env(aws, hosts))
    await provider.launch(_request("late", pyz, 1, aws))
    aws.hide_from_listings("late")
    assert await instances.find(provider.ec2(), "us-east-1", "late", provider.user) == []
    assert [n.status for n in await provider.query("late")] == [NodeStatus.RUNNING]
    restarted = AwsProvider(home, _env(aws, hosts))  # the daemon restarted meanwhile
    assert [n.status for n in await restarted.query("late")] == [NodeStatus.RUNNING]
    await restarted.terminate("late")  # down still finds the instance it made
    await restarted.aclose()
    assert aws.live_instances("late") == []
    await provider.aclose()


async def test_spot_launch_and_a_spot_price_error_blocks_the_spot_zone(
    aws: AwsBed, hosts: SshBed, home: Path, pyz: Path
) -> None:
    aws.fault(
        "RunInstances",
        "SpotMaxPriceTooLow",
        match={"InstanceMarketOptions.MarketType": "spot"},
        times=1,
    )
    provider = AwsProvider(home, _env(aws, hosts))
    req = _request("spot", pyz, 1, aws, use_spot=True, zones=["us-east-1a", "us-east-1c"])
    nodes = await provider.launch(req)
    assert [n.status for n in nodes] == [NodeStatus.RUNNING]
    [inst] = aws.live_instances("spot")
    assert inst["InstanceLifecycle"] == "spot"
    assert inst["Placement"]["AvailabilityZone"] == "us-east-1c"
    with pytest.raises(ProvisionError, match="spot instances, which AWS cannot stop"):
        await provider.stop("spot")
    await provider.terminate("spot")
    aws.fault(
        "RunInstances", "SpotMaxPriceTooLow", match={"InstanceMarketOptions.MarketType": "spot"}
    )
    with pytest.raises(AwsCapacityError) as caught:
        await provider.launch(_request("spot2", pyz, 1, aws, use_spot=True, zones=["us-east-1a"]))
    assert caught.value.block.use_spot is True
    assert aws.live_instances() == []
    await provider.aclose()


async def test_leaks_are_stix_instances_and_groups_that_no_live_cluster_owns(
    aws: AwsBed, hosts: SshBed, home: Path, pyz: Path
) -> None:
    provider = AwsProvider(home, _env(aws, hosts))
    await provider.launch(_request("real", pyz, 1, aws))
    await provider.launch(_request("ghost", pyz, 1, aws))  # its record is lost: not live
    someone_else = aws.ec2(
        "run_instances",
        ImageId=aws.an_image(),
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[
            {
                "ResourceType": "instance",
                "Tags": [
                    {"Key": "stix-cluster", "Value": "theirs"},
                    {"Key": TAG_USER, "Value": "someone-else"},
                ],
            }
        ],
    )["Instances"][0]["InstanceId"]
    regions = ["us-east-1", "us-west-2"]
    assert await provider.leaks(regions, live={"real"}) == []  # too young to judge
    leaks = await provider.leaks(regions, live={"real"}, young_s=0)
    assert [(x.kind, x.cluster, x.region, x.instance_type) for x in leaks] == [
        ("instance", "ghost", "us-east-1", "t3.micro")
    ]
    assert leaks[0].age_s is not None and leaks[0].age_s >= 0
    await provider.clean_leaks(leaks)
    assert aws.live_instances("ghost") == []
    left = await provider.leaks(regions, live={"real"}, young_s=0)
    assert [(x.kind, x.cluster) for x in left] == [("security-group", "ghost")]
    await provider.clean_leaks(left)
    assert await provider.leaks(regions, live={"real"}, young_s=0) == []
    assert len(aws.live_instances("real")) == 1
    assert [i["InstanceId"] for i in aws.live_instances("theirs")] == [someone_else]
    await provider.terminate("real")
    await provider.aclose()


async def test_a_named_vpc_is_used_and_a_region_without_it_is_skipped(
    aws: AwsBed, hosts: SshBed, home: Path, pyz: Path
) -> None:
    tags = [{"ResourceType": "vpc", "Tags": [{"Key": "Name", "Value": "stixnet"}]}]
    vpc = aws.ec2("create_vpc", CidrBlock="10.50.0.0/16", TagSpecifications=tags)["Vpc"]["VpcId"]
    subnet = aws.ec2(
        "create_subnet", VpcId=vpc, CidrBlock="10.50.1.0/24", AvailabilityZone="us-east-1c"
    )["Subnet"]["SubnetId"]
    provider = AwsProvider(home, _env(aws, hosts), vpc_name="stixnet")
    await provider.launch(_request("named", pyz, 1, aws, zones=["us-east-1b", "us-east-1c"]))
    [inst] = aws.live_instances("named")
    assert (inst["VpcId"], inst["SubnetId"]) == (vpc, subnet)  # us-east-1b has no subnet there
    [group] = aws.ec2(
        "describe_security_groups", Filters=[{"Name": "group-name", "Values": ["stix-named"]}]
    )["SecurityGroups"]
    assert group["VpcId"] == vpc
    with pytest.raises(AwsCapacityError) as caught:
        await provider.launch(_request("west", pyz, 1, aws, region="us-west-2"))
    assert caught.value.block == Block(infra="aws", region="us-west-2", reason="VpcNotFound")
    assert "no VPC named stixnet" in caught.value.message
    await provider.terminate("named")
    assert aws.live_instances() == []
    await provider.aclose()


async def test_disk_tier_picks_the_root_volume_type(
    aws: AwsBed, hosts: SshBed, home: Path, pyz: Path
) -> None:
    provider = AwsProvider(home, _env(aws, hosts))
    """moto drops Iops from run_instances' block devices (so io2 cannot launch there): the
    tiers are checked on the volume type moto records."""
    await provider.launch(_request("slow", pyz, 1, aws, disk_size=100, disk_tier="low"))
    [volume] = aws.ec2("describe_volumes")["Volumes"]
    assert (volume["Size"], volume["VolumeType"]) == (100, "standard")
    await provider.terminate("slow")
    with pytest.raises(ProvisionError, match="disk_tier 'fastest' is not one of"):
        await provider.launch(_request("bad", pyz, 1, aws, disk_tier="fastest"))
    assert aws.seen().count("RunInstances") == 1
    assert "CreateSecurityGroup" not in aws.seen()[aws.seen().index("TerminateInstances") :]
    await provider.aclose()


async def test_a_node_whose_public_address_changed_is_reached_at_the_new_one(
    tmp_path: Path,
) -> None:
    """A stop and start from the console gives an instance a new public IP: the next look
    moves the node's SSH target there (its address inside the VPC stays)."""
    records = Records(tmp_path)
    rec = {"ip": "172.31.0.5", "host": "3.3.3.3", "port": 22, "user": "ubuntu", "key": "k"}
    records.set_node("mv", 0, **rec, socket="/s", home="/home/ubuntu", instance="i-1")
    node = NodeInfo(0, "172.31.0.5", NodeStatus.RUNNING, "/s", "/w", "/home/ubuntu")
    moved = instances.Instance(
        "i-1", 0, "running", "us-east-1a", "m6i.large", "172.31.0.5", "4.4.4.4", False, 0, 0.0
    )

    def side(env: dict[str, str]) -> AwsNodes:
        return AwsNodes(
            tmp_path,
            env,
            records,
            SshSettings(),
            structlog.get_logger(),
            ssh_user="ubuntu",
            boot_within=1.0,
        )

    testing = side({"STIX_TEST_SSH_HOSTS": "root@10.0.0.1:22"})
    await testing.readdress("mv", moved)  # test hosts stand in for instances: never moved
    assert testing.node_target(node).host == "3.3.3.3"
    real = side({})
    assert real.node_target(node).host == "3.3.3.3"
    await real.readdress("mv", moved)
    assert real.node_target(node).host == "4.4.4.4"
    assert (records.get("mv") or {})["nodes"]["0"]["host"] == "4.4.4.4"
