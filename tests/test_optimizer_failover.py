"""Failover and nothing-fits: blocked resources move the pick to the next choice, and a plan
with no candidate names the filter that removed the last one (rows from the shared catalogs)."""

from __future__ import annotations

import pytest

from stixd.planner.offers import OfferIndex
from stixd.planner.optimizer import plan
from stixd.planner.plans import Plan
from stixd.planner.request import Blocked, TaskRequest
from tests.optimizer_support import BIG3, at_least, exactly, index, res, task

__all__ = ["index"]


def where(p: Plan) -> tuple[str, str, str | None]:
    assert p.chosen is not None, p.no_fit_reason
    return (p.chosen.cloud, p.chosen.region, p.chosen.zone)


def test_blocking_a_region_moves_to_the_next_region(index: OfferIndex) -> None:
    # m6i.2xlarge costs 0.384 in us-east-1 and us-west-2: us-east-1 first, then us-west-2
    blocked = [Blocked(cloud="aws", region="us-east-1", reason="InsufficientInstanceCapacity")]
    p = plan(task(cloud="aws"), index, enabled_clouds=BIG3, blocked=blocked)
    assert where(p) == ("aws", "us-west-2", None)


def test_blocking_a_zone_moves_to_the_next_zone(index: OfferIndex) -> None:
    # GCP is planned per zone: n2-standard-8 us-central1-a, -b, -c all 0.38847
    blocked = [Blocked(cloud="gcp", zone="us-central1-a")]
    p = plan(task(cloud="gcp"), index, enabled_clouds=BIG3, blocked=blocked)
    assert where(p) == ("gcp", "us-central1", "us-central1-b")


def test_blocking_a_zone_of_a_region_level_choice_keeps_the_other_zones(
    index: OfferIndex,
) -> None:
    blocked = [Blocked(cloud="aws", zone="use1-az1")]
    p = plan(task(cloud="aws"), index, enabled_clouds=BIG3, blocked=blocked)
    assert where(p) == ("aws", "us-east-1", None)
    assert p.chosen is not None and p.chosen.zones == ("use1-az2", "use1-az4")
    zones = ("use1-az1", "use1-az2", "use1-az4")
    every = [Blocked(cloud="aws", zone=z) for z in zones]
    assert where(plan(task(cloud="aws"), index, enabled_clouds=BIG3, blocked=every)) == (
        "aws",
        "us-west-2",
        None,
    )


def test_blocking_a_whole_cloud_moves_to_the_next_cloud(index: OfferIndex) -> None:
    # T4:1: aws g4dn.xlarge 0.526 ties azure NC4as_T4_v3 eastus 0.526
    p = plan(task("T4:1"), index, enabled_clouds=BIG3, blocked=[Blocked(cloud="aws")])
    assert where(p) == ("azure", "eastus", None)


def test_blocking_an_instance_type_or_only_spot(index: OfferIndex) -> None:
    # m6i.2xlarge blocked: the next default-family type is m7i.2xlarge us-east-1 0.4032
    blocked = [Blocked(instance_type="m6i.2xlarge")]
    p = plan(task(cloud="aws"), index, enabled_clouds=BIG3, blocked=blocked)
    assert p.chosen is not None and p.chosen.instance_type == "m7i.2xlarge"
    # A block on spot capacity leaves on-demand alone, and the reverse
    spot_blocked = [Blocked(cloud="aws", use_spot=True)]
    assert where(plan(task(cloud="aws"), index, enabled_clouds=BIG3, blocked=spot_blocked)) == (
        "aws",
        "us-east-1",
        None,
    )
    spot = plan(task(cloud="aws", use_spot=True), index, enabled_clouds=BIG3, blocked=spot_blocked)
    assert spot.chosen is None and spot.no_fit_reason is not None
    assert spot.no_fit_reason.startswith("every candidate is blocked (aws)")


def test_ordered_failover_reaches_the_next_alternative(index: OfferIndex) -> None:
    t = TaskRequest(alternatives=(res("V100:1"), res("T4:1")), mode="ordered")
    first = plan(t, index, enabled_clouds=BIG3)
    assert first.chosen is not None and first.chosen.accelerators == "V100:1"
    blocked = [Blocked(cloud=c) for c in ("gcp", "azure")] + [
        Blocked(cloud="aws", instance_type="p3.2xlarge")
    ]
    then = plan(t, index, enabled_clouds=BIG3, blocked=blocked)
    assert then.chosen is not None and then.chosen.accelerators == "T4:1"


