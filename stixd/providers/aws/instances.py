"""A cluster's EC2 instances: found by their tags, made with a client token, waited on, stopped.

Tags are the truth: ``stix-cluster`` and ``stix-user`` say whose an instance is, and
``stix-node-rank`` which node it is. A rank is tagged right after the instances are made; one
found without it (a crash in between) gets a free rank when next launched, in launch order.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from typing import Any

import anyio

from stixd.providers.aws.client import Ec2Clients
from stixd.providers.aws.errors import Where, aws_code
from stixproto.errors import ProvisionError

TAG_CLUSTER = "stix-cluster"
TAG_RANK = "stix-node-rank"
TAG_USER = "stix-user"
ALIVE = ["pending", "running", "stopping", "stopped"]
CANONICAL = "099720109477"  # Ubuntu's images
DEFAULT_IMAGE_NAMES = {
    "x86_64": "ubuntu/images/hvm-ssd*/ubuntu-*-amd64-server-*",
    "arm64": "ubuntu/images/hvm-ssd*/ubuntu-*-arm64-server-*",
}
DEFAULT_DISK_GB = 256
WAIT_BACKOFF_MAX_S = 5.0
FILTER_VALUES_MAX = 200
"""EC2 takes up to 200 values in one filter."""


@dataclasses.dataclass(frozen=True)
class Instance:
    id: str
    rank: int | None
    state: str
    zone: str
    instance_type: str
    private_ip: str | None
    public_ip: str | None
    spot: bool
    launch_index: int
    launched_at: float
    reason: str = ""
    """Why it is in its state, when EC2 says (``Server.SpotInstanceTermination: ...``)."""
    root_volume: str | None = None
    """The EBS volume of its root device, where EC2 lists it."""
    cluster: str = ""
    """Its ``stix-cluster`` tag."""

    @property
    def address(self) -> str | None:
        """Where this machine reaches it: the public address if it has one."""
        return self.public_ip or self.private_ip


def parse(raw: dict[str, Any]) -> Instance:
    tags = {t["Key"]: t["Value"] for t in raw.get("Tags") or []}
    rank_tag = tags.get(TAG_RANK, "")
    launched = raw.get("LaunchTime")
    return Instance(
        id=raw["InstanceId"],
        rank=int(rank_tag) if rank_tag.isdigit() else None,
        state=raw["State"]["Name"],
        zone=raw.get("Placement", {}).get("AvailabilityZone", ""),
        instance_type=raw.get("InstanceType", ""),
        private_ip=raw.get("PrivateIpAddress"),
        public_ip=raw.get("PublicIpAddress"),
        spot=raw.get("InstanceLifecycle") == "spot",
        launch_index=int(raw.get("AmiLaunchIndex", 0)),
        launched_at=float(launched.timestamp()) if launched is not None else 0.0,
        reason=str((raw.get("StateReason") or {}).get("Message") or ""),
        root_volume=_root_volume(raw),
        cluster=tags.get(TAG_CLUSTER, ""),
    )


def _root_volume(raw: dict[str, Any]) -> str | None:
    root = raw.get("RootDeviceName")
    for mapping in raw.get("BlockDeviceMappings") or []:
        if mapping.get("DeviceName") == root or root is None:
            volume = (mapping.get("Ebs") or {}).get("VolumeId")
            return str(volume) if volume else None
    return None


INTERRUPTION_CODES = ("marked-for-termination", "marked-for-stop", "marked-for-hibernation")
"""Spot request status codes of an interruption notice: EC2 takes the instance back soon."""


async def interruption_notices(ec2: Ec2Clients, region: str, ids: list[str]) -> dict[str, str]:
    """Spot instance id → its interruption notice (``code: message``), for those that have one."""
    out = {}
    for some in chunks(ids):
        requests = await ec2.pages(
            Where(region),
            "describe_spot_instance_requests",
            "SpotInstanceRequests",
            Filters=[{"Name": "instance-id", "Values": some}],
        )
        for request in requests:
            status = request.get("Status") or {}
            if status.get("Code") in INTERRUPTION_CODES and request.get("InstanceId") in some:
                message = f": {status['Message']}" if status.get("Message") else ""
                out[str(request["InstanceId"])] = f"{status['Code']}{message}"
    return out


async def volume_sizes(ec2: Ec2Clients, region: str, volumes: list[str]) -> dict[str, int]:
    """Volume id → its size in GB now (resized or not), for those that still exist (a filter,
    not ids: a volume gone with its instance is left out instead of failing the rest)."""
    out = {}
    for some in chunks(volumes):
        found = await ec2.pages(
            Where(region),
            "describe_volumes",
            "Volumes",
            Filters=[{"Name": "volume-id", "Values": some}],
        )
        for v in found:
            if v.get("VolumeId") in some and v.get("Size") is not None:
                out[str(v["VolumeId"])] = int(v["Size"])
    return out


def chunks(values: list[str]) -> list[list[str]]:
    """``values`` in runs EC2 takes in one filter."""
    return [values[i : i + FILTER_VALUES_MAX] for i in range(0, len(values), FILTER_VALUES_MAX)]


def tags(cluster: str, user: str, rank: int | None = None) -> list[dict[str, str]]:
    out = [{"Key": TAG_CLUSTER, "Value": cluster}, {"Key": TAG_USER, "Value": user}]
    if rank is not None:
        out += [
            {"Key": TAG_RANK, "Value": str(rank)},
            {"Key": "Name", "Value": f"{cluster}-{rank}"},
        ]
    return out


def client_token(cluster: str, launch_id: str, zone: str, ranks: list[int]) -> str:
    """The same for a retry of the same launch step: EC2 then returns the first try's instances."""
    key = f"{cluster}/{launch_id}/{zone}/{','.join(map(str, ranks))}"
    return "stix-" + hashlib.sha256(key.encode()).hexdigest()[:48]


