"""Pipelines planned as a whole: egress between tasks on different clouds can make the chain's
best plan differ from each task's own best, and inputs on another cloud count for the first
task. Prices are rows of the shared catalogs; egress is SkyPilot's table (tests/egress)."""

from __future__ import annotations

import pytest

from stixd.planner.egress import egress_cost, egress_seconds
from stixd.planner.offers import OfferIndex
from stixd.planner.optimizer import plan, plan_pipeline
from stixd.planner.plan_table import plan_json, render_pipeline
from stixd.planner.request import DataSize, ResourceRequest, TaskRequest
from tests.optimizer_support import INFRAS, index, res

__all__ = ["index"]

CLOUDS = ("aws", "gcp")


def chain(prep_cloud: str | None = None, train_cloud: str | None = None) -> list[TaskRequest]:
    return [
        TaskRequest(name="prep", alternatives=(ResourceRequest(cloud=prep_cloud),), outputs_gb=100),
        TaskRequest(name="train", alternatives=(res("L4:1", cloud=train_cloud),), outputs_gb=100),
        TaskRequest(name="eval"),
    ]


def test_egress_makes_the_chain_optimum_differ_from_each_tasks_optimum(
    index: OfferIndex,
) -> None:
    tasks = chain()
    # Each task alone: prep and eval on aws m6i.2xlarge 0.384 (gcp n2-standard-8 0.38847),
    # train on gcp g2-standard-4 0.14707 + L4:1 0.56029 = 0.70736 (aws g6.xlarge 0.8048).
    alone = [plan(t, index, enabled_clouds=CLOUDS).chosen for t in tasks]
    assert [c.cloud for c in alone if c] == ["aws", "gcp", "aws"]
    # Together that pays aws->gcp 100 GB = 99 x 0.09 = 8.91 and gcp->aws 100 GB = 12.00:
    # 0.384 + 0.70736 + 0.384 + 8.91 + 12 = 22.38536. All on gcp: 0.38847 + 0.70736 + 0.38847
    # = 1.4843; all on aws: 0.384 + 0.8048 + 0.384 = 1.5728. The chain goes to gcp.
    pp = plan_pipeline(tasks, index, enabled_clouds=CLOUDS)
    assert pp.chosen is not None
    assert [(c.cloud, c.instance_type, c.zone) for c in pp.chosen] == [
        ("gcp", "n2-standard-8", "us-central1-a"),
        ("gcp", "g2-standard-4", "us-central1-a"),
        ("gcp", "n2-standard-8", "us-central1-a"),
    ]
    assert pp.total_cost == pytest.approx(1.4843)
    assert pp.egress == ()
    # each task's own plan keeps its ranking, with the chain's pick marked chosen
    assert pp.tasks[0].candidates[0].cloud == "aws"
    assert pp.tasks[0].chosen == pp.chosen[0]


def test_forced_cross_cloud_hops_are_charged_and_shown(index: OfferIndex) -> None:
    pp = plan_pipeline(chain(prep_cloud="aws", train_cloud="gcp"), index, enabled_clouds=CLOUDS)
    assert pp.chosen is not None
    # eval follows train onto gcp (0.38847) rather than pay gcp->aws 12.00 to save 0.00447
    assert [c.cloud for c in pp.chosen] == ["aws", "gcp", "gcp"]
    (leg,) = pp.egress
    assert (leg.source, leg.target, leg.src_cloud, leg.dst_cloud) == ("prep", "train", "aws", "gcp")
    assert leg.cost == pytest.approx(8.91)
    assert pp.total_cost == pytest.approx(0.384 + 0.70736 + 0.38847 + 8.91)
    text = render_pipeline(pp, INFRAS)
    assert "Egress plan:" in text and "prep (AWS)" in text and "train (GCP)" in text
    assert "Considered resources for task 'train' (1 node):" in text
    out = plan_json(pp, INFRAS)
    assert out.startswith(b'{"chosen":[{"cloud":"aws"')


def test_minimize_time_avoids_transfers_and_cost_breaks_the_tie(index: OfferIndex) -> None:
    # Every task takes the default hour; a cross-cloud hop adds 100 GB x 8 / 10 Gbit/s = 80 s.
    pp = plan_pipeline(chain(), index, enabled_clouds=CLOUDS, minimize="time")
    assert pp.chosen is not None
    assert {c.cloud for c in pp.chosen} == {"gcp"}
    assert pp.total_hours == pytest.approx(3.0)
    forced = plan_pipeline(
        chain(prep_cloud="aws", train_cloud="gcp"), index, enabled_clouds=CLOUDS, minimize="time"
    )
    assert forced.total_hours == pytest.approx(3.0 + 80 / 3600)


def test_inputs_on_another_cloud_count_for_the_first_task(index: OfferIndex) -> None:
    # T4:1 alone: aws g4dn.xlarge 0.526 < gcp n1-highmem-4 + T4 0.5868. With 10 GB of inputs
    # on gcp, aws pays 10 x 0.12 = 1.20 of egress: 1.726 > 0.5868, so gcp wins.
    t = TaskRequest(alternatives=(res("T4:1"),), inputs=DataSize(10, "gcp"))
    p = plan(t, index, enabled_clouds=CLOUDS)
    assert p.chosen is not None and p.chosen.cloud == "gcp"
    aws = next(c for c in p.candidates if c.cloud == "aws")
    assert aws.egress_cost == pytest.approx(1.2)


def test_a_task_that_fits_nowhere_stops_the_pipeline_with_its_reason(index: OfferIndex) -> None:
    tasks = [TaskRequest(name="a"), TaskRequest(name="b", alternatives=(res("H100:16"),))]
    pp = plan_pipeline(tasks, index, enabled_clouds=CLOUDS)
    assert pp.chosen is None
    assert pp.no_fit_reason == (
        "task 'b': accelerator H100:16 is not offered on aws, gcp "
        "(offered: H100:1, H100:2, H100:4, H100:8)"
    )


@pytest.mark.parametrize(
    ("cloud", "gigabytes", "cost"),
    [
        ("aws", 1, 0.0),  # the first GB is free
        ("aws", 100, 99 * 0.09),
        ("aws", 20 * 1024, (10 * 1024 - 1) * 0.09 + 10 * 1024 * 0.085),
        ("aws", 200 * 1024, 200 * 1024 * 0.05),  # beyond 150 TB: one rate for all of it
        ("azure", 100, 99 * 0.0875),
        ("gcp", 100, 100 * 0.12),
        ("gcp", 2048, 2048 * 0.11),  # the whole transfer at the band's rate
        ("gcp", 20 * 1024, 20 * 1024 * 0.08),
        ("nebius", 100, 0.0),
        ("local", 100, 0.0),
    ],
)
def test_internet_egress_prices(cloud: str, gigabytes: float, cost: float) -> None:
    assert INFRAS.egress_cost(cloud, gigabytes) == pytest.approx(cost)


def test_egress_is_free_within_a_cloud_and_timed_at_10_gbps() -> None:
    assert egress_cost(INFRAS, "aws", "aws", 500) == 0.0
    assert egress_cost(INFRAS, "gcp", "aws", 100) == pytest.approx(12.0)
    assert egress_seconds("aws", "gcp", 100) == pytest.approx(80.0)
    assert egress_seconds("gcp", "gcp", 100) == 0.0
