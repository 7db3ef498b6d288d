"""The fake Kubernetes API server (tests/kube_fake/) proven by two clients stix did not write:
the machine's kubectl and kubernetes-asyncio. Pods really run: their processes are found by the
sandbox mark in their environment, and must be gone after a delete, an eviction or a stop."""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from stixd.providers.local.netns import NodeNetworks, unavailable_reason
from tests.conftest import wait_until
from tests.kube_fake.meta import field_matcher, label_matcher
from tests.kube_fake.nodes import failed_scheduling_message, node, why_not
from tests.kube_fake.process import FakeProcess
from tests.kube_fake.sandbox import POD_SUBNET, pids_marked
from tests.kube_fake.server import serve

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="needs kubectl")


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[FakeProcess]:
    with FakeProcess(tmp_path) as fake:
        yield fake


def pod_manifest(name: str, command: list[str] | None = None, **spec: Any) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "main", "image": "stix/python:test"}
    if command:
        container["command"] = command
    if "resources" in spec:
        container["resources"] = spec.pop("resources")
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "kube-fake-test", "pod": name}},
        "spec": {"containers": [container], **spec},
    }


def apply(kube: FakeProcess, manifest: dict[str, Any], verb: str = "apply") -> None:
    path = kube.workdir / f"{manifest['metadata']['name']}.yaml"
    path.write_text(yaml.safe_dump(manifest))
    kube.kubectl(verb, "-f", str(path))


def phase(kube: FakeProcess, name: str) -> str:
    return str(kube.kubectl_json("get", "pod", name)["status"].get("phase"))


def events_of(kube: FakeProcess, name: str) -> list[dict[str, Any]]:
    found = kube.kubectl_json("get", "events", "--field-selector", f"involvedObject.name={name}")
    return list(found["items"])


SLEEPER = ["sleep", "1000"]


# --- kubectl ----------------------------------------------------------------------------------


def test_kubectl_reads_nodes_with_gpu_labels_and_allocatable(kube: FakeProcess) -> None:
    nodes = {n["metadata"]["name"]: n for n in kube.kubectl_json("get", "nodes")["items"]}
    assert sorted(nodes) == ["cpu-1", "cpu-2", "cpu-3", "gpu-1"]
    gpu = nodes["gpu-1"]
    assert gpu["metadata"]["labels"]["skypilot.co/accelerator"] == "a100"
    assert gpu["status"]["allocatable"]["nvidia.com/gpu"] == "2"
    assert "nvidia.com/gpu" not in nodes["cpu-1"]["status"]["allocatable"]
    assert kube.kubectl("get", "nodes", "gpu-1").stdout.startswith("NAME")


def test_kubectl_pod_runs_for_real_execs_with_stdin_and_exit_code_and_is_deleted(
    kube: FakeProcess,
) -> None:
    apply(kube, pod_manifest("web", SLEEPER))
    again = kube.workdir / "web.yaml"
    dup = kube.kubectl("create", "-f", str(again), check=False)
    assert dup.returncode == 1 and "AlreadyExists" in dup.stderr
    wait_until(lambda: phase(kube, "web") == "Running", timeout=10)

    ran = kube.kubectl(
        "exec",
        "-i",
        "web",
        "--",
        "sh",
        "-c",
        "cat; exit 3",
        input="line one\nline two\n",
        check=False,
    )
    assert ran.returncode == 3, ran.stderr
    assert ran.stdout == "line one\nline two\n"
    assert "command terminated with exit code 3" in ran.stderr
    split = kube.kubectl("exec", "web", "--", "sh", "-c", "echo out; echo err >&2")
    assert (split.stdout, split.stderr) == ("out\n", "err\n")

    # the pod's processes are real, in its sandbox, and some escaped into the background
    home = kube.kubectl("exec", "web", "--", "sh", "-c", "setsid sleep 1000 & pwd").stdout.strip()
    assert Path(home).is_dir() and Path(home).is_relative_to(kube.state)
    assert len(wait_until(lambda: len(kube.pod_processes()) >= 2 and kube.pod_processes())) >= 2

    kube.kubectl("delete", "pod", "web", "--grace-period=1")
    assert kube.kubectl_json("get", "pods")["items"] == []
    assert kube.pod_processes() == [] and not Path(home).exists()
    reasons = {e["reason"] for e in events_of(kube, "web")}
    assert {"Scheduled", "Pulled", "Started", "Killing"} <= reasons
    assert "web" in kube.kubectl("get", "events").stdout