def flatten(reservations: list[dict[str, Any]]) -> list[Instance]:
    """The instances of ``describe_instances``' reservations."""
    return [parse(i) for r in reservations for i in r.get("Instances") or []]


async def find(ec2: Ec2Clients, region: str, cluster: str, user: str) -> list[Instance]:
    """The cluster's instances that are not terminated, by rank (unranked last)."""
    return (await find_clusters(ec2, region, [cluster], user))[cluster]


async def find_clusters(
    ec2: Ec2Clients, region: str, clusters: list[str], user: str
) -> dict[str, list[Instance]]:
    """Each cluster's instances that are not terminated, by rank: one listing per 200."""
    out: dict[str, list[Instance]] = {c: [] for c in clusters}
    for some in chunks(clusters):
        found = await ec2.pages(
            Where(region),
            "describe_instances",
            "Reservations",
            Filters=[
                {"Name": f"tag:{TAG_CLUSTER}", "Values": some},
                {"Name": f"tag:{TAG_USER}", "Values": [user]},
                {"Name": "instance-state-name", "Values": ALIVE},
            ],
        )
        for inst in flatten(found):
            if inst.cluster in out:
                out[inst.cluster].append(inst)
    return {c: sorted(found, key=order) for c, found in out.items()}


def order(i: Instance) -> tuple[int, float, int, str]:
    return (i.rank if i.rank is not None else 1 << 30, i.launched_at, i.launch_index, i.id)


async def by_ids(ec2: Ec2Clients, region: str, ids: list[str]) -> list[Instance]:
    """The instances with these ids that EC2 lists already (a new one may not be listed yet)."""
    try:
        found = await ec2.pages(
            Where(region), "describe_instances", "Reservations", InstanceIds=ids
        )
    except ProvisionError as exc:
        if aws_code(exc) == "InvalidInstanceID.NotFound":
            return []
        raise
    return sorted(flatten(found), key=order)


async def resolve_image(
    ec2: Ec2Clients, region: str, image_id: Any, arch: str = "x86_64"
) -> tuple[str, str]:
    """(AMI id, root device name) from the task's ``image_id`` or, without one, Ubuntu's newest."""
    if isinstance(image_id, dict):
        image_id = image_id.get(region)
        if image_id is None:
            raise ProvisionError(f"image_id names no image for AWS region {region}")
    where = Where(region)
    if image_id:
        if not str(image_id).startswith("ami-"):
            raise ProvisionError(f"image_id {image_id!r} is not an AMI id (ami-...)")
        try:
            images = await ec2.pages(where, "describe_images", "Images", ImageIds=[str(image_id)])
        except ProvisionError as exc:
            if aws_code(exc).startswith("InvalidAMIID"):
                raise ProvisionError(f"AWS region {region} has no image {image_id}") from None
            raise
        if not images:
            raise ProvisionError(f"AWS region {region} has no image {image_id}")
    else:
        found = await ec2.pages(
            where,
            "describe_images",
            "Images",
            Owners=[CANONICAL],
            Filters=[
                {"Name": "name", "Values": [DEFAULT_IMAGE_NAMES.get(arch, arch)]},
                {"Name": "state", "Values": ["available"]},
            ],
        )
        images = sorted(found, key=lambda i: i.get("CreationDate", ""))[-1:]
        if not images:
            raise ProvisionError(
                f"no Ubuntu image for {arch} in AWS region {region}; name one with image_id"
            )
    image = images[-1]
    return str(image["ImageId"]), str(image.get("RootDeviceName") or "/dev/sda1")


