"""A Kubernetes launch on the fake API server (tests/kube_fake/, pods are real processes here).

1. Launch to first job RUNNING for 1 and 4 pods, through the provider as the daemon calls it:
   pods made and Running, an agent in each over exec, a job submitted to rank 0 until RUNNING.
   Each phase's wall time, and the whole split into time with an API call in flight (REST
   calls and one-shot exec streams, their union on the wall clock) and the rest: stix's own
   work, the agent starting up in the pod, calls through the pod's relay (one long-lived exec,
   not counted as in flight) and waits between polls.
2. The same through the whole path: ``stixctl launch -d`` of a 1- and a 4-pod cluster through
   a real daemon (its own home) to the job's RUNNING event, as ratios to ``python -c pass``
   (the floor every client figure is measured against) and to the provider-level launch.
3. Time from an unschedulable pod to the ``CapacityError`` the launcher fails over on (median
   of rounds), as a ratio to the ten minutes SkyPilot users report waiting.

Figures are ratios and phase shares; nothing asserts on time. Needs ``kubectl``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import structlog

from bench.common import Home, event_at, floor, median
from stixd.agent_bundle import build_agent_zipapp
from stixd.providers.base import CapacityError, ProvisionRequest
from stixd.providers.kubernetes import exec as pod_exec
from stixd.providers.kubernetes.api import KubeApi
from stixd.providers.kubernetes.config import KubernetesConfig
from stixd.providers.kubernetes.contexts import Clients, read_kubeconfig
from stixd.providers.kubernetes.deferred import DeferredShell
from stixd.providers.kubernetes.provider import KubernetesProvider
from tests.kube_fake.process import FakeProcess

SKYPILOT_REPORTED_WAIT_S = 600.0


class InFlight:
    """Intervals during which an API call or exec stream was open."""

    def __init__(self) -> None:
        self.spans: list[tuple[float, float]] = []

    def wrap(self, call: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def timed(*args: Any, **kwargs: Any) -> Any:
            began = time.monotonic()
            try:
                return await call(*args, **kwargs)
            finally:
                self.spans.append((began, time.monotonic()))

        return timed

    def union(self, start: float, end: float) -> float:
        total, reach = 0.0, start
        for a, b in sorted(self.spans):
            a, b = max(a, reach), min(b, end)
            if b > a:
                total += b - a
                reach = b
        return total


@contextlib.contextmanager
def instrumented(spans: InFlight) -> Iterator[None]:
    call, run = KubeApi.call, pod_exec.run
    KubeApi.call = spans.wrap(call)  # type: ignore[method-assign,assignment]
    pod_exec.run = spans.wrap(run)  # type: ignore[assignment]
    try:
        yield
    finally:
        KubeApi.call = call  # type: ignore[method-assign]
        pod_exec.run = run


def provider(kube: FakeProcess, home: Path) -> KubernetesProvider:
    kubeconfig = read_kubeconfig({"KUBECONFIG": str(kube.kubeconfig)})
    clients = Clients(kubeconfig, home / "certs")
    return KubernetesProvider(
        home,
        KubernetesConfig(),
        kubeconfig,
        lambda pod: DeferredShell(clients, pod),
        clients=clients,
    )


def request(cluster: str, nodes: int, pyz: Path, cpus: float = 0.5) -> ProvisionRequest:
    placement = {"request": {"cpus": cpus, "memory_gb": 0.5}}
    return ProvisionRequest(cluster, nodes, pyz, placement)


async def launch_once(
    kube: FakeProcess, home: Path, pyz: Path, nodes: int, n: int
) -> dict[str, float]:
    made = provider(kube, home)
    cluster = f"bench-{nodes}-{n}"
    spans = InFlight()
    try:
        with instrumented(spans):
            t0 = time.monotonic()
            pods = await made.make_pods(request(cluster, nodes, pyz))
            t1 = time.monotonic()
            launched = await made.put_agents(request(cluster, nodes, pyz), pods)
            t2 = time.monotonic()
            agent = made.connector(launched[0])
            await agent.call("submit", job_id=1, run="sleep 30", node_rank=0, num_nodes=1)
            await agent.call("wait", deadline=30, job_id=1, state="PENDING", timeout=20)
            t3 = time.monotonic()
        return {
            "pods": t1 - t0,
            "agents": t2 - t1,
            "job": t3 - t2,
            "total": t3 - t0,
            "api": spans.union(t0, t3),
        }
    finally:
        await made.terminate(cluster)
        await made.aclose()


def whole_path_once(home: Home, nodes: int, n: int) -> float:
    """``stixctl launch -d`` to the job's RUNNING event (the daemon's clock), then ``down``."""
    cluster = f"whole-{nodes}-{n}"
    began = time.time()
    home.ctl("launch", "-y", "-d", "-c", cluster, "--infra", "k8s", "--num-nodes", str(nodes),
             "--cpus", "0.5", "sleep 30")  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            events = home.events(cluster)
            if any(e["kind"] == "job" and e["to_state"] == "RUNNING" for e in events):
                return event_at(events, "job", "RUNNING") - began
            if time.monotonic() > deadline:
                raise SystemExit(f"the job of {cluster} was not RUNNING within 120 s")
            time.sleep(0.1)
    finally:
        home.ctl("down", "-y", cluster)


def whole_paths(kube: FakeProcess, root: Path, rounds: int) -> dict[int, float]:
    """Per pod count, the median whole-path launch, one daemon for every round."""
    home = Home(root / "whole")
    home.env["KUBECONFIG"] = str(kube.kubeconfig)
    home.ctl("check")  # starts the daemon, which lists the context's nodes for the plan
    try:
        return {
            nodes: median([whole_path_once(home, nodes, i) for i in range(rounds)])
            for nodes in (1, 4)
        }
    finally:
        home.ctl("daemon", "stop", check=False)


async def failover_once(kube: FakeProcess, home: Path, pyz: Path, n: int) -> float:
    made = provider(kube, home)
    try:
        began = time.monotonic()
        with contextlib.suppress(CapacityError):
            await made.make_pods(request(f"nofit-{n}", 1, pyz, cpus=64))
            raise AssertionError("a 64-CPU pod was placed on the fake's nodes")
        return time.monotonic() - began
    finally:
        await made.aclose()


async def main(rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-kube-") as tmp:
        root = Path(tmp)
        kube = FakeProcess(root / "fake")
        try:
            pyz = build_agent_zipapp(root / "bundle")
            provider_level: dict[int, float] = {}
            for nodes in (1, 4):
                runs = [
                    await launch_once(kube, root / f"h{nodes}-{i}", pyz, nodes, i)
                    for i in range(rounds)
                ]
                mid = {k: median([r[k] for r in runs]) for k in runs[0]}
                own = mid["total"] - mid["api"]
                provider_level[nodes] = mid["total"]
                print(
                    f"launch to first job RUNNING, {nodes} pod(s): total {mid['total']:.2f} s "
                    f"(pods Running {mid['pods'] / mid['total']:.0%}, agents "
                    f"{mid['agents'] / mid['total']:.0%}, job {mid['job'] / mid['total']:.0%}); "
                    f"API calls in flight {mid['api'] / mid['total']:.0%}, the rest (stix, the "
                    f"agent starting, relay calls) {own / mid['total']:.0%}"
                )
            whole = await asyncio.to_thread(whole_paths, kube, root, rounds)
            base = floor(5)
            for nodes, took in whole.items():
                print(
                    f"stixctl launch to first job RUNNING through the daemon, {nodes} pod(s): "
                    f"{took:.2f} s = {took / base:.0f}x `python -c pass`, "
                    f"{took / provider_level[nodes]:.2f}x the provider-level launch"
                )
            waits = [await failover_once(kube, root / f"f{i}", pyz, i) for i in range(rounds)]
            wait = median(waits)
            print(
                f"unschedulable pod to failover: {wait:.2f} s median of {rounds}, "
                f"1/{SKYPILOT_REPORTED_WAIT_S / wait:.0f} of the ten minutes SkyPilot users report"
            )
        finally:
            kube.stop()


if __name__ == "__main__":
    # the provider's info lines (a node ready, ...) would land among the figures
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    asyncio.run(main(parser.parse_args().rounds))