def test_kubectl_cp_copies_a_tree_into_the_pod_and_back(kube: FakeProcess) -> None:
    apply(kube, pod_manifest("files", SLEEPER))
    wait_until(lambda: phase(kube, "files") == "Running", timeout=10)
    tree = kube.workdir / "tree"
    (tree / "sub").mkdir(parents=True)
    for i in range(20):
        (tree / "sub" / f"f{i}").write_text(str(i) * 100)
    kube.kubectl("cp", str(tree), "files:upload")  # tar over exec, stdin closed by v5
    listed = kube.kubectl("exec", "files", "--", "sh", "-c", "ls upload/sub | wc -l").stdout
    assert listed.strip() == "20"
    kube.kubectl("cp", "files:upload", str(kube.workdir / "back"))
    assert (kube.workdir / "back" / "sub" / "f7").read_text() == "7" * 100


def test_delete_marks_the_pod_then_removes_it_after_the_grace_period(kube: FakeProcess) -> None:
    slow_to_stop = ["sh", "-c", "trap 'sleep 3; exit 0' TERM; while :; do sleep 0.05; done"]
    apply(kube, pod_manifest("slow", slow_to_stop))
    wait_until(lambda: phase(kube, "slow") == "Running", timeout=10)
    kube.kubectl("delete", "pod", "slow", "--wait=false")
    marked = kube.kubectl_json("get", "pod", "slow")["metadata"]
    assert marked["deletionTimestamp"] and marked["deletionGracePeriodSeconds"] == 30
    gone = kube.kubectl("get", "pod", "slow", check=False)
    assert gone.returncode == 0  # still there while its process finishes its trap
    wait_until(lambda: kube.kubectl("get", "pod", "slow", check=False).returncode == 1, 20)
    assert kube.pod_processes() == []


def test_namespaces_must_exist_before_pods_go_in(kube: FakeProcess) -> None:
    lost = kube.kubectl(
        "run", "p", "-n", "team", "--image=x", "--command", "--", "true", check=False
    )
    assert lost.returncode == 1 and 'namespaces "team" not found' in lost.stderr
    kube.kubectl("create", "namespace", "team")
    kube.kubectl("run", "p", "-n", "team", "--image=x", "--command", "--", "sleep", "1000")
    wait_until(
        lambda: kube.kubectl_json("get", "pod", "p", "-n", "team")["status"]["phase"] == "Running",
        timeout=10,
    )
    assert kube.kubectl_json("get", "pods")["items"] == []  # not in default


def test_when_the_container_command_ends_its_other_processes_end_too(kube: FakeProcess) -> None:
    apply(
        kube,
        pod_manifest("once", ["sh", "-c", "setsid sleep 1000 & sleep 2"], restartPolicy="Never"),
    )
    wait_until(lambda: phase(kube, "once") == "Running", timeout=10)
    kube.kubectl("exec", "once", "--", "sh", "-c", "setsid sleep 1000 &")
    wait_until(lambda: phase(kube, "once") == "Succeeded", timeout=10)
    assert kube.pod_processes() == []


