"""Every SkyPilot YAML of the compat corpus plans on every cloud with a catalog, or says why not.

The YAML -> `TaskRequest` adapter here is a small test-local stand-in for the task model's own
(``proto``), which will replace it: it reads ``resources`` (``infra``/``cloud``/``region``/
``zone``, ``cpus``, ``memory``, ``accelerators`` in every form, ``instance_type``,
``use_spot``, ``disk_*``, ``network_tier``, ``image_id``, ``ports``, ``any_of``/``ordered``),
``num_nodes`` and, for multi-document files, the pipeline's tasks.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from stixd.planner.offers import OfferIndex
from stixd.planner.optimizer import plan, plan_pipeline
from stixd.planner.plan_table import plan_json, render_pipeline, render_plan
from stixd.planner.request import (
    ResourceRequest,
    TaskRequest,
    parse_accelerators,
    parse_amount,
)
from tests.optimizer_support import index
from tests.test_catalog import REPO

__all__ = ["index"]

CORPUS = Path(os.environ.get("STIX_COMPAT_DIR") or REPO.parent / "shared" / "compat") / (
    "skypilot-yamls"
)
FILES = sorted(CORPUS.glob("*.y*ml")) if CORPUS.is_dir() else []
CLOUDS = ("aws", "azure", "gcp", "nebius", "hyperbolic", "mithril")

# file -> the reason it cannot be planned on the shared catalogs (all of them correct: the
# reduced catalogs have no TPUs, no K80, no us-east-2, and no Kubernetes is enabled here).
NO_FIT = {
    "examples__amd__amd_smoke_test.yaml": "kubernetes is not enabled (enabled: "
    "aws, azure, gcp, nebius, hyperbolic, mithril)",
    "examples__batch__simple__pool.yaml": "no offer has 1 vCPUs (nearest: 2)",
    "examples__elastic_training__job.yaml": "task 'controller': kubernetes is not enabled "
    "(enabled: aws, azure, gcp, nebius, hyperbolic, mithril); task 'workers': kubernetes is "
    "not enabled (enabled: aws, azure, gcp, nebius, hyperbolic, mithril)",
    "examples__job_queue__job_multinode.yaml": "accelerator K80:0.5 is not offered on "
    "aws, azure, gcp, nebius, mithril",
    "examples__tpu__tpuvm_mnist.yaml": "accelerator tpu-v2-8:1 is not offered on "
    "aws, azure, gcp, nebius, hyperbolic, mithril",
    "examples__tpu__tpuvm_multinode.yml": "accelerator tpu-v2-8:1 is not offered on "
    "aws, azure, gcp, nebius, mithril",
    "tests__test_yamls__test_custom_image.yaml": "region us-east-2 is not in the aws catalog "
    "(regions: ap-northeast-1, eu-west-1, us-east-1, us-west-2)",
    "tests__test_yamls__test_k8s_pod_config_image_pull_secrets.yaml": "kubernetes is not "
    "enabled (enabled: aws, azure, gcp, nebius, hyperbolic, mithril)",
}


def _infra(text: str) -> tuple[str | None, str | None, str | None]:
    parts = [None if p in ("", "*") else p for p in text.split("/")]
    cloud = parts[0].lower() if parts[0] else None
    cloud = "kubernetes" if cloud == "k8s" else cloud
    return cloud, parts[1] if len(parts) > 1 else None, parts[2] if len(parts) > 2 else None


def _ports(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    return (str(value),) if isinstance(value, int | str) else tuple(str(p) for p in value)


def resource_request(cfg: Mapping[str, Any]) -> ResourceRequest:
    cloud, region, zone = cfg.get("cloud"), cfg.get("region"), cfg.get("zone")
    if cfg.get("infra"):
        cloud, region, zone = _infra(str(cfg["infra"]))
    accelerators, ordered = parse_accelerators(cfg.get("accelerators", cfg.get("gpus")))
    image = cfg.get("image_id")
    return ResourceRequest(
        cloud=str(cloud).lower() if cloud else None,
        region=region,
        zone=zone,
        instance_type=cfg.get("instance_type"),
        cpus=parse_amount(cfg["cpus"], "cpus") if cfg.get("cpus") is not None else None,
        memory_gib=parse_amount(cfg["memory"], "memory") if cfg.get("memory") is not None else None,
        accelerators=accelerators,
        accelerators_ordered=ordered,
        use_spot=cfg.get("use_spot"),
        disk_size_gb=float(cfg["disk_size"]) if cfg.get("disk_size") else None,
        disk_tier=cfg.get("disk_tier"),
        network_tier=cfg.get("network_tier"),
        image_id=dict(image) if isinstance(image, dict) else image,
        ports=_ports(cfg.get("ports")),
        labels=dict(cfg.get("labels") or {}),
    )


def task_request(doc: Mapping[str, Any]) -> TaskRequest:
    resources = dict(doc.get("resources") or {})
    any_of, ordered = resources.pop("any_of", None), resources.pop("ordered", None)
    if any_of or ordered:
        alternatives = tuple(resource_request({**resources, **e}) for e in any_of or ordered)
        mode = "any_of" if any_of else "ordered"
    else:
        alternatives, mode = (resource_request(resources),), "single"
    return TaskRequest(
        name=doc.get("name"),
        num_nodes=int(doc.get("num_nodes") or 1),
        alternatives=alternatives,
        mode=mode,
    )


def task_requests(path: Path) -> list[TaskRequest]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    if len(docs) > 1 and set(docs[0]) <= {"name"}:  # a pipeline: the first doc names it
        docs = docs[1:]
    return [task_request(d) for d in docs]


@pytest.mark.skipif(not FILES, reason=f"no compat corpus at {CORPUS}")
@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_every_corpus_file_plans_or_says_why(index: OfferIndex, path: Path) -> None:
    tasks = task_requests(path)
    if len(tasks) == 1:
        p = plan(tasks[0], index, enabled_clouds=CLOUDS)
        text, reason, out = render_plan(p), p.no_fit_reason, plan_json(p)
    else:
        pp = plan_pipeline(tasks, index, enabled_clouds=CLOUDS)
        text, reason, out = render_pipeline(pp), pp.no_fit_reason, plan_json(pp)
        assert pp.chosen is None or len(pp.chosen) == len(tasks)
    assert out.startswith(b'{"chosen":')
    assert reason == NO_FIT.get(path.name)
    assert ("\u2714" in text) is (reason is None)


def test_the_corpus_is_all_here() -> None:
    if not FILES:
        pytest.skip(f"no compat corpus at {CORPUS}")
    assert len(FILES) == 71
    assert set(NO_FIT) <= {p.name for p in FILES}
