"""Where nodes go in a region: its zones, the default VPC and subnet, a security group per cluster.

The catalog names zones by ID (``use1-az1``), users by name (``us-east-1b``); both are accepted
and ``Zones`` translates. Every look-up comes before any create, so a second launch (or a retry
after a crash) reuses what the first made.
"""

from __future__ import annotations

import dataclasses
import time

import anyio

from stixd.providers.aws.client import Ec2Clients
from stixd.providers.aws.errors import AwsCapacityError, Where, aws_code
from stixproto.errors import ProvisionError

SSH_PORT = 22
SG_DELETE_WITHIN_S = 180.0


@dataclasses.dataclass(frozen=True)
class Zone:
    name: str
    id: str


async def zones(ec2: Ec2Clients, region: str) -> list[Zone]:
    found = await ec2.call(
        Where(region),
        "describe_availability_zones",
        Filters=[{"Name": "state", "Values": ["available"]}],
    )
    return sorted(
        (Zone(z["ZoneName"], z.get("ZoneId", z["ZoneName"])) for z in found["AvailabilityZones"]),
        key=lambda z: z.name,
    )


def pick_zones(known: list[Zone], wanted: list[str], region: str) -> list[Zone]:
    """``wanted`` (names or IDs, in order) as zones of the region; all of them when empty."""
    if not wanted:
        return known
    by_key = {z.name: z for z in known} | {z.id: z for z in known}
    picked = [by_key[w] for w in wanted if w in by_key]
    if not picked:
        names = ", ".join(z.name for z in known) or "none"
        raise AwsCapacityError(
            "NoSuchZone",
            f"AWS region {region} has no zone {', '.join(wanted)} (its zones: {names})",
            Where(region).block("region"),
        )
    return picked


async def find_vpc(ec2: Ec2Clients, region: str, name: str | None) -> str:
    """The VPC named ``name`` (its Name tag), or the region's default VPC when ``name`` is None.

    A region without it is skipped like a region without capacity (the launch moves on)."""
    if name:
        wanted = {"Name": "tag:Name", "Values": [name]}
        missing = f"AWS region {region} has no VPC named {name} (aws.vpc_name)"
    else:
        wanted = {"Name": "is-default", "Values": ["true"]}
        missing = (
            f"AWS region {region} has no default VPC; create one "
            "(`aws ec2 create-default-vpc`) or set aws.vpc_name"
        )
    found = await ec2.pages(Where(region), "describe_vpcs", "Vpcs", Filters=[wanted])
    vpcs = sorted(found, key=lambda v: str(v["VpcId"]))
    if not vpcs:
        raise AwsCapacityError("VpcNotFound", missing, Where(region).block("region"))
    return str(vpcs[0]["VpcId"])


async def subnet_for(ec2: Ec2Clients, region: str, vpc: str, zone: Zone) -> str:
    found = await ec2.pages(
        Where(region, zone.name),
        "describe_subnets",
        "Subnets",
        Filters=[
            {"Name": "vpc-id", "Values": [vpc]},
            {"Name": "availability-zone", "Values": [zone.name]},
        ],
    )
    subnets = sorted(
        found,
        key=lambda s: (not s.get("DefaultForAz"), -int(s.get("AvailableIpAddressCount", 0))),
    )
    if not subnets:
        raise AwsCapacityError(
            "SubnetNotFound",
            f"VPC {vpc} has no subnet in {zone.name}",
            Where(region, zone.name).block("zone"),
        )
    return str(subnets[0]["SubnetId"])


def group_name(cluster: str) -> str:
    return f"stix-{cluster}"


async def find_group(ec2: Ec2Clients, region: str, vpc: str, cluster: str) -> str | None:
    found = await ec2.pages(
        Where(region),
        "describe_security_groups",
        "SecurityGroups",
        Filters=[
            {"Name": "vpc-id", "Values": [vpc]},
            {"Name": "group-name", "Values": [group_name(cluster)]},
        ],
    )
    # EC2 reads `*` and `?` in a filter value as wildcards: only the exact name is the cluster's
    # (an earlier version took any cluster name, `*` among them)
    groups = [g for g in found if g.get("GroupName") == group_name(cluster)]
    return str(groups[0]["GroupId"]) if groups else None


async def ensure_group(
    ec2: Ec2Clients,
    region: str,
    vpc: str,
    cluster: str,
    ports: list[int],
    tags: list[dict[str, str]],
) -> str:
    """The cluster's security group, open for SSH and ``ports``; made if missing."""
    group = await find_group(ec2, region, vpc, cluster)
    if group is None:
        try:
            made = await ec2.call(
                Where(region),
                "create_security_group",
                GroupName=group_name(cluster),
                Description=f"stix cluster {cluster}",
                VpcId=vpc,
                TagSpecifications=[{"ResourceType": "security-group", "Tags": tags}],
            )
            group = str(made["GroupId"])
        except ProvisionError as exc:
            if aws_code(exc) != "InvalidGroup.Duplicate":
                raise
            group = await find_group(ec2, region, vpc, cluster)
            if group is None:
                raise
    await open_group_ports(ec2, region, group, [SSH_PORT, *ports])
    return group


async def open_group_ports(ec2: Ec2Clients, region: str, group: str, ports: list[int]) -> None:
    """TCP ``ports`` open to the world on ``group``; ports already open are left alone."""
    [found] = await ec2.pages(
        Where(region), "describe_security_groups", "SecurityGroups", GroupIds=[group]
    )
    rules = found.get("IpPermissions") or []
    open_ = {
        (int(r["FromPort"]), int(r["ToPort"]))
        for r in rules
        if r.get("IpProtocol") == "tcp"
        and "FromPort" in r
        and any(x.get("CidrIp") == "0.0.0.0/0" for x in r.get("IpRanges") or [])
    }
    wanted = [p for p in sorted(set(ports)) if not any(lo <= p <= hi for lo, hi in open_)]
    if not wanted:
        return
    try:
        await ec2.call(
            Where(region),
            "authorize_security_group_ingress",
            GroupId=group,
            IpPermissions=[
                {
                    "IpProtocol": "tcp",
                    "FromPort": p,
                    "ToPort": p,
                    "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
                }
                for p in wanted
            ],
        )
    except ProvisionError as exc:
        if aws_code(exc) != "InvalidPermission.Duplicate":
            raise


async def delete_group(ec2: Ec2Clients, region: str, vpc: str, cluster: str) -> bool:
    """Delete the cluster's group once no instance uses it; False if it outlived the wait."""
    deadline = time.monotonic() + SG_DELETE_WITHIN_S
    pause = 1.0
    while True:
        group = await find_group(ec2, region, vpc, cluster)
        if group is None:
            return True
        try:
            await ec2.call(Where(region), "delete_security_group", GroupId=group)
            return True
        except ProvisionError as exc:
            code = aws_code(exc)
            if code == "InvalidGroup.NotFound":
                return True
            if code != "DependencyViolation" or time.monotonic() > deadline:
                raise
        await anyio.sleep(pause)  # terminating instances still hold it
        pause = min(pause * 2, 10.0)