def test_a_pod_ends_succeeded_or_failed_with_its_exit_code(kube: FakeProcess) -> None:
    apply(kube, pod_manifest("ok", ["true"], restartPolicy="Never"))
    apply(kube, pod_manifest("bad", ["sh", "-c", "echo boom; exit 4"], restartPolicy="Never"))
    wait_until(lambda: phase(kube, "bad") == "Failed" and phase(kube, "ok") == "Succeeded", 10)
    state = kube.kubectl_json("get", "pod", "bad")["status"]["containerStatuses"][0]["state"]
    assert state["terminated"]["exitCode"] == 4
    assert kube.kubectl("logs", "bad").stdout == "boom\n"
    apply(kube, pod_manifest("typo", ["no-such-command"], restartPolicy="Never"))
    wait_until(lambda: phase(kube, "typo") == "Failed", 10)
    assert "Failed" in {e["reason"] for e in events_of(kube, "typo")}


def test_unschedulable_gpu_pod_stays_pending_with_a_failed_scheduling_event(
    kube: FakeProcess,
) -> None:
    apply(kube, pod_manifest("greedy", SLEEPER, resources={"limits": {"nvidia.com/gpu": 4}}))
    event = wait_until(
        lambda: [e for e in events_of(kube, "greedy") if e["reason"] == "FailedScheduling"],
        timeout=10,
    )[0]
    assert event["type"] == "Warning"
    assert event["message"].startswith("0/4 nodes are available: 4 Insufficient nvidia.com/gpu.")
    pod = kube.kubectl_json("get", "pod", "greedy")
    assert pod["status"]["phase"] == "Pending" and "nodeName" not in pod["spec"]
    assert kube.kubectl("get", "pod", "greedy").stdout.split("\n")[1].split()[:3] == [
        "greedy",
        "0/1",
        "Pending",
    ]
    assert "FailedScheduling   pod/greedy   0/4 nodes" in kube.kubectl("get", "events").stdout
    assert pod["status"]["conditions"][0]["reason"] == "Unschedulable"

    # two GPUs on the GPU node, selected by its label: it fits and runs there
    fits = pod_manifest(
        "fits",
        SLEEPER,
        resources={"limits": {"nvidia.com/gpu": 2}},
        nodeSelector={"skypilot.co/accelerator": "a100"},
    )
    apply(kube, fits)
    wait_until(lambda: phase(kube, "fits") == "Running", timeout=10)
    assert kube.kubectl_json("get", "pod", "fits")["spec"]["nodeName"] == "gpu-1"


def test_a_pod_waits_for_a_node_with_its_label_and_runs_when_one_is_added(
    kube: FakeProcess,
) -> None:
    label = {"cloud.google.com/gke-accelerator": "nvidia-tesla-h100"}
    apply(
        kube,
        pod_manifest(
            "h100", SLEEPER, resources={"limits": {"nvidia.com/gpu": 1}}, nodeSelector=label
        ),
    )
    message = wait_until(lambda: [e["message"] for e in events_of(kube, "h100")], timeout=10)[0]
    assert "4 node(s) didn't match Pod's node affinity/selector" in message
    kube.admin("nodes", name="gpu-h100", labels=label, gpus=8, cpu="32", memory="256Gi")
    wait_until(lambda: phase(kube, "h100") == "Running", timeout=10)


