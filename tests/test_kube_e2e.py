"""`launch --infra k8s` end to end: stixctl → stixd → two fake Kubernetes API servers (two
contexts of one kubeconfig) → pods whose agents stix started over exec.

What the cluster holds is checked with kubectl, from outside stix.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stixd.providers.kubernetes.owner import owner_of
from stixd.providers.kubernetes.podspec import LABEL_CLUSTER, LABEL_OWNER, pod_name
from stixd.providers.local.netns import unavailable_reason
from tests.conftest import Stix, reap, wait_until
from tests.kube_fake.process import FakeProcess
from tests.test_managed_jobs import managed

CONTEXTS = ("kube-a", "kube-b")


@pytest.fixture(scope="module")
def fakes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, FakeProcess]]:
    with contextlib.ExitStack() as stack:
        made = {
            c: stack.enter_context(FakeProcess(tmp_path_factory.mktemp(c), "--context", c))
            for c in CONTEXTS
        }
        yield made
    assert all(fake.pod_processes() == [] for fake in made.values())


@pytest.fixture
def k8s(stix: Stix, fakes: dict[str, FakeProcess]) -> Stix:
    stix.env["KUBECONFIG"] = ":".join(str(f.kubeconfig) for f in fakes.values())
    stix.env["STIX__KUBERNETES__ALLOWED_CONTEXTS"] = json.dumps(list(CONTEXTS))
    checked = stix.run("check", check=True, timeout=60)  # lists the contexts' nodes for the plan
    assert "kube-a: reachable" in checked.stdout, checked.stdout
    return stix


def pod(stix: Stix, cluster: str, rank: int) -> str:
    """The name the daemon of ``stix``'s home gives the pod of ``cluster``'s ``rank``."""
    return pod_name(cluster, rank, owner_of(stix.home))


def objects(fake: FakeProcess, cluster: str) -> list[dict[str, Any]]:
    """The cluster's pods and services, those only marked for deletion too (a pod in its
    grace period still runs, holds its node's room and its GPUs)."""
    found = fake.kubectl_json("get", "pods,services", "-l", f"{LABEL_CLUSTER}={cluster}")
    return list(found["items"])


def test_a_two_pod_cluster_runs_its_job_takes_a_shell_and_goes_down_leaving_nothing(
    k8s: Stix, fakes: dict[str, FakeProcess]
) -> None:
    launched = k8s.run(
        "launch", "-y", "-c", "kc", "--infra", "k8s", "--num-nodes", "2", "--cpus", "1",
        "echo rank-$SKYPILOT_NODE_RANK of $SKYPILOT_NUM_NODES",
        timeout=120,
    )  # fmt: skip
    assert launched.returncode == 0, launched.stderr
    assert "rank-0 of 2" in launched.stdout and "rank-1 of 2" in launched.stdout
    pods = [o for o in objects(fakes["kube-a"], "kc") if o["kind"] == "Pod"]
    assert sorted(p["metadata"]["name"] for p in pods) == [pod(k8s, "kc", 0), pod(k8s, "kc", 1)]
    assert all(p["spec"]["containers"][0]["resources"]["requests"]["cpu"] == "1" for p in pods)
    shell = k8s.run("ssh", "kc", "--node", "1", "echo", "in-$STIX_POD_NAME", timeout=60)
    assert (shell.returncode, shell.stdout.strip()) == (0, f"in-{pod(k8s, 'kc', 1)}"), shell.stderr
    stopped = k8s.run("stop", "-y", "kc")
    assert stopped.returncode != 0 and "down" in stopped.stderr
    assert len(stopped.stderr.strip().splitlines()) == 1, stopped.stderr
    k8s.run("down", "-y", "kc", check=True, timeout=60)
    assert objects(fakes["kube-a"], "kc") == []
    assert "kc" not in k8s.clusters()


