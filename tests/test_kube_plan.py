"""Kubernetes planned like a cloud whose regions are contexts: the node catalog is written from
the nodes two fake API servers list, and the planner picks by the GPUs their labels name, in
the order of `allowed_contexts`, $0, with what each pod asks in the placement."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
import yaml

from stixd.planner.catalog import Catalog, open_catalog
from stixd.planner.from_task import task_request
from stixd.planner.infra_meta import Infras
from stixd.planner.offers import OfferIndex
from stixd.planner.optimizer import plan
from stixd.planner.plan_table import render_plan
from stixd.planner.request import Blocked
from stixd.planner.target import NoChoiceLeft, cloud_spec
from stixd.providers.kubernetes.config import KubernetesConfig
from stixd.providers.kubernetes.contexts import Clients, read_kubeconfig
from stixd.providers.kubernetes.meta import META
from stixd.providers.kubernetes.node_catalog import NodeCatalog, catalog_root
from stixd.providers.kubernetes.seams import PodRequest
from stixproto.errors import InvalidTask
from stixproto.task import Task
from stixproto.task.load import task_from_dict
from tests.conftest import Stix
from tests.kube_fake.process import FakeProcess

INFRAS = Infras.of([META], ["kubernetes"])


def task(text: str) -> Task:
    return task_from_dict(yaml.safe_load(text))


@pytest.fixture(scope="module")
def fakes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, FakeProcess]]:
    """Two contexts: kube-a as the fake starts (CPU nodes, one node of 2 A100), kube-b with a
    node of 4 H100 added (labelled in the same scheme as its A100 node)."""
    root = tmp_path_factory.mktemp("kube-plan")
    with contextlib.ExitStack() as stack:
        made = {
            name: stack.enter_context(FakeProcess(root / name, "--context", name))
            for name in ("kube-a", "kube-b")
        }
        made["kube-b"].admin(
            "nodes",
            name="h100-1",
            cpu="32",
            memory="256Gi",
            gpus=4,
            labels={"skypilot.co/accelerator": "h100"},
        )
        yield made


def node_catalog(
    fakes: dict[str, FakeProcess], home: Path, allowed: tuple[str, ...] | None
) -> NodeCatalog:
    env = {"KUBECONFIG": ":".join(str(f.kubeconfig) for f in fakes.values())}
    clients = Clients(read_kubeconfig(env), home / "certs")
    return NodeCatalog(clients, KubernetesConfig(allowed_contexts=allowed), catalog_root(home))


def refresh_once(nodes: NodeCatalog) -> None:
    async def go() -> None:
        try:
            await nodes.refresh()
        finally:
            await nodes.clients.aclose()

    anyio.run(go)


def refreshed(
    fakes: dict[str, FakeProcess], home: Path, allowed: tuple[str, ...] | None
) -> Catalog:
    refresh_once(node_catalog(fakes, home, allowed))
    return open_catalog(home, {}, [catalog_root(home)])


def spec(catalog: Catalog, text: str, blocked: list[Blocked] | None = None) -> dict[str, object]:
    return cloud_spec(task(text), "kubernetes", OfferIndex(catalog, INFRAS), blocked or [])


def test_a_gpu_task_goes_to_the_context_whose_nodes_carry_that_gpu_with_skypilots_pod_size(
    fakes: dict[str, FakeProcess], tmp_path: Path
) -> None:
    catalog = refreshed(fakes, tmp_path, ("kube-a", "kube-b"))
    chosen = spec(catalog, "resources: {infra: k8s, accelerators: H100:2}\nrun: x")
    placement = chosen["placement"]
    assert isinstance(placement, dict)
    assert placement["region"] == "kube-b"
    assert chosen["hourly_price"] == 0.0
    assert chosen["resources"] == "1x kubernetes/kube-b 8CPU--32GB--H100:2"
    asked = PodRequest.of(placement)  # what the provider reads: 4 CPUs and 16 GB per GPU
    assert (asked.cpus, asked.memory_gb, asked.accelerator, asked.accelerator_count) == (
        8.0,
        32.0,
        "H100",
        2,
    )
    cpu = spec(catalog, "resources: {infra: k8s, cpus: 3}\nrun: x")["placement"]
    assert isinstance(cpu, dict)
    assert cpu["request"] == {
        "cpus": 3.0,
        "memory_gb": 3.0,
        "accelerator": None,
        "accelerator_count": 0,
    }


def test_a_context_without_the_gpu_or_without_enough_of_it_is_never_picked(
    fakes: dict[str, FakeProcess], tmp_path: Path
) -> None:
    catalog = refreshed(fakes, tmp_path, ("kube-a", "kube-b"))
    h100 = "resources: {infra: k8s, accelerators: H100:1}\nrun: x"
    with pytest.raises(NoChoiceLeft, match="blocked"):  # kube-a has no H100 to fall back on
        spec(catalog, h100, [Blocked(cloud="kubernetes", region="kube-b", reason="full")])
    with pytest.raises(InvalidTask, match="A100:4"):  # two A100 per node in either context
        spec(catalog, "resources: {infra: k8s, accelerators: A100:4}\nrun: x")
    with pytest.raises(
        InvalidTask, match=r"H100:1 is not offered in kubernetes/kube-a \(it is in: kube-b\)"
    ):
        spec(catalog, "resources: {infra: k8s/kube-a, accelerators: H100:1}\nrun: x")


def test_contexts_are_tried_in_the_order_of_allowed_contexts(
    fakes: dict[str, FakeProcess], tmp_path: Path
) -> None:
    text = "resources: {infra: kubernetes}\nrun: x"
    for allowed in (("kube-b", "kube-a"), ("kube-a", "kube-b")):
        catalog = refreshed(fakes, tmp_path / "-".join(allowed), allowed)
        first = spec(catalog, text)["placement"]
        assert isinstance(first, dict) and first["region"] == allowed[0]
        lost = [Blocked(cloud="kubernetes", region=allowed[0], reason="FailedScheduling")]
        after = spec(catalog, text, lost)["placement"]
        assert isinstance(after, dict) and after["region"] == allowed[1]
    only_current = refreshed(fakes, tmp_path / "current", None)  # the kubeconfig's current one
    first_file = next(iter(fakes.values())).kubeconfig
    current = yaml.safe_load(first_file.read_text())["current-context"]
    with pytest.raises(NoChoiceLeft):
        spec(only_current, text, [Blocked(cloud="kubernetes", region=current, reason="x")])


def test_a_named_context_that_is_not_planned_on_is_one_line_naming_those_that_are(
    fakes: dict[str, FakeProcess], tmp_path: Path
) -> None:
    catalog = refreshed(fakes, tmp_path, ("kube-a", "kube-b"))
    with pytest.raises(InvalidTask) as refused:
        spec(catalog, "resources: {infra: k8s/nope}\nrun: x")
    message = str(refused.value)
    assert "\n" not in message
    assert "no usable context nope" in message and "kube-a, kube-b" in message


def test_dryrun_shows_a_row_per_context_at_no_cost_in_failover_order(
    fakes: dict[str, FakeProcess], tmp_path: Path
) -> None:
    catalog = refreshed(fakes, tmp_path, ("kube-b", "kube-a"))
    shown = render_plan(
        plan(
            task_request(task("resources: {infra: k8s, accelerators: A100:1}\nrun: x")),
            OfferIndex(catalog, INFRAS),
            enabled_clouds=["kubernetes"],
        ),
        INFRAS,
    )
    rows = [line.split() for line in shown.splitlines() if line.startswith(" Kubernetes")]
    assert [r[1:] for r in rows] == [
        ["4CPU--16GB--A100:1", "4", "16", "A100:1", "kube-b", "0.00", "\u2714"],
        ["4CPU--16GB--A100:1", "4", "16", "A100:1", "kube-a", "0.00"],
    ]
    assert "Estimated cost: $0.0 / hour" in shown


def test_a_node_added_later_is_planned_on_after_a_refresh_without_reopening_the_catalog(
    fakes: dict[str, FakeProcess], tmp_path: Path
) -> None:
    nodes = node_catalog(fakes, tmp_path, ("kube-a",))
    catalog = open_catalog(tmp_path, {}, [catalog_root(tmp_path)])
    big = "resources: {infra: k8s, cpus: 48}\nrun: x"

    async def go() -> None:
        try:
            await nodes.refresh()
            with pytest.raises(InvalidTask, match="vCPUs"):
                spec(catalog, big)
            await nodes.refresh()  # fresh: not listed again, the file is unchanged
            fakes["kube-a"].admin("nodes", name="big-1", cpu="64", memory="256Gi")
            await nodes.refresh(force=True)
        finally:
            await nodes.clients.aclose()

    anyio.run(go)
    placement = spec(catalog, big)["placement"]
    assert isinstance(placement, dict) and placement["region"] == "kube-a"


def test_a_context_that_cannot_be_read_is_left_out_and_says_why(
    fakes: dict[str, FakeProcess], tmp_path: Path
) -> None:
    nodes = node_catalog(fakes, tmp_path, ("kube-gone", "kube-a"))
    refresh_once(nodes)
    assert "not in the kubeconfig" in nodes.problems["kube-gone"]
    assert nodes.problem() is None  # kube-a is still there
    assert "kube-gone" not in nodes.path.read_text()
    nobody = node_catalog(fakes, tmp_path / "none", ("kube-gone",))
    refresh_once(nobody)
    assert (nobody.problem() or "").startswith("no Kubernetes context can be used (kube-gone: ")


def test_dryrun_check_and_show_gpus_know_kubernetes_through_the_daemon(
    fakes: dict[str, FakeProcess], stix: Stix
) -> None:
    stix.env["KUBECONFIG"] = ":".join(str(f.kubeconfig) for f in fakes.values())
    config = {"kubernetes": {"allowed_contexts": ["kube-b", "kube-a"]}}
    (stix.home / "config.yaml").write_text(yaml.safe_dump(config))
    task_file = stix.home / "task.yaml"
    task_file.write_text("resources:\n  infra: k8s\n  accelerators: H100:1\nrun: nvidia-smi\n")
    shown = stix.run("launch", "--dryrun", "--all-clouds", str(task_file), check=True).stdout
    [row] = [line.split() for line in shown.splitlines() if line.startswith(" Kubernetes")]
    assert row[1:] == ["4CPU--16GB--H100:1", "4", "16", "H100:1", "kube-b", "0.00", "\u2714"]
    # without --all-clouds a task naming k8s is planned on its contexts too, as it launches
    named = stix.run("launch", "--dryrun", str(task_file), check=True).stdout
    assert [line.split() for line in named.splitlines() if line.startswith(" Kubernetes")] == [row]
    unknown = stix.run("launch", "-c", "x", "-y", "--infra", "k8s/nope", "echo hi")
    assert unknown.returncode != 0
    [said] = [line for line in unknown.stderr.splitlines() if "no usable context nope" in line]
    assert "kube-a, kube-b" in said
    checked = stix.run("check", "k8s", check=True).stdout
    assert "  kube-b: reachable, namespace default, 5 node(s), GPUs A100 x2, H100 x4" in checked
    assert re.search(
        r"\n  kube-a: reachable, namespace default, \d node\(s\), GPUs A100 x2\n", checked
    )
    gpus = stix.json("show-gpus", "--infra", "k8s/kube-b")
    assert {(r["node"], r["accelerator"], r["total"], r["free"]) for r in gpus} == {
        ("gpu-1", "A100", 2, 2),
        ("h100-1", "H100", 4, 4),
    }


def test_a_launch_the_first_context_cannot_schedule_fails_over_to_the_next_in_order(
    fakes: dict[str, FakeProcess], stix: Stix
) -> None:
    """kube-a has the A100 node but its GPUs are taken: the planner picks it by capacity, the
    scheduler cannot place the pod, and the launch goes on to kube-b within seconds."""
    stix.env["KUBECONFIG"] = ":".join(str(f.kubeconfig) for f in fakes.values())
    config = {"kubernetes": {"allowed_contexts": ["kube-a", "kube-b"]}}
    (stix.home / "config.yaml").write_text(yaml.safe_dump(config))
    holder = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "takes-the-a100s"},
        "spec": {
            "containers": [
                {"name": "c", "image": "x", "resources": {"limits": {"nvidia.com/gpu": "2"}}}
            ]
        },
    }
    kube_a = fakes["kube-a"]
    kube_a.kubectl("apply", "-f", "-", input=yaml.safe_dump(holder))
    try:
        started = time.monotonic()
        launched = stix.run(
            "launch", "-c", "fo", "-y", "--infra", "k8s", "--gpus", "A100:2", "echo on $HOSTNAME"
        )
        took = time.monotonic() - started
        assert launched.returncode == 0, launched.stderr
        assert "Insufficient nvidia.com/gpu" in launched.stderr  # the scheduler's own words
        assert "trying 1x kubernetes/kube-b 8CPU--32GB--A100:2 next" in launched.stderr
        assert stix.clusters()["fo"]["resources"] == "1x kubernetes/kube-b 8CPU--32GB--A100:2"
        assert took < 30
        assert kube_a.kubectl_json("get", "pods", "-l", "stix-cluster=fo")["items"] == []
    finally:
        stix.run("down", "-y", "fo")
        kube_a.kubectl("delete", "pod", "takes-the-a100s", "--grace-period=0")


def test_an_instance_type_names_a_pod_size_as_skypilot_writes_it(
    fakes: dict[str, FakeProcess], tmp_path: Path
) -> None:
    catalog = refreshed(fakes, tmp_path, ("kube-a", "kube-b"))
    typed = spec(catalog, "resources: {infra: k8s, instance_type: 6CPU--24GB--a100:2}\nrun: x")
    placement = typed["placement"]
    assert isinstance(placement, dict) and placement["instance_type"] == "6CPU--24GB--A100:2"
    assert placement["request"] == {
        "cpus": 6.0,
        "memory_gb": 24.0,
        "accelerator": "A100",
        "accelerator_count": 2,
    }
    cpu = spec(catalog, "resources: {infra: kubernetes/kube-b, instance_type: 0.5CPU--1GB}\nrun: x")
    assert cpu["resources"] == "1x kubernetes/kube-b 0.5CPU--1GB"
    with pytest.raises(InvalidTask, match=r"instance type m5\.large is no kubernetes size"):
        spec(catalog, "resources: {infra: k8s, instance_type: m5.large}\nrun: x")
    with pytest.raises(InvalidTask, match="vCPUs"):  # no node has 512 CPUs
        spec(catalog, "resources: {infra: k8s, instance_type: 512CPU--64GB}\nrun: x")