def test_evicted_pod_is_failed_with_reason_evicted_and_its_processes_are_gone(
    kube: FakeProcess,
) -> None:
    apply(kube, pod_manifest("victim", SLEEPER))
    wait_until(lambda: phase(kube, "victim") == "Running", timeout=10)
    kube.kubectl("exec", "victim", "--", "sh", "-c", "setsid sleep 1000 &")
    wait_until(lambda: len(kube.pod_processes()) >= 2)
    kube.admin("evict", name="victim")
    status = kube.kubectl_json("get", "pod", "victim")["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "Evicted")
    assert kube.pod_processes() == []
    assert "Evicted" in {e["reason"] for e in events_of(kube, "victim")}
    refused = kube.kubectl("exec", "victim", "--", "true", check=False)
    assert refused.returncode != 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(host: str, port: int) -> str:
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with direct.open(f"http://{host}:{port}/", timeout=5) as answer:
        return str(answer.read().decode())


def test_services_get_addresses_and_ports_that_really_reach_their_pods(
    kube: FakeProcess,
) -> None:
    port = free_port()
    (kube.workdir / "index.html").write_text("served by the pod\n")
    server = ["python3", "-m", "http.server", str(port), "--bind", "127.0.0.1",
              "--directory", str(kube.workdir)]  # fmt: skip
    web = pod_manifest("web", server)
    web["spec"]["containers"][0]["ports"] = [{"name": "http", "containerPort": port}]
    apply(kube, web)
    for kind in ("ClusterIP", "NodePort", "LoadBalancer"):
        apply(kube, {
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": kind.lower()},
            "spec": {"type": kind, "selector": {"pod": "web"},
                     "ports": [{"port": 8080, "targetPort": "http"}]},
        })  # fmt: skip
    got = {s["metadata"]["name"]: s for s in kube.kubectl_json("get", "services")["items"]}
    cluster_ip = got["clusterip"]["spec"]["clusterIP"]
    node_port = got["nodeport"]["spec"]["ports"][0]["nodePort"]
    ingress = got["loadbalancer"]["status"]["loadBalancer"]["ingress"][0]["ip"]
    assert cluster_ip.startswith("127.96.") and ingress.startswith("127.97.")
    assert "nodePort" not in got["clusterip"]["spec"]["ports"][0]
    assert 30000 <= node_port <= 32767

    wait_until(lambda: phase(kube, "web") == "Running", timeout=10)
    for host, at in ((cluster_ip, 8080), ("127.0.0.1", node_port), (ingress, 8080)):
        assert wait_until(functools.partial(_try, http_get, host, at), timeout=10) == (
            "served by the pod\n"
        )

    kube.kubectl("delete", "pod", "web")  # no endpoint left: the connection is refused
    with pytest.raises(OSError):
        http_get(cluster_ip, 8080)
    kube.kubectl("delete", "service", "loadbalancer")
    assert "loadbalancer" not in kube.kubectl("get", "services", "-o", "name").stdout
    with pytest.raises(OSError):
        socket.create_connection((ingress, 8080), timeout=2).close()


def _try(call: Any, *args: Any) -> Any:
    try:
        return call(*args)
    except OSError:
        return None


def test_without_a_load_balancer_the_service_never_gets_an_address(tmp_path: Path) -> None:
    with FakeProcess(tmp_path, "--no-load-balancer") as kube:
        apply(kube, {
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "lb"},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]},
        })  # fmt: skip
        service = kube.kubectl_json("get", "service", "lb")
        assert service["status"]["loadBalancer"] == {}
        assert service["spec"]["ports"][0]["nodePort"] >= 30000


@pytest.mark.skipif(unavailable_reason() is not None, reason=f"{unavailable_reason()}")
def test_with_pod_networks_two_pods_serve_one_port_at_their_own_addresses(
    tmp_path: Path,
) -> None:
    with FakeProcess(tmp_path, "--pod-network", "namespace") as kube:
        for name in ("left", "right"):
            (kube.workdir / name).mkdir()
            (kube.workdir / name / "index.html").write_text(f"{name}\n")
            apply(kube, pod_manifest(name, ["python3", "-m", "http.server", "8080",
                                            "--directory", str(kube.workdir / name)]))  # fmt: skip
        wait_until(lambda: phase(kube, "left") == phase(kube, "right") == "Running", timeout=10)
        ips = {n: kube.kubectl_json("get", "pod", n)["status"]["podIP"] for n in ("left", "right")}
        assert len(set(ips.values())) == 2 and all(ip.startswith("10.179.") for ip in ips.values())
        for name, ip in ips.items():
            assert wait_until(functools.partial(_try, http_get, ip, 8080), 10) == f"{name}\n"
        inside = kube.kubectl("exec", "left", "--", "sh", "-c", "cat /proc/net/fib_trie").stdout
        assert ips["left"] in inside and ips["right"] not in inside
        kube.kubectl("delete", "pod", "left")
        assert all(r.ip != ips["left"] for r in NodeNetworks(POD_SUBNET).records())
        assert ips["left"] not in Path("/proc/net/fib_trie").read_text()  # its namespace is gone
    assert all(r.ip not in ips.values() for r in NodeNetworks(POD_SUBNET).records())


