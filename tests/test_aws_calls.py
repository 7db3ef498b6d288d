"""EC2 calls scale with the infra, not with the clusters (issue 15, must-hold 3), on a real moto
server behind the fault proxy (tests/awsfault.py), which logs every request's form.

- Every listing is read to its last page: moto pages ``describe_instances`` itself (the
  provider asks for small pages here); the other listings moto answers whole, so the proxy
  answers their first page empty with a ``NextToken``, as EC2 may.
- The health checks of many clusters on one region are one ``describe_instances`` (and one
  ``describe_volumes``) per round, whatever the number of clusters: counted in the proxy's log
  of a real daemon's requests.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from stixd.agent_bundle import build_agent_zipapp
from stixd.providers.aws import AwsProvider, instances
from stixd.providers.aws.instances import TAG_RANK, TAG_USER
from stixd.providers.base import NodeStatus, ProvisionRequest
from stixd.runtime.clock import ManualClock, until_aligned
from tests.awsbed import MOTO_UNPAGED, NEXT_PAGE, REGION, SPOT_NOTICE, AwsBed, aws_fixtures
from tests.conftest import Stix, wait_until
from tests.sshbed import SshBed, bed_fixture
from tests.test_aws_e2e import _use
from tests.test_aws_provider import _env

pytestmark = pytest.mark.anyio
hosts = bed_fixture(2, scope="module")
aws_server, aws = aws_fixtures()


@pytest.fixture(scope="module")
def pyz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_agent_zipapp(tmp_path_factory.mktemp("agent"))


def _filter(form: dict[str, str], name: str) -> list[str]:
    """The values of the filter called ``name`` in a request's form."""
    for key, value in form.items():
        if key.startswith("Filter.") and key.endswith(".Name") and value == name:
            prefix = key[: -len("Name")] + "Value."
            return [v for k, v in form.items() if k.startswith(prefix)]
    return []


async def _made_by_hand(aws: AwsBed, user: str, clusters: list[str]) -> None:
    """One ranked instance of each cluster (a reservation each), made straight at moto."""
    from aiobotocore.session import get_session  # type: ignore[import-untyped]

    image = aws.an_image()
    async with get_session().create_client(
        "ec2",
        region_name=REGION,
        endpoint_url=aws.moto_url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    ) as ec2:
        for cluster in clusters:
            tags = [
                {"Key": "stix-cluster", "Value": cluster},
                {"Key": TAG_USER, "Value": user},
                {"Key": TAG_RANK, "Value": "0"},
            ]
            await ec2.run_instances(
                ImageId=image,
                MinCount=1,
                MaxCount=1,
                TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
            )


async def test_instance_listings_longer_than_a_page_are_read_to_the_last_page(
    aws: AwsBed, tmp_path: Path
) -> None:
    provider = AwsProvider(tmp_path, _env(aws))
    provider.ec2().page_size = 5
    names = [f"p{i:02d}" for i in range(12)]
    await _made_by_hand(aws, provider.user, names)
    for name in names:
        provider.records.update(name, region=REGION)
    got: dict[str, list[int]] = {}

    async def query(name: str) -> None:
        got[name] = [n.rank for n in await provider.query(name)]

    async with anyio.create_task_group() as tg:
        for name in names:
            tg.start_soon(query, name)
    assert got == {name: [0] for name in names}
    asked = aws.requests("DescribeInstances")
    assert [f.get("MaxResults") for f in asked] == ["5"] * 3  # 12 reservations: three pages
    assert all(_filter(f, "tag:stix-cluster") == names for f in asked)

    leaks = await provider.leaks([REGION], live=set(), young_s=0)
    assert sorted(x.cluster for x in leaks if x.kind == "instance") == names
    assert len(aws.requests("DescribeInstances")) == 6
    await provider.aclose()


