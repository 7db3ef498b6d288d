"""`stixctl volumes` on Kubernetes: claims made, adopted and mounted by the pods of a cluster,
and ephemeral ones made for a cluster and deleted at its down, checked with kubectl against the
fake API server (tests/kube_fake), from outside stix."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from stixd.providers.kubernetes.owner import owner_of
from stixd.providers.kubernetes.podspec import LABEL_CLUSTER
from stixproto.volumes import ephemeral_name
from tests.conftest import Stix
from tests.kube_fake.process import FakeProcess
from tests.test_volumes import stix as _module_stix  # noqa: F401 - one daemon for the module
from tests.test_volumes import volumes, write

ADOPTED = {
    "apiVersion": "v1",
    "kind": "PersistentVolumeClaim",
    "metadata": {"name": "weights", "labels": {"team": "theirs"}},
    "spec": {
        "accessModes": ["ReadOnlyMany"],
        "storageClassName": "standard",
        "resources": {"requests": {"storage": "5Gi"}},
    },
}
DATA = """
name: data
type: k8s-pvc
infra: k8s
size: 2Gi
labels:
  team: ml
config:
  storage_class_name: standard
  access_mode: ReadWriteMany
"""
TASK = """
resources:
  infra: k8s
  cpus: 1
volumes:
  /data: data
  /weights:
    name: weights
    sub_path: v1
  /scratch: scratch
run: echo mounted
"""


@pytest.fixture(scope="module")
def k8s(_module_stix: Stix, kube: FakeProcess) -> Iterator[Stix]:  # noqa: F811
    _module_stix.env["KUBECONFIG"] = str(kube.kubeconfig)
    _module_stix.run("check", check=True, timeout=60)
    yield _module_stix


def claims(kube: FakeProcess) -> dict[str, dict[str, Any]]:
    found = kube.kubectl_json("get", "persistentvolumeclaims")
    return {c["metadata"]["name"]: c for c in found["items"]}


def test_claims_are_made_adopted_mounted_by_the_pods_and_only_stixs_deleted(
    k8s: Stix, kube: FakeProcess
) -> None:
    kube.kubectl("create", "--validate=false", "-f", "-", input=json.dumps(ADOPTED))
    k8s.run("volumes", "apply", write(k8s, "data.yaml", DATA), "-y", check=True)
    adopt = "name: weights\ntype: k8s-pvc\nuse_existing: true\n"
    k8s.run("volumes", "apply", write(k8s, "weights.yaml", adopt), "-y", check=True)
    hostpath = "name: scratch\ntype: k8s-hostpath\nconfig:\n  host_path: /tmp/stix-scratch\n"
    k8s.run("volumes", "apply", write(k8s, "scratch.yaml", hostpath), "-y", check=True)
    made = f"data-{owner_of(k8s.home)}"
    claim = claims(kube)[made]
    assert claim["status"]["phase"] == "Bound"
    assert claim["spec"]["resources"]["requests"]["storage"] == "2Gi"
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert claim["metadata"]["labels"]["team"] == "ml"
    assert {v["name"]: v["status"] for v in volumes(k8s).values()} == {
        "data": "READY",
        "weights": "READY",
        "scratch": "READY",
    }

    launched = k8s.run("launch", "-y", "-c", "kv", write(k8s, "task.yaml", TASK), timeout=120)
    assert launched.returncode == 0, launched.stderr
    assert "mounted" in launched.stdout
    pod = kube.kubectl_json("get", "pods", "-l", f"{LABEL_CLUSTER}=kv")["items"][0]
    mounts = {
        m["mountPath"]: (m["name"], m.get("subPath"))
        for m in pod["spec"]["containers"][0]["volumeMounts"]
    }
    sources = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert sources[mounts["/data"][0]]["persistentVolumeClaim"] == {"claimName": made}
    assert sources[mounts["/weights"][0]]["persistentVolumeClaim"] == {"claimName": "weights"}
    assert mounts["/weights"][1] == "v1"
    assert sources[mounts["/scratch"][0]]["hostPath"]["path"] == "/tmp/stix-scratch"
    assert volumes(k8s)["data"]["used_by"] == ["kv"]
    moved = TASK.replace("/data: data", "/elsewhere: data")
    again = k8s.run("launch", "-y", "-c", "kv", write(k8s, "moved.yaml", moved), timeout=60)
    assert again.returncode != 0 and "made without a volume at /elsewhere" in again.stderr
    refused = k8s.run("volumes", "delete", "-a", "-y")
    assert refused.returncode == 2 and "in use by cluster(s) kv" in refused.stderr

    k8s.run("down", "-y", "kv", check=True, timeout=60)
    k8s.run("volumes", "delete", "data", "weights", "scratch", "-y", check=True)
    left = claims(kube)
    assert made not in left
    assert left["weights"]["metadata"]["labels"] == {"team": "theirs"}  # adopted: never deleted
    assert volumes(k8s) == {}


def test_a_claim_stix_did_not_make_is_not_taken_over(k8s: Stix, kube: FakeProcess) -> None:
    name = f"taken-{owner_of(k8s.home)}"
    theirs = {**ADOPTED, "metadata": {"name": name}}
    kube.kubectl("create", "--validate=false", "-f", "-", input=json.dumps(theirs))
    spec = "name: taken\ntype: k8s-pvc\nsize: 1\n"
    refused = k8s.run("volumes", "apply", write(k8s, "taken.yaml", spec), "-y")
    assert refused.returncode != 0
    assert "that stix did not make" in refused.stderr and "use_existing" in refused.stderr
    assert volumes(k8s)["taken"]["status"] == "NOT_READY"
    k8s.run("volumes", "delete", "taken", "-y", check=True)
    assert name in claims(kube)  # still theirs


EPHEMERAL = """
resources:
  infra: k8s
  cpus: 1
volumes:
  /scratch:
    size: 1Gi
    labels: {team: ml}
    config: {storage_class_name: standard}
run: echo mounted
"""


def test_an_ephemeral_claim_is_made_for_its_cluster_mounted_and_deleted_at_its_down(
    k8s: Stix, kube: FakeProcess
) -> None:
    two = EPHEMERAL.replace("cpus: 1", "cpus: 1\nnum_nodes: 2")
    refused = k8s.run("launch", "-y", "-c", "ke2", write(k8s, "two.yaml", two))
    assert refused.returncode == 2 and "ReadWriteOnce is not supported for multi-node" in (
        refused.stderr
    )
    name = ephemeral_name("ke", "/scratch")
    made = f"{name}-{owner_of(k8s.home)}"
    launched = k8s.run("launch", "-y", "-c", "ke", write(k8s, "eph.yaml", EPHEMERAL), timeout=120)
    assert launched.returncode == 0, launched.stderr
    claim = claims(kube)[made]
    assert claim["metadata"]["labels"]["team"] == "ml"
    assert claim["metadata"]["labels"][LABEL_CLUSTER] == "ke"
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    pod = kube.kubectl_json("get", "pods", "-l", f"{LABEL_CLUSTER}=ke")["items"][0]
    mount = next(
        m for m in pod["spec"]["containers"][0]["volumeMounts"] if m["mountPath"] == "/scratch"
    )
    source = next(v for v in pod["spec"]["volumes"] if v["name"] == mount["name"])
    assert source["persistentVolumeClaim"] == {"claimName": made}
    shown = volumes(k8s)[name]
    assert shown["is_ephemeral"] and shown["status"] == "IN_USE" and shown["used_by"] == ["ke"]
    k8s.run("down", "-y", "ke", check=True, timeout=60)
    assert made not in claims(kube)
    assert name not in volumes(k8s)