@dataclasses.dataclass(frozen=True)
class RunSpec:
    image: str
    root_device: str
    instance_type: str
    subnet: str
    group: str
    key_name: str
    disk_gb: int
    spot: bool
    disk_tier: str | None = None


DISK_TIERS: dict[str, dict[str, Any]] = {
    "low": {"VolumeType": "standard"},
    "medium": {"VolumeType": "gp3"},
    "high": {"VolumeType": "gp3", "Iops": 7000, "Throughput": 500},
    "ultra": {"VolumeType": "io2", "Iops": 20000},
}
"""EBS settings per ``disk_tier`` (as SkyPilot maps them); ``best`` is ``ultra``."""


def disk_settings(tier: str | None) -> dict[str, Any]:
    name = "ultra" if tier == "best" else (tier or "medium")
    if name not in DISK_TIERS:
        raise ProvisionError(f"disk_tier {tier!r} is not one of {', '.join(DISK_TIERS)}, best")
    return dict(DISK_TIERS[name])


async def run(
    ec2: Ec2Clients,
    where: Where,
    spec: RunSpec,
    *,
    count: int,
    tag_list: list[dict[str, str]],
    token: str,
) -> list[Instance]:
    params: dict[str, Any] = {
        "ImageId": spec.image,
        "InstanceType": spec.instance_type,
        "MinCount": count,
        "MaxCount": count,
        "KeyName": spec.key_name,
        "ClientToken": token,
        "NetworkInterfaces": [
            {
                "DeviceIndex": 0,
                "SubnetId": spec.subnet,
                "Groups": [spec.group],
                "AssociatePublicIpAddress": True,
                "DeleteOnTermination": True,
            }
        ],
        "BlockDeviceMappings": [
            {
                "DeviceName": spec.root_device,
                "Ebs": {
                    "VolumeSize": spec.disk_gb,
                    "DeleteOnTermination": True,
                    **disk_settings(spec.disk_tier),
                },
            }
        ],
        "TagSpecifications": [
            {"ResourceType": "instance", "Tags": tag_list},
            {"ResourceType": "volume", "Tags": tag_list},
        ],
    }
    if spec.spot:
        params["InstanceMarketOptions"] = {
            "MarketType": "spot",
            "SpotOptions": {
                "SpotInstanceType": "one-time",
                "InstanceInterruptionBehavior": "terminate",
            },
        }
    made = await ec2.call(where, "run_instances", **params)
    return sorted((parse(i) for i in made.get("Instances") or []), key=order)


async def tag_ranks(
    ec2: Ec2Clients, region: str, cluster: str, user: str, pairs: list[tuple[Instance, int]]
) -> None:
    for inst, rank in pairs:
        await ec2.call(
            Where(region), "create_tags", Resources=[inst.id], Tags=tags(cluster, user, rank)
        )


async def wait_for(
    ec2: Ec2Clients, region: str, ids: list[str], state: str, within: float
) -> list[Instance]:
    """Poll until every instance of ``ids`` is in ``state``, with a pause growing to 5 s.

    An id EC2 does not list yet is waited for, not taken as gone: new instances appear late.
    """
    deadline = time.monotonic() + within
    pause = 0.2
    while True:
        found = await by_ids(ec2, region, ids)
        states = {i.id: i.state for i in found}
        if all(states.get(i) == state for i in ids):
            return found
        bad = [i for i in found if i.state in ("terminated", "shutting-down") and state != i.state]
        if bad and state != "terminated":
            raise ProvisionError(
                f"AWS instance {bad[0].id} went {bad[0].state} while stix waited for {state}"
            )
        if time.monotonic() > deadline:
            late = {i: states.get(i, "not listed yet") for i in ids if states.get(i) != state}
            raise ProvisionError(
                f"AWS instances did not become {state} within {within:g} s: {late}"
            )
        await anyio.sleep(pause)
        pause = min(pause * 2, WAIT_BACKOFF_MAX_S)


async def stop(ec2: Ec2Clients, region: str, ids: list[str]) -> None:
    if ids:
        await ec2.call(Where(region), "stop_instances", InstanceIds=ids)


async def start(ec2: Ec2Clients, region: str, ids: list[str]) -> None:
    if ids:
        await ec2.call(Where(region), "start_instances", InstanceIds=ids)


async def terminate(ec2: Ec2Clients, region: str, ids: list[str]) -> None:
    if ids:
        await ec2.call(Where(region), "terminate_instances", InstanceIds=ids)