async def test_every_listing_reads_past_an_empty_first_page(
    aws: AwsBed, hosts: SshBed, tmp_path: Path, pyz: Path
) -> None:
    """A launch (VPC, subnet, security group, image), a look (disks, spot notices), the
    default image, leaks and a down each see only what is on a listing's second page."""
    for action in MOTO_UNPAGED:
        aws.first_page_empty(action)
    provider = AwsProvider(tmp_path, _env(aws, hosts))
    req = ProvisionRequest(
        "paged",
        1,
        pyz,
        resources={
            "region": REGION,
            "instance_type": "t3.micro",
            "image_id": aws.an_image(),
            "ports": [8080],
            "disk_size": 64,
        },
    )
    nodes = await provider.launch(req)
    assert [n.status for n in nodes] == [NodeStatus.RUNNING]
    assert [n.status for n in await provider.query("paged")] == [NodeStatus.RUNNING]
    assert [m.disk_gb for m in provider.machines("paged")] == [64]
    [inst] = aws.live_instances("paged")
    iid = inst["InstanceId"]

    image, _ = await instances.resolve_image(provider.ec2(), REGION, None)
    ubuntu = aws.ec2("describe_images", Owners=[instances.CANONICAL])["Images"]
    assert image in {i["ImageId"] for i in ubuntu}

    aws.fault(
        "DescribeSpotInstanceRequests",
        "",
        match={"NextToken": NEXT_PAGE},
        body=SPOT_NOTICE.format(instance=iid),
    )
    notices = await provider.listing().interruption_notices(REGION, [iid])
    assert notices == {iid: "marked-for-termination: Spot Instance is marked for termination"}

    aws.ec2("terminate_instances", InstanceIds=[iid])  # from outside stix: its group is left
    leaks = await provider.leaks([REGION], live=set(), young_s=0)
    assert [(x.kind, x.cluster) for x in leaks] == [("security-group", "paged")]
    await provider.terminate("paged")
    groups = aws.ec2("describe_security_groups")["SecurityGroups"]
    assert [g["GroupName"] for g in groups if g["GroupName"].startswith("stix-")] == []
    for action in MOTO_UNPAGED:  # each listing was asked for its second page
        assert NEXT_PAGE in {f.get("NextToken") for f in aws.requests(action)}, action
    await provider.aclose()


CLUSTERS = 20
HEALTH_S = 2


@pytest.mark.slow  # twenty launches: about half a minute
def test_health_checks_of_many_clusters_are_one_listing_a_round(
    stix: Stix, aws: AwsBed, hosts: SshBed
) -> None:
    """Twenty UP clusters launched at different moments: each health round asks EC2 once for
    all their instances and once for all their disks, not once per cluster."""
    _use(stix, aws, hosts)
    stix.env["STIX__DAEMON__HEALTH_CHECK_SECONDS"] = str(HEALTH_S)
    stix.run("daemon", "start", check=True)
    names = [f"h{i:02d}" for i in range(CLUSTERS)]
    infra = ["--infra", f"aws/{REGION}", "--instance-type", "m6i.large"]
    launches = [stix.popen("launch", "-yd", "-c", name, *infra, "true") for name in names]
    for proc in launches:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    assert {c["status"] for c in stix.clusters().values()} == {"UP"}
    listed, sized = len(aws.requests("DescribeInstances")), len(aws.requests("DescribeVolumes"))
    wait_until(lambda: len(aws.requests("DescribeInstances")) >= listed + 3, timeout=10 * HEALTH_S)
    rounds = [_filter(f, "tag:stix-cluster") for f in aws.requests("DescribeInstances")[listed:]]
    # a look that comes late (a busy actor, a loaded machine) may miss its round's call and
    # make one of its own; the rounds themselves share one call (not one per cluster: that
    # would be about 4 clusters a call, the ticks spread over the period, before alignment)
    assert set().union(*rounds) == set(names)
    assert sum(map(len, rounds)) / len(rounds) >= CLUSTERS / 2, rounds
    assert max(map(len, rounds)) == CLUSTERS, rounds
    disks = [_filter(f, "volume-id") for f in aws.requests("DescribeVolumes")[sized:]]
    assert disks and max(map(len, disks)) == CLUSTERS


def test_health_timers_armed_at_any_moment_come_due_on_one_grid_a_quarter_period_on() -> None:
    """What lines the health checks of clusters launched at different moments up."""
    clock = ManualClock()
    for now in (0.0, 0.001, 3.0, 7.5, 7.501, 9.999, 10.0, 12345.6):
        clock.advance(now - clock.now())
        due = now + until_aligned(clock, 10.0)
        assert 2.5 <= due - now <= 12.5
        assert due / 10.0 == pytest.approx(round(due / 10.0), abs=1e-9)