@pytest.mark.parametrize(
    ("request_", "clouds", "reason"),
    [
        (
            task(cpus=at_least(2048)),
            BIG3,
            # largest default-family machine: aws m6i.32xlarge 128, gcp n2-standard-64 64,
            # azure Standard_D96s_v5 96
            "no offer has 2048+ vCPUs (largest: 128)",
        ),
        (task(cpus=exactly(3)), ("aws",), "no aws offer has 3 vCPUs (nearest: 2, 4)"),
        (
            # largest default-family memory: aws m6i.32xlarge 512, azure Standard_D64s_v5 256,
            # gcp n2-highmem-32 256
            task(memory_gib=at_least(100_000)),
            BIG3,
            "no offer has 100000+ GiB of memory (largest: 512)",
        ),
        (
            task("H100:16", cloud="gcp"),
            BIG3,
            "accelerator H100:16 is not offered on gcp (offered: H100:1, H100:2, H100:4, H100:8)",
        ),
        (
            task("H100:16"),
            BIG3,
            "accelerator H100:16 is not offered on aws, azure, gcp "
            "(offered: H100:1, H100:2, H100:4, H100:8)",
        ),
        (task("A10G:1", cloud="gcp"), BIG3, "accelerator A10G:1 is not offered on gcp"),
        (
            task("H1000:1"),
            BIG3,
            "accelerator H1000:1 is not in any catalog (did you mean 'H100'?)",
        ),
        (
            task(instance_type="x1.y", cloud="aws"),
            BIG3,
            "instance type x1.y is not in the aws catalog",
        ),
        (
            task(instance_type="x1.y"),
            BIG3,
            "instance type x1.y is not in the aws, azure, gcp catalogs",
        ),
        (
            task("A100:8", instance_type="p3.2xlarge"),
            BIG3,
            "instance type p3.2xlarge carries V100:1, not A100:8",
        ),
        (
            task(cloud="aws", region="us-east-2"),
            BIG3,
            "region us-east-2 is not in the aws catalog "
            "(regions: ap-northeast-1, eu-west-1, us-east-1, us-west-2)",
        ),
        (
            # p4de.24xlarge (A100-80GB:8) has rows in us-east-1 only
            task("A100-80GB:8", cloud="aws", region="us-west-2"),
            BIG3,
            "A100-80GB:8 is not offered in aws/us-west-2 (it is in: us-east-1)",
        ),
        (
            task(cloud="azure", zone="eastus-1"),
            BIG3,
            "azure has no zones (asked for zone eastus-1)",
        ),
        (task(cloud="kubernetes"), BIG3, "kubernetes is not enabled (enabled: aws, azure, gcp)"),
        (
            task("H100:1", num_nodes=2, cloud="hyperbolic"),
            ("hyperbolic",),
            "hyperbolic does not support more than one node",
        ),
        (
            task(cloud="aws", image_id={"eu-central-1": "ami-123"}),
            BIG3,
            "image_id names regions eu-central-1, where aws does not offer a CPU machine",
        ),
        (task(), (), "no cloud is enabled; run `stixctl check` to see why"),
    ],
)
def test_nothing_fits_names_the_filter_that_removed_the_last_candidate(
    index: OfferIndex, request_: TaskRequest, clouds: tuple[str, ...], reason: str
) -> None:
    p = plan(request_, index, enabled_clouds=clouds)
    assert p.chosen is None and p.candidates == ()
    assert p.no_fit_reason == reason


def test_everything_blocked_says_what_blocked_it(index: OfferIndex) -> None:
    blocked = [
        Blocked(cloud="aws", region=r, reason="InsufficientInstanceCapacity")
        for r in ("us-east-1", "us-west-2", "eu-west-1", "ap-northeast-1")
    ]
    p = plan(task("A100:8", cloud="aws"), index, enabled_clouds=BIG3, blocked=blocked)
    assert p.no_fit_reason == (
        "every candidate is blocked (aws/us-east-1: InsufficientInstanceCapacity; "
        "aws/us-west-2: InsufficientInstanceCapacity; "
        "aws/eu-west-1: InsufficientInstanceCapacity; "
        "aws/ap-northeast-1: InsufficientInstanceCapacity)"
    )


def test_each_alternative_gets_its_own_reason(index: OfferIndex) -> None:
    t = TaskRequest(alternatives=(res("H100:16"), res(cpus=at_least(4096))), mode="any_of")
    p = plan(t, index, enabled_clouds=("aws",))
    assert p.no_fit_reason == (
        "H100:16: accelerator H100:16 is not offered on aws (offered: H100:8); "
        "CPU: no aws offer has 4096+ vCPUs (largest: 128)"
    )


def test_an_enabled_cloud_without_a_catalog_says_how_to_get_one(index: OfferIndex) -> None:
    p = plan(task(cloud="lambda"), index, enabled_clouds=("aws", "lambda"))
    assert p.no_fit_reason is not None
    assert p.no_fit_reason.startswith("No catalog for lambda: run `stixctl catalog update lambda`")
    # the other enabled clouds still plan
    assert plan(task(), index, enabled_clouds=("lambda", "aws")).chosen is not None


def test_failing_over_down_the_ranked_list_with_candidate_blocks(index: OfferIndex) -> None:
    # Blocking each pick in turn walks the ranked list: the next plan's pick is the next one.
    p = plan(task("T4:1"), index, enabled_clouds=BIG3)
    blocked: list[Blocked] = []
    for expected in p.candidates[:6]:
        again = plan(task("T4:1"), index, enabled_clouds=BIG3, blocked=blocked)
        assert again.chosen is not None
        assert (again.chosen.cloud, again.chosen.region, again.chosen.zone) == (
            expected.cloud,
            expected.region,
            expected.zone,
        )
        blocked.append(again.chosen.blocked("InsufficientInstanceCapacity"))
