"""The optimizer's first choice for single tasks, checked against the shared catalog rows.

Every expected answer is worked out by hand from the CSV rows named in the comments
(../shared/catalogs/v8/<cloud>/vms.csv); prices are USD per hour per instance.
"""

from __future__ import annotations

import pytest

from stixd.planner.catalog import Offer
from stixd.planner.offers import OfferIndex
from stixd.planner.optimizer import plan
from stixd.planner.plans import Candidate, Plan
from stixd.planner.request import ResourceRequest, TaskRequest
from tests.optimizer_support import BIG3, at_least, exactly, index, res, task

__all__ = ["index"]  # the fixture, imported for pytest


def pick(p: Plan) -> tuple[str, str, str, str | None, str | None]:
    c = p.chosen
    assert c is not None, p.no_fit_reason
    return (c.cloud, c.instance_type, c.region, c.zone, c.accelerators)


def chosen(p: Plan) -> Candidate:
    assert p.chosen is not None, p.no_fit_reason
    return p.chosen


def test_a_task_without_resources_gets_skypilots_default_instance(index: OfferIndex) -> None:
    # No cpus/memory: AWS, Azure and GCP pick from their general-purpose families with
    # cpus 8+ and >= 4 GiB per vCPU. Rows: aws m6i.2xlarge us-east-1 0.384 (and us-west-2
    # 0.384), azure Standard_D8s_v5 eastus 0.384, gcp n2-standard-8 us-central1-a 0.38847.
    # Three-way tie at 0.384: aws is listed first, us-east-1 sorts before us-west-2.
    p = plan(TaskRequest(), index, enabled_clouds=BIG3)
    assert pick(p) == ("aws", "m6i.2xlarge", "us-east-1", None, None)
    assert chosen(p).hourly_cost == pytest.approx(0.384)
    assert chosen(p).zones == ("use1-az1", "use1-az2", "use1-az4")
    runner_up = p.candidates[1]
    assert (runner_up.cloud, runner_up.region) == ("aws", "us-west-2")
    assert "region order" in runner_up.why


def test_t3_and_compute_families_are_not_default_picks(index: OfferIndex) -> None:
    # cpus: 2 (exactly) keeps 4 GiB per vCPU as the default memory: m6i.large (2 vCPU, 8 GiB,
    # 0.096) wins over c6i.large (2, 4 GiB, 0.085, too little memory) and t3.medium (0.0416,
    # not a default family).
    p = plan(task(cpus=exactly(2)), index, enabled_clouds=("aws",))
    assert pick(p) == ("aws", "m6i.large", "us-east-1", None, None)
    # With memory given there is no ratio: c6i.large (2 vCPU, 4 GiB) 0.085 is cheapest.
    p = plan(task(cpus=exactly(2), memory_gib=at_least(4)), index, enabled_clouds=("aws",))
    assert pick(p) == ("aws", "c6i.large", "us-east-1", None, None)


def test_clouds_without_default_families_take_their_cheapest_type(index: OfferIndex) -> None:
    # Nebius has no default family in SkyPilot: its cheapest type wins with no cpus default.
    # nebius cpu-e2_2vcpu-8gb eu-north1 0.0496 < aws m6i.2xlarge 0.384.
    p = plan(TaskRequest(), index, enabled_clouds=(*BIG3, "nebius"))
    assert pick(p) == ("nebius", "cpu-e2_2vcpu-8gb", "eu-north1", None, None)
    assert chosen(p).hourly_cost == pytest.approx(0.0496)


def test_memory_bound_task_gets_the_cheapest_machine_with_that_memory(
    index: OfferIndex,
) -> None:
    # memory: 256+ (cpus not given, so no cpus default): aws r6i.8xlarge (32 vCPU, 256 GiB)
    # us-east-1 2.016 ties azure Standard_E32s_v5 eastus 2.016; gcp n2-highmem-32 2.09622.
    p = plan(task(memory_gib=at_least(256)), index, enabled_clouds=BIG3)
    assert pick(p) == ("aws", "r6i.8xlarge", "us-east-1", None, None)
    assert (p.candidates[2].cloud, p.candidates[2].instance_type) == ("azure", "Standard_E32s_v5")


