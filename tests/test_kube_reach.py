"""What the Kubernetes provider makes of a pod it cannot reach for a while, and of a pod slow
to go: the fake API server (tests/kube_fake) made slow or failing, pods' processes killed; what
is left checked with kubectl."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import anyio
import pytest

from stixd.providers.base import NodeStatus, ProvisionRequest
from stixd.providers.kubernetes import observe, pods
from stixd.providers.kubernetes.agents import ref_of
from stixd.providers.kubernetes.deferred import DeferredShell
from stixd.providers.kubernetes.podspec import LABEL_CLUSTER, pod_name
from tests.kube_fake.process import FakeProcess
from tests.test_kube_exec import pids_running
from tests.test_kube_provider import open_provider, request

pytestmark = pytest.mark.anyio


def statuses(found: list[Any]) -> list[tuple[int, NodeStatus]]:
    return [(n.rank, n.status) for n in found]


async def until(predicate: Any, within: float = 10.0) -> None:
    with anyio.fail_after(within):
        while not predicate():
            await anyio.sleep(0.02)


def kill_in_pod(kube: FakeProcess, pod: str, *words: bytes) -> None:
    [pid] = [p for p in pids_running(kube, *words) if pod.encode() in _environ(p)]
    os.kill(pid, signal.SIGKILL)


def _environ(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return b""


async def test_a_slow_or_failing_exec_leaves_a_running_pod_unreachable_never_stopped(
    kube: FakeProcess, tmp_path: Path, pyz: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The relay started again under a slow API (longer than an agent's hello) still finds
    the agent; a relay that cannot start leaves the node UNREACHABLE (the cluster's grace
    applies), and only an agent whose socket refuses behind a running relay is STOPPED."""
    monkeypatch.setattr(observe, "HELLO_DEADLINE_S", 1.0)  # shorter than the relay's start
    provider = open_provider(kube, tmp_path, agents=True)
    cluster = "reach"
    try:
        [node] = await provider.launch(
            ProvisionRequest(cluster, 1, pyz, request(cluster).resources)
        )
        shell = provider.shell(ref_of(node))
        assert isinstance(shell, DeferredShell)
        relay = (await shell.shell()).relay

        kill_in_pod(kube, pod_name(cluster, 0, provider.owner), b"stix-inpod", b"relay")
        await until(lambda: not relay.alive)
        kube.admin("faults", delay=2)  # each API answer: the list, then the relay's exec
        try:
            assert statuses(await provider.query(cluster)) == [(0, NodeStatus.RUNNING)]
        finally:
            kube.admin("faults", delay=0)

        kill_in_pod(kube, pod_name(cluster, 0, provider.owner), b"stix-inpod", b"relay")
        await until(lambda: not relay.alive)
        relay.start_within = 1.0  # the relay's exec answers too late to start
        kube.admin("faults", delay=1.5)
        try:
            found = await provider.query(cluster)
        finally:
            kube.admin("faults", delay=0)
            relay.start_within = 20.0
        assert statuses(found) == [(0, NodeStatus.UNREACHABLE)]
        assert "did not start within 1 s" in provider.node_errors(cluster)[0]

        assert node.pid is not None
        os.kill(node.pid, signal.SIGKILL)  # the pod runs, its agent does not
        assert statuses(await provider.query(cluster)) == [(0, NodeStatus.STOPPED)]
        assert relay.alive
    finally:
        await provider.terminate(cluster)
        await provider.aclose()


async def test_down_counts_a_pod_on_its_way_out_as_gone_however_long_its_grace(
    kube: FakeProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``pod_config`` with a long grace period: the pod's process ignores SIGTERM, so it is
    listed, deletionTimestamp set, past the wait; `down` does not fail for it."""
    monkeypatch.setattr(pods, "GONE_WITHIN_S", 1.0)
    provider = open_provider(
        kube, tmp_path, pod_config={"spec": {"terminationGracePeriodSeconds": 30}}
    )
    try:
        await provider.make_pods(request("slowgo"))
        kube.kubectl("exec", pod_name("slowgo", 0, provider.owner), "--", "sh", "-c",
                     "trap '' TERM; sleep 600 </dev/null >/dev/null 2>&1 &")  # fmt: skip
        await provider.terminate("slowgo")
        [going] = kube.kubectl_json("get", "pods", "-l", f"{LABEL_CLUSTER}=slowgo")["items"]
        assert going["metadata"]["deletionTimestamp"]
        assert provider.records.where("slowgo") is None
    finally:
        kill_in_pod(
            kube, pod_name("slowgo", 0, provider.owner), b"sleep", b"600"
        )  # else the fake waits out its grace
        await provider.aclose()
