"""Every SkyPilot YAML of the compat corpus plans on every cloud with a catalog, or says why not.

The YAML -> `TaskRequest` adapter here is a small test-local stand-in for the task model's own
(``stixproto``), which will replace it: it reads ``resources`` (``infra``/``cloud``/``region``/
``zone``, ``cpus``, ``memory``, ``accelerators`` in every form, ``instance_type``,
``use_spot``, ``disk_*``, ``network_tier``, ``image_id``, ``ports``, ``any_of``/``ordered``),
``num_nodes`` and, for multi-document files, the pipeline's tasks.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from stixd.planner import from_task
from stixd.planner.offers import OfferIndex
from stixd.planner.optimizer import plan, plan_pipeline
from stixd.planner.plan_table import plan_json, render_pipeline, render_plan
from stixd.planner.request import TaskRequest
from stixproto.task import from_yaml
from tests.optimizer_support import INFRAS, index
from tests.shared_data import needs, require
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


def task_requests(path: Path) -> list[TaskRequest]:
    """The real path: the task model's loader, then the planner's adapter."""
    return from_task.task_requests(from_yaml(path.read_text(), str(path)))


@pytest.mark.parametrize(
    "path",
    [pytest.param(p, id=p.name) for p in FILES]
    or [pytest.param(None, marks=needs(CORPUS, "compat corpus"), id="corpus-missing")],
)
def test_every_corpus_file_plans_or_says_why(index: OfferIndex, path: Path) -> None:
    tasks = task_requests(path)
    if len(tasks) == 1:
        p = plan(tasks[0], index, enabled_clouds=CLOUDS)
        text, reason, out = render_plan(p, INFRAS), p.no_fit_reason, plan_json(p, INFRAS)
    else:
        pp = plan_pipeline(tasks, index, enabled_clouds=CLOUDS)
        text, reason, out = render_pipeline(pp, INFRAS), pp.no_fit_reason, plan_json(pp, INFRAS)
        assert pp.chosen is None or len(pp.chosen) == len(tasks)
    assert out.startswith(b'{"chosen":')
    assert reason == NO_FIT.get(path.name)
    assert ("\u2714" in text) is (reason is None)


def test_the_corpus_is_all_here() -> None:
    require(CORPUS, "compat corpus")
    assert len(FILES) == 71
    assert set(NO_FIT) <= {p.name for p in FILES}