@pytest.mark.parametrize(
    ("gpu", "expected", "hourly"),
    [
        # aws g4dn.xlarge us-east-1 0.526 ties azure NC4as_T4_v3 eastus 0.526 (aws first);
        # gcp T4:1 0.35 + n1-highmem-4 0.2368 = 0.5868.
        ("T4:1", ("aws", "g4dn.xlarge", "us-east-1", None, "T4:1"), 0.526),
        # gcp V100:1 us-central1-a 2.48 + n1-highmem-8 0.4736 (8 vCPU, 52 GiB: the default host
        # for one V100 needs 8 vCPUs, 32 GiB) = 2.9536 < aws p3.2xlarge 3.06, azure NC6s_v3 3.06.
        ("V100:1", ("gcp", "n1-highmem-8", "us-central1", "us-central1-a", "V100:1"), 2.9536),
        # aws p4d.24xlarge us-east-1 21.9576 < azure ND96asr_v4 27.197.
        ("A100:8", ("aws", "p4d.24xlarge", "us-east-1", None, "A100:8"), 21.9576),
        # aws p4de.24xlarge us-east-1 27.447 < azure ND96amsr_A100_v4 32.77
        # < gcp a2-ultragpu-8g 8.79698 + A100-80GB:8 31.43336.
        ("A100-80GB:8", ("aws", "p4de.24xlarge", "us-east-1", None, "A100-80GB:8"), 27.447),
        # gcp a2-highgpu-1g 0.73948 + A100:1 2.93391 = 3.67339 (us-central1-a).
        ("A100:1", ("gcp", "a2-highgpu-1g", "us-central1", "us-central1-a", "A100:1"), 3.67339),
        # aws p5.48xlarge us-east-1 55.04 < gcp a3-highgpu-8g 9.46006 + H100:8 78.37032.
        ("H100:8", ("aws", "p5.48xlarge", "us-east-1", None, "H100:8"), 55.04),
        # gcp g2-standard-4 0.14707 + L4:1 0.56029 = 0.70736 < aws g6.xlarge 0.8048.
        ("L4:1", ("gcp", "g2-standard-4", "us-central1", "us-central1-a", "L4:1"), 0.70736),
    ],
)
def test_common_gpus_go_to_the_cheapest_offer(
    index: OfferIndex, gpu: str, expected: tuple[str, ...], hourly: float
) -> None:
    p = plan(task(gpu), index, enabled_clouds=BIG3)
    assert pick(p) == expected
    assert chosen(p).hourly_cost == pytest.approx(hourly)


def test_spot_uses_spot_prices_per_zone(index: OfferIndex) -> None:
    # T4:1 spot: azure Standard_NC4as_T4_v3 westus2 SpotPrice 0.077705 is the cheapest spot
    # T4 (aws g4dn.xlarge use1-az2 0.157241; azure has no zones, so it stays region-level).
    p = plan(task("T4:1", use_spot=True), index, enabled_clouds=BIG3)
    assert pick(p) == ("azure", "Standard_NC4as_T4_v3", "westus2", None, "T4:1")
    assert chosen(p).use_spot and chosen(p).hourly_cost == pytest.approx(0.077705)
    # On AWS spot is planned per zone: g4dn.xlarge use1-az2 0.157241 first.
    p = plan(task("T4:1", use_spot=True), index, enabled_clouds=("aws",))
    assert pick(p) == ("aws", "g4dn.xlarge", "us-east-1", "use1-az2", "T4:1")


def test_spot_skips_offers_without_a_spot_price(index: OfferIndex) -> None:
    # nebius rows have SpotPrice only on some GPU types; cpu-e2_2vcpu-8gb has none.
    t = task(use_spot=True, cloud="nebius", instance_type="cpu-e2_2vcpu-8gb")
    p = plan(t, index, enabled_clouds=(*BIG3, "nebius"))
    assert p.chosen is None
    assert p.no_fit_reason == "the nebius catalog has no spot price for cpu-e2_2vcpu-8gb"
    # A spot CPU task on nebius gets the cheapest type that has a spot price, as SkyPilot's
    # default pick there has no family: gpu-h100-sxm_1gpu-16vcpu-200gb SpotPrice 1.25.
    p = plan(task(use_spot=True, cloud="nebius"), index, enabled_clouds=(*BIG3, "nebius"))
    assert pick(p) == ("nebius", "gpu-h100-sxm_1gpu-16vcpu-200gb", "eu-north1", None, "H100:1")


