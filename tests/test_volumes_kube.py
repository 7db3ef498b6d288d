"""`stixctl volumes` on Kubernetes: claims made, adopted and mounted by the pods of a cluster,
checked with kubectl against the fake API server (tests/kube_fake), from outside stix; and a
bucket mounted in a pod (the fake's pods are processes on this machine, so rclone mounts
for real on /dev/fuse, the S3 emulator on its loopback), whose write-back cache `down` flushes
before the pod is deleted.

The fake runs a pod as its ``securityContext`` says (``runAsUser``, ``runAsGroup``,
``fsGroup``) and bind-mounts a claim's folder at its mount path in the pod's own mount
namespace, given to ``fsGroup`` first as a kubelet does: a job of a non-root user
(``pod_config``) writes a claim, and the next job reads it.

Also ephemeral claims made for a cluster and deleted at its down."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stixd.providers.kubernetes.owner import owner_of
from stixd.providers.kubernetes.podspec import FS_GROUP, FUSE_VOLUME, LABEL_CLUSTER
from stixd.providers.shared.fuse_mounts import fuse_mounts_under
from stixproto.volumes import ephemeral_name
from tests.conftest import Stix, wait_until
from tests.kube_fake.process import FakeProcess
from tests.stores_bed import Emulator, moto_s3
from tests.test_storage import s3
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


__all__ = ["moto_s3"]  # the module's S3 emulator


@pytest.fixture(scope="module")
def k8s(_module_stix: Stix, kube: FakeProcess, moto_s3: Emulator) -> Iterator[Stix]:  # noqa: F811
    _module_stix.env["KUBECONFIG"] = str(kube.kubeconfig)
    _module_stix.env.update({k: v for k, v in moto_s3.env.items() if k != "HOME"})
    _module_stix.run("check", check=True, timeout=60)
    try:
        yield _module_stix
    finally:  # a failed test's bucket mounts, before the fake removes its pods' folders
        with contextlib.suppress(subprocess.TimeoutExpired):
            _module_stix.run("down", "-a", "-y", timeout=60)
        for point in fuse_mounts_under(kube.workdir):
            subprocess.run(["fusermount3", "-uz", point], capture_output=True, check=False)


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
    group = pod["spec"]["securityContext"]
    assert (group["fsGroup"], group["fsGroupChangePolicy"]) == (FS_GROUP, "OnRootMismatch")
    assert FUSE_VOLUME not in sources  # no bucket mounted: no FUSE device either
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


@pytest.mark.slow
def test_a_pod_mounting_a_bucket_gets_fuse_and_its_job_reads_and_writes_through_it(
    k8s: Stix, kube: FakeProcess, moto_s3: Emulator, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "in.txt").write_text("in-the-bucket\n")
    task = f"""
resources:
  infra: k8s
  cpus: 1
file_mounts:
  ~/c:
    name: stix-kube-cached
    source: {data}
    store: s3
    mode: MOUNT_CACHED
    config:
      mount_cached:
        vfs_write_back: 3s
run: |
  set -e
  echo read-$(cat ~/c/in.txt)
  echo from-a-pod > ~/c/out.txt
"""
    done = k8s.run("launch", "-y", "-d", "-c", "kb", write(k8s, "kb.yaml", task), timeout=180)
    assert done.returncode == 0, done.stderr
    pod = kube.kubectl_json("get", "pods", "-l", f"{LABEL_CLUSTER}=kb")["items"][0]
    container = pod["spec"]["containers"][0]
    assert container["securityContext"]["capabilities"]["add"] == ["SYS_ADMIN"]
    sources = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert sources[FUSE_VOLUME]["hostPath"] == {"path": "/dev/fuse", "type": "CharDevice"}
    assert {"name": FUSE_VOLUME, "mountPath": "/dev/fuse"} in container["volumeMounts"]
    assert len(fuse_mounts_under(kube.workdir)) == 1  # rclone's, in the pod's home

    wait_until(lambda: k8s.job_status("kb", 1) not in (None, "PENDING", "RUNNING"), timeout=90)
    assert k8s.job_status("kb", 1) == "SUCCEEDED"
    listing = s3(moto_s3).list_objects_v2(Bucket="stix-kube-cached").get("Contents") or []
    assert "out.txt" in {o["Key"] for o in listing}  # flushed before the job counted as done
    logs = k8s.run("logs", "kb", "1", "--no-follow", timeout=30).stdout
    assert "read-in-the-bucket" in logs
    # a file closed just before `down` is still in the write-back cache (3 s): the down asks
    # the pod's agent to flush and unmount before the pod is deleted (SIGTERM to rclone too)
    [point] = fuse_mounts_under(kube.workdir)
    Path(point, "late.txt").write_text("closed just before down\n")
    k8s.run("down", "kb", "-y", check=True, timeout=90)
    assert fuse_mounts_under(kube.workdir) == []
    listing = s3(moto_s3).list_objects_v2(Bucket="stix-kube-cached").get("Contents") or []
    assert "late.txt" in {o["Key"] for o in listing}
    k8s.run("storage", "delete", "stix-kube-cached", "-y", check=True, timeout=60)


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


SHARED = "name: shared\ntype: k8s-pvc\nsize: 1Gi\nconfig: {storage_class_name: standard}\n"
NON_ROOT = """
resources:
  infra: k8s
  cpus: 1
volumes:
  /stix-shared: shared
run: |
  set -e
  echo "user $(id -u) groups $(id -G)"
  echo from-1000 > /stix-shared/out.txt
"""


def test_a_non_root_job_writes_a_claim_given_to_fs_group_and_the_next_job_reads_it(
    k8s: Stix, kube: FakeProcess
) -> None:
    as_user = {"runAsUser": 1000, "runAsGroup": 3000}
    k8s.env["STIX__KUBERNETES__POD_CONFIG"] = json.dumps({"spec": {"securityContext": as_user}})
    k8s.run("daemon", "stop", timeout=30)  # started without the setting
    try:
        k8s.run("volumes", "apply", write(k8s, "shared.yaml", SHARED), "-y", check=True)
        launched = k8s.run("launch", "-y", "-c", "kn", write(k8s, "kn.yaml", NON_ROOT), timeout=120)
        assert launched.returncode == 0, launched.stderr
        assert f"user 1000 groups 3000 {FS_GROUP}" in launched.stdout, launched.stdout
        read = k8s.run("exec", "kn", "cat /stix-shared/out.txt; id -u", timeout=60)
        assert read.returncode == 0, read.stderr
        assert "from-1000\n1000" in read.stdout, read.stdout
        uid = claims(kube)[f"shared-{owner_of(k8s.home)}"]["metadata"]["uid"]
        written = kube.state / "claims" / uid / "out.txt"  # the claim's folder, on this machine
        assert written.read_text() == "from-1000\n"
        made = os.stat(written)
        assert (made.st_uid, made.st_gid) == (1000, FS_GROUP)  # the claim's setgid group
        assert not os.path.exists("/stix-shared/out.txt")  # mounted in the pod only
    finally:
        k8s.run("down", "-y", "kn", timeout=60)
        k8s.run("volumes", "delete", "shared", "-y", timeout=60)
        del k8s.env["STIX__KUBERNETES__POD_CONFIG"]
        k8s.run("daemon", "stop", timeout=30)
    assert not os.path.exists("/stix-shared")  # the fake's mount point, gone with the pod
