"""``launch --dryrun``: the plan as SkyPilot's table and as JSON, and the request helpers the
task model uses to build the planner's input."""

from __future__ import annotations

import json

import pytest

from stixd.planner.catalog import CatalogError
from stixd.planner.offers import OfferIndex
from stixd.planner.optimizer import plan, plan_pipeline
from stixd.planner.plan_table import plan_json, plan_rows, render_plan
from stixd.planner.request import (
    Accelerator,
    Amount,
    TaskRequest,
    parse_accelerators,
    parse_amount,
)
from tests.optimizer_support import BIG3, INFRAS, index, res, task

__all__ = ["index"]

HEADER = " INFRA   INSTANCE          vCPUs   Mem(GB)   GPUS   REGION/ZONE     COST ($)   CHOSEN"


def test_the_table_shows_one_row_per_cloud_with_the_chosen_marked(index: OfferIndex) -> None:
    text = render_plan(plan(task(), index, enabled_clouds=BIG3), INFRAS)
    lines = text.splitlines()
    assert lines[:4] == [
        "Target: minimizing cost",
        "Estimated cost: $0.4 / hour",
        "",
        "Considered resources (1 node):",
    ]
    assert lines[5] == HEADER
    assert lines[7] == (
        " AWS     m6i.2xlarge       8       32        -      us-east-1       0.38          \u2714"
    )
    assert lines[8].split() == ["Azure", "Standard_D8s_v5", "8", "32", "-", "eastus", "0.38"]
    assert lines[9].split() == ["GCP", "n2-standard-8", "8", "32", "-", "us-central1-a", "0.39"]
    assert set(lines[4]) == {"-"} and lines[4] == lines[6] == lines[10]


def test_spot_rows_and_node_count(index: OfferIndex) -> None:
    text = render_plan(
        plan(task("A100:8", use_spot=True, num_nodes=2), index, enabled_clouds=BIG3), INFRAS
    )
    assert "Considered resources (2 nodes):" in text
    # azure Standard_ND96asr_v4 eastus SpotPrice 3.01557 x 2 = 6.03
    row = " Azure   Standard_ND96asr_v4[Spot]   96      900       A100:8   eastus        6.03"
    assert row in text


def test_ordered_rows_keep_the_list_order(index: OfferIndex) -> None:
    p = plan(
        TaskRequest(alternatives=(res("V100:1"), res("T4:1")), mode="ordered"),
        index,
        enabled_clouds=BIG3,
    )
    assert [c.accelerators for c in plan_rows(p, INFRAS)] == ["V100:1"] * 3 + ["T4:1"] * 3
    assert "will be tried in the listed order): V100:1, T4:1" in render_plan(p, INFRAS)


def test_nothing_fits_prints_the_reason(index: OfferIndex) -> None:
    text = render_plan(plan(task("H100:16", cloud="gcp"), index, enabled_clouds=BIG3), INFRAS)
    assert text.splitlines()[:2] == [
        "No resource satisfying H100:16 on gcp (enabled infra: aws, azure, gcp).",
        "Reason: accelerator H100:16 is not offered on gcp "
        "(offered: H100:1, H100:2, H100:4, H100:8).",
    ]


def test_json_has_exactly_the_documented_shape(index: OfferIndex) -> None:
    out = json.loads(
        plan_json(plan(task("A100:8", num_nodes=4), index, enabled_clouds=BIG3), INFRAS)
    )
    assert set(out) == {"chosen", "candidates"}
    assert out["chosen"] == {
        "cloud": "aws",
        "region": "us-east-1",
        "zone": None,
        "instance_type": "p4d.24xlarge",
        "accelerators": "A100:8",
        "use_spot": False,
        "hourly_cost": 87.8304,  # 4 x 21.9576
    }
    assert [c["cloud"] for c in out["candidates"]] == ["aws", "azure", "gcp"]
    assert all(set(c) == set(out["chosen"]) for c in out["candidates"])
    nothing = json.loads(plan_json(plan(task("H100:16"), index, enabled_clouds=BIG3), INFRAS))
    assert nothing["chosen"] is None and nothing["candidates"] == []
    assert nothing["no_fit_reason"].startswith("accelerator H100:16 is not offered")