def test_pinned_cloud_region_and_zone(index: OfferIndex) -> None:
    # gcp n2-standard-8 us-central1-a 0.38847 (us-central1 sorts before us-east1 at equal price)
    p = plan(task(cloud="gcp"), index, enabled_clouds=BIG3)
    assert pick(p) == ("gcp", "n2-standard-8", "us-central1", "us-central1-a", None)
    # aws m6i.2xlarge eu-west-1 0.4282
    p = plan(task(cloud="aws", region="eu-west-1"), index, enabled_clouds=BIG3)
    assert pick(p) == ("aws", "m6i.2xlarge", "eu-west-1", None, None)
    assert chosen(p).hourly_cost == pytest.approx(0.4282)
    # A zone alone finds its cloud: gcp n2-standard-8 us-east1-c 0.38847
    p = plan(task(zone="us-east1-c"), index, enabled_clouds=BIG3)
    assert pick(p) == ("gcp", "n2-standard-8", "us-east1", "us-east1-c", None)


def test_pinned_instance_type_outside_the_default_families(index: OfferIndex) -> None:
    # aws t3.medium us-east-1 0.0416 (only reachable by naming it)
    p = plan(task(instance_type="t3.medium"), index, enabled_clouds=BIG3)
    assert pick(p) == ("aws", "t3.medium", "us-east-1", None, None)
    assert chosen(p).hourly_cost == pytest.approx(0.0416)


def test_pinned_gcp_host_with_a_gpu(index: OfferIndex) -> None:
    # n1-standard-8 us-central1-a 0.38 + T4:1 0.35 = 0.73
    p = plan(task("T4:1", instance_type="n1-standard-8"), index, enabled_clouds=BIG3)
    assert pick(p) == ("gcp", "n1-standard-8", "us-central1", "us-central1-a", "T4:1")
    assert chosen(p).hourly_cost == pytest.approx(0.73)


def test_gcp_gpu_host_follows_the_cpus_asked_for(index: OfferIndex) -> None:
    # T4 with cpus: 2+ on GCP: SkyPilot takes the cheapest N1 host with >= 2 vCPUs and
    # >= 8 GiB: n1-highmem-2 (2 vCPU, 13 GiB) us-central1-a 0.1184 + T4:1 0.35 = 0.4684,
    # not the default host n1-highmem-4 (0.2368 + 0.35 = 0.5868).
    p = plan(task("T4:1", cloud="gcp", cpus=at_least(2)), index, enabled_clouds=BIG3)
    assert pick(p) == ("gcp", "n1-highmem-2", "us-central1", "us-central1-a", "T4:1")
    assert chosen(p).hourly_cost == pytest.approx(0.4684)


def test_any_of_takes_the_cheapest_of_the_set(index: OfferIndex) -> None:
    # {V100:1, T4:1}: T4 (aws g4dn.xlarge 0.526) beats V100 (gcp 2.9536)
    t = TaskRequest(alternatives=(res("V100:1"), res("T4:1")), mode="any_of")
    p = plan(t, index, enabled_clouds=BIG3)
    assert pick(p)[-1] == "T4:1"
    assert chosen(p).alternative == 1
    # The accelerator set form means the same
    t = TaskRequest(alternatives=(res("V100:1", "T4:1"),))
    assert pick(plan(t, index, enabled_clouds=BIG3))[-1] == "T4:1"


def test_ordered_takes_the_first_satisfiable_even_if_a_later_one_is_cheaper(
    index: OfferIndex,
) -> None:
    t = TaskRequest(alternatives=(res("V100:1"), res("T4:1")), mode="ordered")
    p = plan(t, index, enabled_clouds=BIG3)
    assert pick(p) == ("gcp", "n1-highmem-8", "us-central1", "us-central1-a", "V100:1")
    assert p.ordered
    # every V100 candidate ranks before the first T4 one: failover walks the list in order
    alternatives = [c.alternative for c in p.candidates]
    assert alternatives == sorted(alternatives)
    # A list of accelerators is an ordered preference too
    ordered_list = ResourceRequest(
        accelerators=res("V100:1", "T4:1").accelerators, accelerators_ordered=True
    )
    p = plan(TaskRequest(alternatives=(ordered_list,)), index, enabled_clouds=BIG3)
    assert pick(p)[-1] == "V100:1"