def hog(node: str, cpus: int) -> dict[str, Any]:
    """Another team's pod holding ``cpus`` of ``node``."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"hog-{node}"},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node},
            "containers": [
                {
                    "name": "hog",
                    "image": "x",
                    "command": ["sleep", "600"],
                    "resources": {"requests": {"cpu": str(cpus)}},
                }
            ],
        },
    }


def test_an_unschedulable_pod_fails_over_to_the_next_context_within_seconds_saying_why(
    k8s: Stix, fakes: dict[str, FakeProcess]
) -> None:
    """kube-a's nodes are big enough for the plan, but another team's pods hold them: the
    scheduler says no, and the launch goes to kube-b at once."""
    fake_a = fakes["kube-a"]
    try:
        for node, cpus in (("cpu-1", 4), ("cpu-2", 4), ("cpu-3", 4), ("gpu-1", 8)):
            fake_a.kubectl("apply", "-f", "-", input=json.dumps(hog(node, cpus)))
        started = time.monotonic()
        launched = k8s.run("launch", "-y", "-c", "fo", "--infra", "k8s", "--cpus", "2",
                           "echo placed", timeout=120)  # fmt: skip
        took = time.monotonic() - started
        assert launched.returncode == 0, launched.stderr
        said = launched.stdout + launched.stderr
        assert "kube-a" in said and "Insufficient cpu" in said, said
        assert "placed" in launched.stdout
        wait_until(lambda: objects(fake_a, "fo") == [], timeout=15)  # deleted when it failed
        assert [o["metadata"]["name"] for o in objects(fakes["kube-b"], "fo")] == [
            pod(k8s, "fo", 0)
        ]
        assert took < 20, took  # the whole launch, the second context's agent included
    finally:
        fake_a.kubectl("delete", "pods", "--all", "--wait=false")
        k8s.run("down", "-y", "fo", timeout=60)


def test_a_pod_no_node_of_a_context_can_take_as_configured_fails_over_naming_the_fix(
    k8s: Stix, fakes: dict[str, FakeProcess]
) -> None:
    """Only kube-b has a node the pod_config's selector picks: kube-a's scheduler says no
    node matches, which is the pod's configuration there (not a shortage), and the next context
    may have the nodes (SkyPilot fails over on it too)."""
    k8s.env["STIX__KUBERNETES__POD_CONFIG"] = json.dumps(
        {"spec": {"nodeSelector": {"disk": "nvme"}}}
    )
    k8s.run("daemon", "stop", timeout=30)  # started by `check` without the setting
    fakes["kube-b"].admin("nodes", name="nvme-1", labels={"disk": "nvme"})
    try:
        launched = k8s.run("launch", "-y", "-c", "sel", "--infra", "k8s", "--cpus", "2",
                           "echo placed", timeout=120)  # fmt: skip
        assert launched.returncode == 0, launched.stderr
        said = launched.stdout + launched.stderr
        assert "cannot be placed in Kubernetes context kube-a" in said, said
        assert "spec.nodeSelector" in said and "placed" in launched.stdout, said
        [made] = objects(fakes["kube-b"], "sel")
        assert made["spec"]["nodeName"] == "nvme-1"
        wait_until(lambda: objects(fakes["kube-a"], "sel") == [], timeout=15)
    finally:
        k8s.run("down", "-y", "sel", timeout=60)


def test_with_an_autoscaler_the_launch_shows_the_pods_events_then_fails_over_at_the_timeout(
    k8s: Stix, fakes: dict[str, FakeProcess]
) -> None:
    k8s.env["STIX__KUBERNETES__AUTOSCALER"] = "generic"
    k8s.env["STIX__KUBERNETES__PROVISION_TIMEOUT"] = "2"
    k8s.run("daemon", "stop", timeout=30)  # started by `check` without the settings
    fake_a = fakes["kube-a"]
    try:
        for node, cpus in (("cpu-1", 4), ("cpu-2", 4), ("cpu-3", 4), ("gpu-1", 8)):
            fake_a.kubectl("apply", "-f", "-", input=json.dumps(hog(node, cpus)))
        launched = k8s.run("launch", "-y", "-c", "grow", "--infra", "k8s", "--cpus", "2",
                           "echo placed", timeout=120)  # fmt: skip
        assert launched.returncode == 0, launched.stderr
        said = launched.stdout + launched.stderr
        assert f"pod {pod(k8s, 'grow', 0)}: FailedScheduling: 0/4 nodes are" in said, said
        assert "no node came within 2 s" in said, said
        assert [o["metadata"]["name"] for o in objects(fakes["kube-b"], "grow")] == [
            pod(k8s, "grow", 0)
        ]
        wait_until(lambda: objects(fake_a, "grow") == [], timeout=15)
    finally:
        fake_a.kubectl("delete", "pods", "--all", "--wait=false")
        k8s.run("down", "-y", "grow", timeout=60)


def test_a_pod_runs_the_tasks_image_and_autostop_takes_the_cluster_down(
    k8s: Stix, fakes: dict[str, FakeProcess]
) -> None:
    k8s.run("launch", "-y", "-c", "idle", "--infra", "k8s/kube-b", "--image-id",
            "docker:team/trainer:3", "echo hi", check=True, timeout=120)  # fmt: skip
    [made] = [o for o in objects(fakes["kube-b"], "idle") if o["kind"] == "Pod"]
    assert made["spec"]["containers"][0]["image"] == "team/trainer:3"  # image_id: docker:...
    said = k8s.run("autostop", "-y", "-i", "0", "idle", check=True)
    assert "torn down" in said.stdout + said.stderr, said
    wait_until(lambda: "idle" not in k8s.clusters(), timeout=60)
    assert objects(fakes["kube-b"], "idle") == []


def test_a_pod_deleted_mid_job_ends_the_job_as_a_lost_node(
    k8s: Stix, fakes: dict[str, FakeProcess]
) -> None:
    """At once: within two health-check periods of the delete (1 s each here), plus a second
    for the `stixctl queue` calls that look."""
    period = 1.0
    k8s.env["STIX__DAEMON__HEALTH_CHECK_SECONDS"] = str(period)
    k8s.run("daemon", "stop", timeout=30)  # started by `check` without the setting
    k8s.run("launch", "-y", "-d", "-c", "lost", "--infra", "k8s/kube-b", "--num-nodes", "2",
            "sleep 600", check=True, timeout=120)  # fmt: skip
    wait_until(lambda: k8s.job_status("lost", 1) == "RUNNING", timeout=60)
    fakes["kube-b"].kubectl("delete", "pod", pod(k8s, "lost", 1), "--wait=false")
    deleted = time.monotonic()
    wait_until(lambda: k8s.job_status("lost", 1) not in ("RUNNING", "PENDING"), timeout=60)
    took = time.monotonic() - deleted
    assert k8s.job_status("lost", 1) == "FAILED_DRIVER"
    assert took < 2 * period + 1.0, took
    events = k8s.run("events", "lost").stdout
    assert re.search(rf"node 1 pod {pod(k8s, 'lost', 1)} (was|is being) deleted", events), events
    k8s.run("down", "-y", "lost", check=True, timeout=60)
    assert objects(fakes["kube-b"], "lost") == []


def test_a_daemon_killed_mid_launch_leaves_no_duplicate_and_no_orphan_pod(
    k8s: Stix, fakes: dict[str, FakeProcess]
) -> None:
    fake = fakes["kube-b"]
    launch = k8s.popen("launch", "-y", "-c", "crash", "--infra", "k8s/kube-b", "--num-nodes",
                       "2", "echo after-crash")  # fmt: skip
    try:
        wait_until(lambda: objects(fake, "crash"), timeout=60, interval=0.01)
        k8s.kill_daemon()
    finally:
        reap(launch)
        launch.communicate(timeout=30)
    k8s.run("status", check=True)  # a new daemon takes the launch up again
    wait_until(lambda: k8s.clusters().get("crash", {}).get("status") == "UP", timeout=90)
    pods = [o for o in objects(fake, "crash") if o["kind"] == "Pod"]
    assert sorted(p["metadata"]["name"] for p in pods) == [
        pod(k8s, "crash", 0),
        pod(k8s, "crash", 1),
    ]
    k8s.run("down", "-y", "crash", check=True, timeout=60)
    assert objects(fake, "crash") == []


def test_a_managed_job_whose_pod_is_deleted_recovers_on_a_new_pod(
    k8s: Stix, fakes: dict[str, FakeProcess], tmp_path: Path
) -> None:
    """`kubectl delete pod` under a managed job: the health check (1 s here) sees the pod
    gone, the run ends FAILED_DRIVER at once, and the job comes back RUNNING on a new pod."""
    k8s.env["STIX__DAEMON__HEALTH_CHECK_SECONDS"] = "1"
    k8s.run("daemon", "stop", timeout=30)  # started by `check` without the setting
    marks = tmp_path / "runs"  # pods of the fake share this machine's files
    marks.mkdir()
    task = tmp_path / "task.yaml"
    task.write_text(
        "name: mj\n"
        "run: |\n"
        f"  echo run > {marks}/$(date +%s%N)\n"
        f"  [ $(ls {marks} | wc -l) -ge 2 ] || sleep 600\n"
    )
    k8s.run("jobs", "launch", "-d", "-y", "--infra", "k8s/kube-b", str(task), check=True,
            timeout=120)  # fmt: skip
    wait_until(lambda: managed(k8s, 1)["status"] == "RUNNING" and any(marks.iterdir()), 120)
    [head] = [o for o in objects(fakes["kube-b"], "mj-1") if o["kind"] == "Pod"]
    fakes["kube-b"].kubectl("delete", "pod", head["metadata"]["name"], "--wait=false")
    job = wait_until(lambda: (j := managed(k8s, 1))["recoveries"] == 1 and j, timeout=60)
    [reason] = job["recovery_reasons"]
    assert f"pod {pod(k8s, 'mj-1', 0)}" in reason and "kube-b" in reason, reason
    done = wait_until(lambda: (j := managed(k8s, 1))["status"] == "SUCCEEDED" and j, 120)
    assert done["recoveries"] == 1 and len(list(marks.iterdir())) == 2
    wait_until(lambda: objects(fakes["kube-b"], "mj-1") == [], timeout=60)


def test_logs_of_a_job_on_a_pod_stream_as_it_prints_and_exit_by_how_it_ended(
    k8s: Stix, tmp_path: Path
) -> None:
    go = tmp_path / "go"  # the pods of the fake share this machine's files
    k8s.run("launch", "-y", "-d", "-c", "lg", "--infra", "k8s/kube-b",
            f"echo first; while [ ! -e {go} ]; do sleep 0.1; done; echo second; exit 3",
            check=True, timeout=120)  # fmt: skip
    follow = k8s.popen("logs", "lg", "1")
    try:
        assert follow.stdout is not None
        first = follow.stdout.readline()  # printed while the job still waits: streamed
        assert "first" in first, first
        assert k8s.job_status("lg", 1) == "RUNNING"
        go.touch()
        rest, err = follow.communicate(timeout=60)
    finally:
        reap(follow)
    assert "second" in rest, rest
    assert follow.returncode not in (0, None) and "FAILED" in err, (follow.returncode, err)
    k8s.run("down", "-y", "lg", check=True, timeout=60)


def _in_pod(k8s: Stix, cluster: str, command: str) -> str:
    ran = k8s.run("exec", cluster, command, check=True, timeout=60)
    return ran.stdout


def test_workdir_and_file_mounts_arrive_in_the_pod_and_a_relaunch_sends_only_what_changed(
    k8s: Stix, tmp_path: Path
) -> None:
    workdir, mounted = tmp_path / "wd", tmp_path / "data"
    workdir.mkdir()
    mounted.mkdir()
    (workdir / "a.txt").write_text("a-1\n")
    (workdir / "b.txt").write_text("b-1\n")
    (mounted / "m1.txt").write_text("m1-1\n")
    (mounted / "m2.txt").write_text("m2-1\n")
    task = tmp_path / "task.yaml"
    task.write_text(
        f"workdir: {workdir}\n"
        f"file_mounts:\n  ~/data: {mounted}\n"
        "run: cat a.txt b.txt ~/data/m1.txt ~/data/m2.txt\n"
    )
    first = k8s.run("launch", "-y", "-c", "files", "--infra", "k8s/kube-b", str(task),
                    timeout=120)  # fmt: skip
    assert first.returncode == 0, first.stderr
    assert all(t in first.stdout for t in ("a-1", "b-1", "m1-1", "m2-1")), first.stdout
    look = "stat -c '%n|%z' a.txt b.txt ~/data/m1.txt ~/data/m2.txt"  # ctime: when written
    before = dict(line.split("|") for line in _in_pod(k8s, "files", look).splitlines())
    (workdir / "a.txt").write_text("a-2, longer\n")
    (mounted / "m1.txt").write_text("m1-2, longer\n")
    again = k8s.run("launch", "-y", "-c", "files", "--infra", "k8s/kube-b", str(task),
                    timeout=120)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "a-2, longer" in again.stdout and "m1-2, longer" in again.stdout, again.stdout
    after = dict(line.split("|") for line in _in_pod(k8s, "files", look).splitlines())
    changed = {name for name in before if before[name] != after[name]}  # a file sent is written
    assert {Path(n).name for n in changed} == {"a.txt", "m1.txt"}, (before, after)
    k8s.run("down", "-y", "files", check=True, timeout=60)


@pytest.mark.skipif(unavailable_reason() is not None, reason=f"{unavailable_reason()}")
def test_every_rank_of_a_two_pod_cluster_sees_every_pods_ip_head_first(
    stix: Stix, tmp_path: Path
) -> None:
    """Pods with addresses of their own (network namespaces): SKYPILOT_NODE_IPS is every
    node's IP, one a line, head first, on every rank, as SkyPilot sets it."""
    with FakeProcess(tmp_path, "--context", "kube-net", "--pod-network", "namespace") as fake:
        stix.env["KUBECONFIG"] = str(fake.kubeconfig)
        ips_line = '"$(echo "$SKYPILOT_NODE_IPS" | paste -sd,)"'
        shown = f'printf "rank-%s ips=%s;\\n" "$SKYPILOT_NODE_RANK" {ips_line}'
        launched = stix.run("launch", "-y", "-c", "ips", "--infra", "k8s", "--num-nodes", "2",
                            shown, timeout=120)  # fmt: skip
        assert launched.returncode == 0, launched.stderr
        ips = [fake.kubectl_json("get", "pod", pod(stix, "ips", r))["status"]["podIP"]
               for r in (0, 1)]  # fmt: skip
        assert len(set(ips)) == 2, ips
        for rank in (0, 1):
            assert f"rank-{rank} ips={','.join(ips)};" in launched.stdout, launched.stdout
        stix.run("down", "-y", "ips", check=True, timeout=60)


def test_leaks_finds_a_service_of_this_home_that_no_cluster_owns(
    k8s: Stix, fakes: dict[str, FakeProcess]
) -> None:
    fake = fakes["kube-a"]
    owner = owner_of(k8s.home)
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "ghost-svc", "labels": {LABEL_CLUSTER: "ghost", LABEL_OWNER: owner}},
        "spec": {"type": "NodePort", "selector": {LABEL_CLUSTER: "ghost"},
                 "ports": [{"port": 8080, "targetPort": 8080, "protocol": "TCP"}]},
    }  # fmt: skip
    fake.kubectl("apply", "-f", "-", input=json.dumps(service))
    try:
        young = k8s.json("leaks")
        assert not [x for x in young["leaks"] if x["id"] == "default/ghost-svc"], young
        fake.admin("age", resource="services", name="ghost-svc", seconds=3600)
        found = k8s.json("leaks")
        [leak] = [x for x in found["leaks"] if x["id"] == "default/ghost-svc"]
        assert (leak["kind"], leak["region"], leak["cluster"]) == ("service", "kube-a", "ghost")
    finally:
        fake.kubectl("delete", "service", "ghost-svc", "--wait=false")