def test_pipeline_json_lists_one_choice_per_task(index: OfferIndex) -> None:
    pp = plan_pipeline([task(), task("T4:1")], index, enabled_clouds=BIG3)
    out = json.loads(plan_json(pp, INFRAS))
    assert [c["instance_type"] for c in out["chosen"]] == ["m6i.2xlarge", "g4dn.xlarge"]
    assert len(out["candidates"]) == 2


@pytest.mark.parametrize(
    ("text", "amount"),
    [
        (4, Amount(4)),
        ("4", Amount(4)),
        ("4+", Amount(4, at_least=True)),
        ("0.5+", Amount(0.5, at_least=True)),
        ("32GB+", Amount(32, at_least=True)),
        ("1TB", Amount(1024)),
        ("512MB", Amount(0.5)),
    ],
)
def test_parse_amount(text: int | str, amount: Amount) -> None:
    assert parse_amount(text, "memory") == amount


@pytest.mark.parametrize("bad", ["four", "-1", "0", "4++", True])
def test_parse_amount_rejects_nonsense(bad: object) -> None:
    with pytest.raises(CatalogError, match=r"resources\.cpus"):
        parse_amount(bad, "cpus")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "accelerators", "ordered"),
    [
        ("A100:8", [Accelerator("A100", 8)], False),
        ("T4", [Accelerator("T4", 1)], False),
        ("K80:0.5", [Accelerator("K80", 0.5)], False),
        ({"A100": 8}, [Accelerator("A100", 8)], False),
        ({"A100:1": None, "T4:1": None}, [Accelerator("A100", 1), Accelerator("T4", 1)], False),
        (["V100:1", "T4:1"], [Accelerator("V100", 1), Accelerator("T4", 1)], True),
        ([{"T4": 1}, "V100:2"], [Accelerator("T4", 1), Accelerator("V100", 2)], True),
        ({"L4", "A10G"}, None, False),
        ("nvidia:24GB+:2", [Accelerator("nvidia:24GB+", 2)], False),
        ("80GB", [Accelerator("80GB", 1)], False),
    ],
)
def test_parse_accelerators_in_every_yaml_form(
    value: object, accelerators: list[Accelerator] | None, ordered: bool
) -> None:
    got, is_ordered = parse_accelerators(value)
    if accelerators is None:
        assert sorted(a.name for a in got) == ["A10G", "L4"]
    else:
        assert list(got) == accelerators
    assert is_ordered is ordered


def test_memory_sized_accelerators_expand_to_devices(index: OfferIndex) -> None:
    # "40GB+" means every device with at least 40 GiB the catalogs know of (aws GpuInfo:
    # A100 40960 MiB, A100-80GB and H100 81920 MiB; nebius L40S 49152 MiB, H200 144384 MiB)
    p = plan(task("40GB+:8"), index, enabled_clouds=BIG3)
    assert p.chosen is not None and p.chosen.accelerators == "A100:8"  # p4d.24xlarge 21.9576
    assert {c.accelerators for c in p.candidates} >= {"A100:8", "A100-80GB:8", "H100:8"}
    # "24GB+" (decimal GB, as devices are sold): A10G 23028 MiB and L4 23034 MiB count as 24 GB,
    # T4 15360 MiB does not. On aws: g6.xlarge (L4) 0.8048 < g5.xlarge (A10G) 1.006.
    p = plan(task("24GB+"), index, enabled_clouds=("aws",))
    assert p.chosen is not None and p.chosen.instance_type == "g6.xlarge"
    assert "T4:1" not in {c.accelerators for c in p.candidates}
    assert "A10G:1" in {c.accelerators for c in p.candidates}
    # "16GB" is about 16 GB: T4 and V100 (aws g4dn.xlarge 0.526 first)
    p = plan(task("16GB"), index, enabled_clouds=("aws",))
    assert {c.accelerators for c in p.candidates} == {"T4:1", "V100:1"}