def test_ordered_skips_an_alternative_nothing_can_satisfy(index: OfferIndex) -> None:
    t = TaskRequest(alternatives=(res("H100:16"), res("T4:1")), mode="ordered")
    assert pick(plan(t, index, enabled_clouds=BIG3))[-1] == "T4:1"


def test_num_nodes_multiplies_the_cost(index: OfferIndex) -> None:
    # 4 x aws p4d.24xlarge 21.9576 = 87.8304
    p = plan(task("A100:8", num_nodes=4), index, enabled_clouds=BIG3)
    c = chosen(p)
    assert c.hourly_price == pytest.approx(21.9576)
    assert c.hourly_cost == pytest.approx(87.8304)
    assert c.choice().hourly_cost == pytest.approx(87.8304)


def test_minimize_time_uses_the_estimates_and_cost_breaks_ties(index: OfferIndex) -> None:
    # T4 takes 3 h (aws g4dn.xlarge 0.526 x 3 = 1.578), A100 takes 1 h (gcp 3.67339):
    # cheapest is the T4, fastest the A100.
    t = TaskRequest(
        alternatives=(res("T4:1", "A100:1"),),
        hours_by_accelerators={"T4:1": 3.0, "A100:1": 1.0},
    )
    by_cost = plan(t, index, enabled_clouds=BIG3)
    assert chosen(by_cost).accelerators == "T4:1"
    assert chosen(by_cost).cost == pytest.approx(1.578)
    by_time = plan(t, index, enabled_clouds=BIG3, minimize="time")
    assert pick(by_time) == ("gcp", "a2-highgpu-1g", "us-central1", "us-central1-a", "A100:1")
    # Without estimates every choice takes the same hour, and the cheapest wins.
    same = plan(task(), index, enabled_clouds=BIG3, minimize="time")
    assert pick(same) == ("aws", "m6i.2xlarge", "us-east-1", None, None)


LOCAL = Offer("local", "local", None, 0.0, 8.0, 16.0, 0.0, None, "local")


def test_local_is_free_and_bounded_by_this_machine(index: OfferIndex) -> None:
    extra = {"local": [LOCAL]}
    clouds = ("local", *BIG3)
    p = plan(task(cpus=at_least(4)), index, enabled_clouds=clouds, extra_offers=extra)
    assert pick(p) == ("local", "local", "local", None, None)
    assert chosen(p).hourly_cost == 0.0
    # More than this machine has: the clouds take it
    p = plan(task(cpus=at_least(16)), index, enabled_clouds=clouds, extra_offers=extra)
    assert chosen(p).cloud == "aws"
    # No accelerators, no spot, and a pinned cloud leaves it out
    assert chosen(plan(task("T4:1"), index, enabled_clouds=clouds, extra_offers=extra)).cloud
    assert chosen(plan(task("T4:1"), index, enabled_clouds=clouds, extra_offers=extra)).cloud != (
        "local"
    )
    p = plan(task(use_spot=True), index, enabled_clouds=clouds, extra_offers=extra)
    assert chosen(p).cloud != "local"
    p = plan(task(cloud="aws"), index, enabled_clouds=clouds, extra_offers=extra)
    assert chosen(p).cloud == "aws"
    # Not enabled: not used
    p = plan(task(), index, enabled_clouds=BIG3, extra_offers=extra)
    assert chosen(p).cloud == "aws"
    p = plan(
        task(cloud="local", cpus=at_least(64)), index, enabled_clouds=clouds, extra_offers=extra
    )
    assert p.no_fit_reason == "no local offer has 64+ vCPUs (largest: 8)"


def test_a_warm_plan_reuses_the_index(index: OfferIndex) -> None:
    first = plan(task("A100:8"), index, enabled_clouds=BIG3)
    again = plan(task("A100:8"), index, enabled_clouds=BIG3)
    assert first == again
    assert index.cloud("aws") is index.cloud("aws")
