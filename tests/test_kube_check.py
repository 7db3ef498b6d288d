"""`check` and `show-gpus --infra k8s` for Kubernetes, per context, against fake API servers:
one that works, one whose LoadBalancer services get no address, one stopped, one that refuses
the credentials, and a context the kubeconfig does not have."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml

from stixd.providers.kubernetes.api import path
from stixd.providers.kubernetes.config import KubernetesConfig
from stixd.providers.kubernetes.contexts import Clients, read_kubeconfig
from stixd.providers.kubernetes.planning import KubePlanning
from tests.conftest import Stix
from tests.kube_fake.nodes import node
from tests.kube_fake.process import FakeProcess
from tests.kube_fake.server import serve, write_kubeconfig

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def fakes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, FakeProcess]]:
    root = tmp_path_factory.mktemp("kube-check")
    with contextlib.ExitStack() as stack:
        made = {
            "kube-a": stack.enter_context(FakeProcess(root / "a", "--context", "kube-a")),
            "kube-blind": stack.enter_context(
                FakeProcess(root / "b", "--context", "kube-blind", "--no-load-balancer")
            ),
        }
        with FakeProcess(root / "d", "--context", "kube-down") as made["kube-down"]:
            pass  # stopped: its kubeconfig stays, a server that is gone
        yield made


def bad_token_kubeconfig(fake: FakeProcess, where: Path) -> Path:
    """``fake``'s kubeconfig under another context name, with a token it does not take."""
    config: dict[str, Any] = yaml.safe_load(fake.kubeconfig.read_text())
    config["users"][0]["user"]["token"] = "stolen"
    for part in ("clusters", "users", "contexts"):
        config[part][0]["name"] = "kube-badtoken"
    config["contexts"][0]["context"].update(cluster="kube-badtoken", user="kube-badtoken")
    config["current-context"] = "kube-badtoken"
    where.write_text(yaml.safe_dump(config))
    return where


@pytest.fixture
async def planning(
    fakes: dict[str, FakeProcess], tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[KubePlanning]:
    allowed, namespace = request.param
    files = [str(f.kubeconfig) for f in fakes.values()]
    files.append(str(bad_token_kubeconfig(fakes["kube-a"], tmp_path / "bad.yaml")))
    clients = Clients(read_kubeconfig({"KUBECONFIG": ":".join(files)}), tmp_path / "certs")
    config = KubernetesConfig(allowed_contexts=allowed, namespace=namespace)
    try:
        yield KubePlanning(clients, config, tmp_path)
    finally:
        await clients.aclose()


EVERY = ("kube-a", "kube-blind", "kube-down", "kube-badtoken", "kube-gone")


@pytest.mark.parametrize("planning", [(EVERY, None)], indirect=True)
async def test_check_says_per_context_whether_it_is_usable_and_what_it_lacks(
    planning: KubePlanning,
) -> None:
    result = await planning.check()
    assert result.enabled  # one usable context is enough
    said = dict(line.split(": ", 1) for line in result.details)
    assert list(said) == list(EVERY)  # in the order launches try them
    assert said["kube-a"].startswith("reachable, namespace default, 4 node(s), GPUs A100 x2")
    assert "lacks" not in said["kube-a"]
    assert said["kube-blind"].startswith("reachable")
    assert "lacks: exposing ports as loadbalancer" in said["kube-blind"]
    assert said["kube-down"].startswith("unreachable (")
    assert (
        said["kube-badtoken"].startswith("credentials refused (") and "401" in said["kube-badtoken"]
    )
    assert "no Kubernetes context 'kube-gone'" in said["kube-gone"]
    assert all("\n" not in line for line in result.details)


@pytest.mark.parametrize("planning", [(("kube-a",), "team-x")], indirect=True)
async def test_check_names_a_missing_namespace_and_how_to_make_it(planning: KubePlanning) -> None:
    result = await planning.check()
    assert not result.enabled
    assert result.details == (
        "kube-a: namespace team-x does not exist (kubectl create namespace team-x)",
    )


@pytest.mark.parametrize("planning", [(("kube-a", "kube-down"), None)], indirect=True)
async def test_show_gpus_counts_the_gpus_pods_hold_as_not_free(
    planning: KubePlanning, fakes: dict[str, FakeProcess]
) -> None:
    text, rows = await planning.show_gpus(None, None, None)
    assert rows == [
        {"context": "kube-a", "node": "gpu-1", "accelerator": "A100", "total": 2, "free": 2}
    ]
    assert "kube-down: cannot be read (unreachable" in text
    api = await planning.api("kube-a")
    pods = path("namespaces", "default", "pods")
    await api.call("POST", pods, body=gpu_pod("holds-a-gpu", ["sleep", "300"]))
    await api.call("POST", pods, body=gpu_pod("held-a-gpu", ["true"]))
    try:
        deadline = time.monotonic() + 20
        while (await api.call("GET", f"{pods}/held-a-gpu"))["status"]["phase"] != "Succeeded":
            assert time.monotonic() < deadline, "the finished pod never Succeeded"
            await anyio.sleep(0.05)
        text, rows = await planning.show_gpus("a100", None, "kube-a")
        assert [(r["node"], r["total"], r["free"]) for r in rows] == [("gpu-1", 2, 1)]
        assert text.splitlines()[0] == "Kubernetes context kube-a: A100 1 of 2 free"
        _, none = await planning.show_gpus("H100", None, "kube-a")
        assert none == []
    finally:
        for name in ("holds-a-gpu", "held-a-gpu"):
            await api.call("DELETE", f"{pods}/{name}")


def gpu_pod(name: str, command: list[str]) -> dict[str, Any]:
    """A pod asking one GPU; one whose command ends has finished with it."""
    container: dict[str, Any] = {"name": "c", "image": "x", "command": command}
    container["resources"] = {"limits": {"nvidia.com/gpu": "1"}}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"restartPolicy": "Never", "containers": [container]},
    }


def test_without_a_kubeconfig_check_and_launch_say_how_to_set_one_up(stix: Stix) -> None:
    stix.env["KUBECONFIG"] = str(stix.home / "no-such-kubeconfig")
    [row] = stix.json("check", "k8s")
    assert row["enabled"] is False and "no context in the kubeconfig" in row["reason"]
    refused = stix.run("launch", "-c", "k", "-y", "--infra", "k8s", "true")
    assert refused.returncode != 0
    assert "'kubernetes' is not available: no context in the kubeconfig" in refused.stderr
    assert not (stix.home / "kubernetes" / "catalog" / "v8" / "kubernetes" / "vms.csv").exists()
    shown = stix.run("show-gpus", "--infra", "k8s", check=True).stdout
    assert shown.startswith("no context in the kubeconfig")


async def test_check_says_a_context_without_gpu_nodes_lacks_them(tmp_path: Path) -> None:
    served = await serve(tmp_path / "state", nodes=[node("cpu-only", cpu="8", memory="32Gi")])
    try:
        write_kubeconfig(tmp_path / "kubeconfig", served.url, "kube-cpu")
        kubeconfig = read_kubeconfig({"KUBECONFIG": str(tmp_path / "kubeconfig")})
        clients = Clients(kubeconfig, tmp_path / "certs")
        try:
            result = await KubePlanning(clients, KubernetesConfig(), tmp_path).check()
        finally:
            await clients.aclose()
    finally:
        await served.close()
    assert result.enabled
    assert result.details == (
        "kube-cpu: reachable, namespace default, 1 node(s); lacks: GPU nodes (none with a GPU "
        "label and nvidia.com/gpu or amd.com/gpu)",
    )
