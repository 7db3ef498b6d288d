"""Equal prices: the pick follows SkyPilot's enumeration order, so the same task always gets
the same choice. Small synthetic catalogs written into tmp_path make each tie explicit."""

from __future__ import annotations

from pathlib import Path

import pytest

from stixd.planner.offers import OfferIndex
from stixd.planner.optimizer import plan
from stixd.planner.plan_table import plan_rows
from stixd.planner.plans import Plan
from stixd.planner.request import ResourceRequest, TaskRequest
from tests.optimizer_support import AWS_HEADER, GCP_HEADER, INFRAS, index_over, task, write_cloud


def aws_row(itype: str, price: float, region: str, zone: str, vcpus: int = 8) -> str:
    return f"{itype},,,{vcpus}.0,{vcpus * 4}.0,,{price},{price / 3:.6f},{region},{zone},x86_64"


def gcp_row(itype: str, price: float, region: str, zone: str) -> str:
    return f"{itype},8.0,32.0,,,,{region},{zone},{price},{price / 3:.6f}"


@pytest.fixture
def tied(tmp_path: Path) -> OfferIndex:
    root = tmp_path / "catalogs"
    write_cloud(
        root,
        "aws",
        AWS_HEADER,
        [
            aws_row("m6i.2xlarge", 0.5, "eu-west-1", "euw1-az1"),
            aws_row("m6i.2xlarge", 0.5, "ap-northeast-1", "apne1-az1"),
            aws_row("m6i.2xlarge", 0.6, "us-east-1", "use1-az1"),
            aws_row("m6i.2xlarge", 0.5, "us-west-2", "usw2-az2"),
            aws_row("m6i.2xlarge", 0.5, "us-west-2", "usw2-az1"),
            aws_row("m7i.2xlarge", 0.5, "us-west-2", "usw2-az1"),
        ],
    )
    write_cloud(
        root,
        "gcp",
        GCP_HEADER,
        [
            gcp_row("n2-standard-8", 0.5, "us-east1", "us-east1-b"),
            gcp_row("n2-standard-8", 0.5, "us-central1", "us-central1-b"),
            gcp_row("n2-standard-8", 0.5, "us-central1", "us-central1-a"),
        ],
    )
    return index_over(root, tmp_path / "home")


def order(p: Plan) -> list[tuple[str, str, str, str | None]]:
    return [(c.cloud, c.instance_type, c.region, c.zone) for c in p.candidates]


def test_aws_tries_us_regions_first_then_the_rest_by_name(tied: OfferIndex) -> None:
    # m6i.2xlarge at 0.5 in us-west-2, eu-west-1 and ap-northeast-1: US first even though
    # "ap" and "eu" sort earlier. SkyPilot expands the cheapest instance type over its regions,
    # so m7i.2xlarge (also 0.5) follows all of them; us-east-1 costs more and comes last.
    p = plan(task(), tied, enabled_clouds=("aws",))
    assert order(p) == [
        ("aws", "m6i.2xlarge", "us-west-2", None),
        ("aws", "m6i.2xlarge", "ap-northeast-1", None),
        ("aws", "m6i.2xlarge", "eu-west-1", None),
        ("aws", "m7i.2xlarge", "us-west-2", None),
        ("aws", "m6i.2xlarge", "us-east-1", None),
    ]
    # the region keeps its zones in name order at equal price
    assert p.candidates[0].zones == ("usw2-az1", "usw2-az2")


def test_equal_instance_types_keep_the_cheaper_anywhere_then_smaller_then_name(
    tied: OfferIndex,
) -> None:
    p = plan(task(cloud="aws", region="us-west-2"), tied, enabled_clouds=("aws",))
    assert [c.instance_type for c in p.candidates] == ["m6i.2xlarge", "m7i.2xlarge"]
    assert "instance type order" in p.candidates[1].why


def test_gcp_zones_tie_by_region_then_zone_name(tied: OfferIndex) -> None:
    p = plan(task(), tied, enabled_clouds=("gcp",))
    assert [c.zone for c in p.candidates] == ["us-central1-a", "us-central1-b", "us-east1-b"]


def test_clouds_tie_in_the_order_they_are_enabled(tied: OfferIndex) -> None:
    first_gcp = plan(task(), tied, enabled_clouds=("gcp", "aws"))
    first_aws = plan(task(), tied, enabled_clouds=("aws", "gcp"))
    assert first_gcp.chosen is not None and first_gcp.chosen.cloud == "gcp"
    assert first_aws.chosen is not None and first_aws.chosen.cloud == "aws"
    # the table keeps that order for rows of equal cost
    assert [c.cloud for c in plan_rows(first_gcp, INFRAS)] == ["gcp", "aws"]


def test_any_of_ties_go_to_the_alternative_listed_first(tied: OfferIndex) -> None:
    t = TaskRequest(
        alternatives=(ResourceRequest(cloud="gcp"), ResourceRequest(cloud="aws")), mode="any_of"
    )
    p = plan(t, tied, enabled_clouds=("aws", "gcp"))
    assert p.chosen is not None and (p.chosen.cloud, p.chosen.alternative) == ("gcp", 0)


def test_the_same_task_gets_the_same_pick_every_time(tied: OfferIndex) -> None:
    picks = {plan(task(), tied, enabled_clouds=("aws", "gcp")).chosen for _ in range(5)}
    assert len(picks) == 1
