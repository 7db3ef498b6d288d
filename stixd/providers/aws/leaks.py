"""Leaks: stix's instances (and security groups) in AWS that no live cluster record owns.

Found by the ``stix-user`` tag of this user in each region asked about; an instance whose
``stix-cluster`` is not a live cluster is a leak, and so is a ``stix-CLUSTER`` security group
of such a cluster with no instance left. Instances made in the last few minutes are never
leaks: their launch may still be writing its record.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence

from stixd.providers.abilities import Leak
from stixd.providers.aws import instances
from stixd.providers.aws.client import Ec2Clients
from stixd.providers.aws.errors import Where
from stixd.providers.aws.network import delete_group

YOUNG_S = 600.0


async def find_leaks(
    ec2: Ec2Clients,
    user: str,
    regions: Sequence[str],
    live: Collection[str],
    *,
    young_s: float = YOUNG_S,
) -> list[Leak]:
    now = time.time()
    found: list[Leak] = []
    for region in regions:
        listed = await ec2.pages(
            Where(region),
            "describe_instances",
            "Reservations",
            Filters=[
                {"Name": f"tag:{instances.TAG_USER}", "Values": [user]},
                {"Name": "instance-state-name", "Values": instances.ALIVE},
            ],
        )
        owners: set[str] = set()
        for inst in instances.flatten(listed):
            owners.add(inst.cluster)
            age = now - inst.launched_at if inst.launched_at else None
            if inst.cluster in live or (age is not None and age < young_s):
                continue
            found.append(
                Leak(
                    "instance",
                    inst.id,
                    region,
                    inst.cluster,
                    age,
                    inst.instance_type,
                    inst.state,
                    spot=inst.spot,
                )
            )
        groups = await ec2.pages(
            Where(region),
            "describe_security_groups",
            "SecurityGroups",
            Filters=[{"Name": f"tag:{instances.TAG_USER}", "Values": [user]}],
        )
        for group in groups:
            tags = {t["Key"]: t["Value"] for t in group.get("Tags") or []}
            cluster = tags.get(instances.TAG_CLUSTER, "")
            if cluster and cluster not in live and cluster not in owners:
                found.append(
                    Leak(
                        "security-group",
                        group["GroupId"],
                        region,
                        cluster,
                        network=group.get("VpcId"),
                    )
                )
    return found


async def clean_leaks(ec2: Ec2Clients, leaks: Sequence[Leak]) -> None:
    """Terminate the leaked instances (waiting until they are gone), then delete the groups."""
    by_region: dict[str, list[str]] = {}
    for leak in leaks:
        if leak.kind == "instance":
            by_region.setdefault(leak.region, []).append(leak.id)
    for region, ids in by_region.items():
        await instances.terminate(ec2, region, ids)
        await instances.wait_for(ec2, region, ids, "terminated", 600.0)
    for leak in leaks:
        if leak.kind == "security-group" and leak.network:
            await delete_group(ec2, leak.region, leak.network, leak.cluster)