def test_stopping_the_fake_kills_every_pod_process_and_removes_every_sandbox(
    tmp_path: Path,
) -> None:
    kube = FakeProcess(tmp_path)
    try:
        for name in ("a", "b"):
            apply(kube, pod_manifest(name, SLEEPER))
        wait_until(lambda: phase(kube, "a") == phase(kube, "b") == "Running", timeout=10)
        kube.kubectl("exec", "a", "--", "sh", "-c", "setsid sleep 1000 &")
        before = wait_until(lambda: len(kube.pod_processes()) >= 3 and kube.pod_processes())
        assert len(list((kube.state / "pods").iterdir())) >= 2
    finally:
        kube.proc.terminate()
        assert kube.proc.wait(timeout=15) == 0
    assert pids_marked(str(kube.state)) == [] and before
    assert not (kube.state / "pods").exists()


def test_two_fakes_are_two_contexts_of_one_merged_kubeconfig(tmp_path: Path) -> None:
    with (
        FakeProcess(tmp_path / "east", "--context", "east") as east,
        FakeProcess(tmp_path / "west", "--context", "west") as west,
    ):
        merged = f"{east.kubeconfig}:{west.kubeconfig}"
        base = ["kubectl", "--cache-dir", str(tmp_path / "cache")]
        env = {**os.environ, "KUBECONFIG": merged}
        contexts = subprocess.run(
            [*base, "config", "get-contexts", "-o", "name"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert sorted(contexts) == ["east", "west"]
        west.admin("nodes", name="only-in-west")
        names = subprocess.run(
            [*base, "--context", "west", "get", "nodes", "-o", "name"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "node/only-in-west" in names.split()


def test_the_python_api_runs_a_fake_in_a_loop_and_turns_its_knobs(tmp_path: Path) -> None:
    async def main() -> tuple[dict[str, Any], list[int]]:
        served = await serve(tmp_path, nodes=[node("only", cpu="2")])
        try:
            kube = served.kube
            watcher = kube.store.watch("pods", "default", lambda o: True, since=None)
            pod = kube.create_pod("default", pod_manifest("p", SLEEPER))
            async with asyncio.timeout(10):  # until the kubelet's report reaches a watch
                seen = ""
                while seen != "Running":
                    event = await watcher.queue.get()
                    assert event is not None
                    seen = event[1]["status"]["phase"]
            kube.store.unwatch(watcher)
            assert pids_marked(str(tmp_path)), "the pod's process runs"
            evicted = await kube.evict("default", "p")
            kube.faults.set(fail_count=1, fail_code=503)
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{served.url}/api/v1/nodes") as answer:
                    assert answer.status == 503
                async with http.get(f"{served.url}/api/v1/nodes") as answer:
                    assert [n["metadata"]["name"] for n in (await answer.json())["items"]] == [
                        "only"
                    ]
            assert pod["metadata"]["uid"] == evicted["metadata"]["uid"]
            return evicted, pids_marked(str(tmp_path))
        finally:
            await served.close()

    evicted, left = asyncio.run(main())
    assert (evicted["status"]["phase"], evicted["status"]["reason"]) == ("Failed", "Evicted")
    assert left == [] and pids_marked(str(tmp_path)) == []


def test_api_faults_answer_429_then_500_then_slowly_then_recover(kube: FakeProcess) -> None:
    kube.kubectl("get", "pods")  # discovery cached: the faults hit the requests below
    kube.admin("faults", fail_count=1, fail_code=429)
    started = time.monotonic()
    kube.kubectl("get", "pods")  # kubectl honours Retry-After and tries again
    assert time.monotonic() - started >= 1.0
    kube.admin("faults", fail_count=2, fail_code=500)
    for _ in range(2):
        broken = kube.kubectl("get", "pods", check=False)
        assert broken.returncode == 1 and "InternalError" in broken.stderr
    assert kube.admin("faults")["failed"] == 3
    kube.admin("faults", delay=0.4)
    started = time.monotonic()
    kube.kubectl("get", "nodes")
    assert time.monotonic() - started >= 0.4
    kube.admin("faults", delay=0)
    assert kube.kubectl_json("get", "pods")["items"] == []


# --- kubernetes-asyncio ----------------------------------------------------------------------


def _k8s() -> Any:
    return pytest.importorskip("kubernetes_asyncio")


def test_kubernetes_asyncio_creates_lists_watches_and_deletes_pods(kube: FakeProcess) -> None:
    k8s = _k8s()
    client, config, watch = k8s.client, k8s.config, k8s.watch

    async def main() -> list[tuple[str, str]]:
        await config.load_kube_config(config_file=str(kube.kubeconfig))
        async with client.ApiClient() as api:
            v1 = client.CoreV1Api(api)
            nodes = (await v1.list_node()).items
            assert {n.metadata.name for n in nodes} >= {"gpu-1"}
            created = await v1.create_namespaced_pod(
                "default",
                pod_manifest("job", ["sh", "-c", "sleep 0.3; exit 4"], restartPolicy="Never"),
            )
            await v1.create_namespaced_pod("default", pod_manifest("other", SLEEPER))
            with pytest.raises(k8s.client.ApiException) as conflict:
                await v1.create_namespaced_pod("default", pod_manifest("job", SLEEPER))
            assert conflict.value.status == 409
            listed = await v1.list_namespaced_pod("default", label_selector="pod in (job)")
            assert [p.metadata.name for p in listed.items] == ["job"]

            seen = []
            w = watch.Watch()
            async for event in w.stream(
                v1.list_namespaced_pod,
                "default",
                label_selector="pod=job",
                timeout_seconds=10,
                resource_version=created.metadata.resource_version,
            ):
                seen.append((event["type"], event["object"].status.phase))
                if event["object"].status.phase == "Failed":
                    terminated = event["object"].status.container_statuses[0].state.terminated
                    assert terminated.exit_code == 4
                    w.stop()
            marked = await v1.delete_namespaced_pod("other", "default", grace_period_seconds=2)
            assert marked.metadata.deletion_timestamp is not None
            w = watch.Watch()  # from the marked version on: its end cannot slip past
            async for event in w.stream(
                v1.list_namespaced_pod,
                "default",
                timeout_seconds=10,
                field_selector="metadata.name=other",
                resource_version=marked.metadata.resource_version,
            ):
                if event["type"] == "DELETED":
                    w.stop()
            with pytest.raises(k8s.client.ApiException) as missing:
                await v1.read_namespaced_pod("other", "default")
            assert missing.value.status == 404
            return seen

    seen = asyncio.run(main())
    assert seen[-1] == ("MODIFIED", "Failed") and ("MODIFIED", "Running") in seen
    assert kube.pod_processes() == []


def test_kubernetes_asyncio_watches_the_events_of_one_pod(kube: FakeProcess) -> None:
    k8s = _k8s()

    async def main() -> list[tuple[str, str]]:
        await k8s.config.load_kube_config(config_file=str(kube.kubeconfig))
        async with k8s.client.ApiClient() as api:
            v1 = k8s.client.CoreV1Api(api)
            listed = await v1.list_namespaced_event("default")
            big = pod_manifest("big", SLEEPER, resources={"requests": {"cpu": "64"}})
            await v1.create_namespaced_pod("default", big)
            await v1.create_namespaced_pod("default", pod_manifest("small", SLEEPER))
            w, seen, since = k8s.watch.Watch(), [], listed.metadata.resource_version
            async for event in w.stream(v1.list_namespaced_event, "default", timeout_seconds=10,
                                        field_selector="involvedObject.name=big",
                                        resource_version=since):  # fmt: skip
                seen.append((event["object"].reason, event["object"].message))
                w.stop()
            return seen

    [(reason, message)] = asyncio.run(main())
    assert reason == "FailedScheduling"
    assert message.startswith("0/4 nodes are available: 4 Insufficient cpu.")


def test_kubernetes_asyncio_eviction_api_deletes_the_pod_gracefully(kube: FakeProcess) -> None:
    k8s = _k8s()
    apply(kube, pod_manifest("drained", SLEEPER))
    wait_until(lambda: phase(kube, "drained") == "Running", timeout=10)

    async def main() -> None:
        await k8s.config.load_kube_config(config_file=str(kube.kubeconfig))
        async with k8s.client.ApiClient() as api:
            v1 = k8s.client.CoreV1Api(api)
            eviction = {"apiVersion": "policy/v1", "kind": "Eviction",
                        "metadata": {"name": "drained", "namespace": "default"}}  # fmt: skip
            await v1.create_namespaced_pod_eviction("drained", "default", eviction)

    asyncio.run(main())
    wait_until(lambda: kube.kubectl("get", "pod", "drained", check=False).returncode == 1, 10)
    assert kube.pod_processes() == []


READ_ECHO_EXIT_7 = 'read l; echo "got $l"; echo e >&2; exit 7'


def test_kubernetes_asyncio_exec_passes_stdin_and_returns_the_exit_code(
    kube: FakeProcess,
) -> None:
    k8s = _k8s()
    client, config, WsApiClient = k8s.client, k8s.config, k8s.stream.WsApiClient

    apply(kube, pod_manifest("shell", SLEEPER))
    wait_until(lambda: phase(kube, "shell") == "Running", timeout=10)

    async def main() -> tuple[str, str, int]:
        await config.load_kube_config(config_file=str(kube.kubeconfig))
        async with WsApiClient() as ws_api:
            v1 = client.CoreV1Api(api_client=ws_api)
            whole = await v1.connect_get_namespaced_pod_exec(
                "shell",
                "default",
                command=["sh", "-c", "echo hello-from-exec"],
                stderr=True,
                stdin=False,
                stdout=True,
                tty=False,
            )
            channels: dict[int, bytes] = {1: b"", 2: b"", 3: b""}
            async with await v1.connect_get_namespaced_pod_exec(
                "shell",
                "default",
                command=["sh", "-c", READ_ECHO_EXIT_7],
                stderr=True,
                stdin=True,
                stdout=True,
                tty=False,
                _preload_content=False,
            ) as ws:
                await ws.send_bytes(b"\x00ping\n")
                async for msg in ws:
                    channels[msg.data[0]] += msg.data[1:]
            code = WsApiClient.parse_error_data(channels[3])
            return whole, (channels[1] + channels[2]).decode(), code

    whole, out, code = asyncio.run(main())
    assert whole == "hello-from-exec\n"
    assert (out, code) == ("got ping\ne\n", 7)


def test_kubernetes_asyncio_exec_with_a_terminal(kube: FakeProcess) -> None:
    k8s = _k8s()
    apply(kube, pod_manifest("tty", SLEEPER))
    wait_until(lambda: phase(kube, "tty") == "Running", timeout=10)

    async def main() -> tuple[bytes, int]:
        await k8s.config.load_kube_config(config_file=str(kube.kubeconfig))
        async with k8s.stream.WsApiClient() as ws_api:
            v1 = k8s.client.CoreV1Api(api_client=ws_api)
            channels: dict[int, bytes] = {1: b"", 3: b""}
            async with await v1.connect_get_namespaced_pod_exec(
                "tty",
                "default",
                command=["sh"],
                stdin=True,
                stdout=True,
                tty=True,
                _preload_content=False,
            ) as ws:
                await ws.send_bytes(b'\x04{"Width": 100, "Height": 30}')
                await ws.send_bytes(b"\x00stty size; tty >/dev/null && echo is-a-tty; exit 5\n")
                async for msg in ws:
                    channels[msg.data[0]] += msg.data[1:]
            return channels[1], k8s.stream.WsApiClient.parse_error_data(channels[3])

    out, code = asyncio.run(main())
    assert b"30 100" in out and b"is-a-tty" in out and code == 5


def test_a_watch_from_a_compacted_version_is_told_410_expired(kube: FakeProcess) -> None:
    k8s = _k8s()
    apply(kube, pod_manifest("old", SLEEPER))
    wait_until(lambda: phase(kube, "old") == "Running", timeout=10)
    version = str(kube.admin("compact")["compacted"])
    apply(kube, pod_manifest("new", SLEEPER))

    async def watch_from(since: str) -> list[str]:
        await k8s.config.load_kube_config(config_file=str(kube.kubeconfig))
        async with k8s.client.ApiClient() as api:
            v1, w, names = k8s.client.CoreV1Api(api), k8s.watch.Watch(), []
            async for event in w.stream(
                v1.list_namespaced_pod, "default", resource_version=since, timeout_seconds=10
            ):
                names.append(event["object"].metadata.name)
                w.stop()
            return names

    with pytest.raises(k8s.client.ApiException) as expired:
        asyncio.run(watch_from("1"))
    assert expired.value.status == 410 and "Expired" in expired.value.reason
    assert asyncio.run(watch_from(version)) == ["new"]  # from the compaction on, all is kept


# --- the scheduler's arithmetic and the selectors ----------------------------------------------


def test_failed_scheduling_message_counts_reasons_as_the_scheduler_does() -> None:
    gpu_pod = pod_manifest("p", resources={"requests": {"nvidia.com/gpu": "1", "cpu": "500m"}})
    nodes = [node("a"), node("b"), node("g", gpus=1, labels={"x": "y"})]
    busy = [pod_manifest("q", resources={"limits": {"nvidia.com/gpu": 1}})]
    reasons = {n["metadata"]["name"]: why_not(gpu_pod, n, busy) for n in nodes}
    assert failed_scheduling_message(reasons).startswith(
        "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
    )
    assert why_not(gpu_pod, nodes[2], []) == []
    gpu_pod["spec"]["nodeSelector"] = {"x": "z"}
    assert why_not(gpu_pod, nodes[2], []) == ["node(s) didn't match Pod's node affinity/selector"]


def test_required_node_affinity_and_taints_decide_where_a_pod_may_go() -> None:
    labels = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    h100 = node("h", gpus=8, labels=labels)
    h100["spec"]["taints"] = [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]
    term = {"key": "nvidia.com/gpu.product", "operator": "In", "values": ["NVIDIA-H100-80GB-HBM3"]}
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [term]}]}}}  # fmt: skip
    pod = pod_manifest("p", resources={"limits": {"nvidia.com/gpu": 8}}, affinity=affinity)
    assert why_not(pod, h100, []) == ["node(s) had untolerated taint {nvidia.com/gpu: present}"]
    pod["spec"]["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists"}]
    assert why_not(pod, h100, []) == []
    assert why_not(pod, node("cpu"), []) == ["node(s) didn't match Pod's node affinity/selector"]
    term["operator"] = "NotIn"
    assert why_not(pod, h100, []) == ["node(s) didn't match Pod's node affinity/selector"]


def test_label_and_field_selectors() -> None:
    match = label_matcher("app=web,tier in (a, b),!canary,env!=prod")
    assert match({"app": "web", "tier": "b"})
    assert not match({"app": "web", "tier": "c"})
    assert not match({"app": "web", "tier": "a", "canary": "1"})
    assert not match({"app": "web", "tier": "a", "env": "prod"})
    fields = field_matcher("involvedObject.name=p1,type!=Normal")
    assert fields({"involvedObject": {"name": "p1"}, "type": "Warning"})
    assert not fields({"involvedObject": {"name": "p1"}, "type": "Normal"})
