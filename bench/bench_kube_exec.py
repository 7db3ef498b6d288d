"""The channel into a pod over exec (``stixd.providers.kubernetes.shell.ExecShell``) on the fake
API server (tests/kube_fake/, pods are real processes on this machine).

1. One agent ``hello`` round trip through the pod's relay (warm: the relay's exec is open),
   median of many, and 50 at once (wall), against a bare ``kubectl exec POD -- true`` (whole
   process, as a person or SkyPilot's per-command exec pays it); beside it one exec of ``true``
   of ours (a WebSocket each) and the relay's first call (its exec started).
2. ``put_tree`` of 2,000 small files (1-8 KiB, nested folders) into a fresh folder, and a
   re-sync with nothing changed, against ``tar c -C SRC . | kubectl exec -i POD -- tar x -C
   DIR`` (``kubectl cp``'s way, which sends everything every time); rounds alternate who goes
   first.

Every figure is a ratio to a baseline measured in the same run; nothing asserts on time.
Needs ``kubectl``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import subprocess
import tempfile
import time
from pathlib import Path

import yaml

from bench.common import median
from stixd.agent_bundle import build_agent_zipapp, build_id
from stixd.providers.kubernetes import exec as pod_exec
from stixd.providers.kubernetes.contexts import Clients, read_kubeconfig
from stixd.providers.kubernetes.relay import Relay
from stixd.providers.kubernetes.seams import CONTAINER, PodRef
from stixd.providers.kubernetes.shell import ExecShell, open_shell
from stixd.providers.shared.bootstrap import ensure_agent
from tests.kube_fake.process import FakeProcess
from tests.kube_fake.server import CONTEXT

POD = "bench"


def make_tree(root: Path, files: int, seed: int = 7) -> Path:
    rng = random.Random(seed)
    for i in range(files):
        folder = root / f"d{i % 20}" / f"e{i % 7}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i}.txt").write_bytes(rng.randbytes(rng.randint(1024, 8192)))
    return root


def start_pod(kube: FakeProcess) -> PodRef:
    manifest = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": POD},
        "spec": {"containers": [{"name": CONTAINER, "image": "x", "command": ["sleep", "9999"]}]},
    }
    path = kube.workdir / "pod.yaml"
    path.write_text(yaml.safe_dump(manifest))
    kube.kubectl("apply", "-f", str(path))
    deadline = time.monotonic() + 20
    while kube.kubectl_json("get", "pod", POD)["status"].get("phase") != "Running":
        if time.monotonic() > deadline:
            raise SystemExit("the bench pod did not run within 20 s")
        time.sleep(0.05)
    return PodRef(CONTEXT, "default", POD)


def kubectl_cmd(kube: FakeProcess, *args: str) -> list[str]:
    cache = str(kube.workdir / "kube-cache")
    return ["kubectl", "--kubeconfig", str(kube.kubeconfig), "--cache-dir", cache, *args]


def timed_process(cmd: list[str] | str, shell: bool = False) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, shell=shell, check=True, capture_output=True)
    return time.perf_counter() - t0


async def round_trips(kube: FakeProcess, sh: ExecShell, runs: int, pyz: Path) -> None:
    t0 = time.perf_counter()
    ep = await ensure_agent(
        sh, cluster="bench", rank=0, node_ip="127.0.0.1", pyz=pyz, build=build_id()
    )
    bootstrap = time.perf_counter() - t0
    await sh.relay.aclose()
    sh.relay = Relay(sh.client, sh.pod)  # a fresh relay: time its first call
    t0 = time.perf_counter()
    agent = sh.agent_client(ep.socket_path, "bench-0")
    await agent.call("hello")
    first = time.perf_counter() - t0
    hellos, ours, kubectl = [], [], []
    true_cmd = kubectl_cmd(kube, "exec", POD, "--", "true")
    for i in range(runs):
        t0 = time.perf_counter()
        await agent.call("hello")
        hellos.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        await pod_exec.run(sh.client, sh.pod, ["true"], timeout=10)
        ours.append(time.perf_counter() - t0)
        if i % 5 == 0:
            kubectl.append(await asyncio.to_thread(timed_process, true_cmd))
    t0 = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        for _ in range(50):
            tg.create_task(agent.call("hello", deadline=60))
    fifty = time.perf_counter() - t0
    base = median(kubectl)
    print(f"1. round trips (median; baseline `kubectl exec {POD} -- true`: {base * 1e3:.1f} ms)")
    print(f"   agent hello through the relay     {median(hellos) / base:6.3f} x")
    print(f"   one exec of `true` (a WebSocket)  {median(ours) / base:6.3f} x")
    print(f"   50 concurrent hellos, wall        {fifty / base:6.3f} x")
    print(f"   relay's first call (exec started) {first / base:6.3f} x")
    print(f"   ensure_agent into a fresh pod     {bootstrap / base:6.3f} x")
    print(f"   relay execs started for {runs + 51} calls: {sh.relay.starts}")


async def sync(kube: FakeProcess, sh: ExecShell, files: int, rounds: int, tmp: Path) -> None:
    src = make_tree(tmp / "tree", files)
    ours_cold, ours_again, tar_pipe = [], [], []
    for r in range(rounds):

        async def ours(r: int = r) -> None:
            t0 = time.perf_counter()
            sent = await sh.put_tree(src, f"ours{r}", timeout=300)
            ours_cold.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            again = await sh.put_tree(src, f"ours{r}", timeout=300)
            ours_again.append(time.perf_counter() - t0)
            if (sent, again) != (files, 0):
                raise SystemExit(f"put_tree sent {sent} then {again}, not {files} then 0")

        def pipe(r: int = r) -> None:
            made = kubectl_cmd(kube, "exec", POD, "--", "mkdir", "-p", f"tar{r}")
            subprocess.run(made, check=True, capture_output=True)
            into = " ".join(kubectl_cmd(kube, "exec", "-i", POD, "--", "tar", "x", "-C", f"tar{r}"))
            tar_pipe.append(timed_process(f"tar c -C {src} . | {into}", shell=True))

        if r % 2:
            await asyncio.to_thread(pipe)
            await ours()
        else:
            await ours()
            await asyncio.to_thread(pipe)
    base = median(tar_pipe)
    print(
        f"2. sync of {files} files (median of {rounds}; baseline tar | kubectl exec -i tar x: "
        f"{base * 1e3:.0f} ms)"
    )
    print(f"   put_tree into an empty folder      {median(ours_cold) / base:6.3f} x")
    print(f"   put_tree again, nothing changed    {median(ours_again) / base:6.3f} x")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-kube-exec-") as tmp:
        kube = FakeProcess(Path(tmp) / "kube")
        clients: Clients | None = None
        sh: ExecShell | None = None
        try:
            pod = start_pod(kube)
            clients = Clients(
                read_kubeconfig({"KUBECONFIG": str(kube.kubeconfig)}), Path(tmp) / "p"
            )
            sh = await open_shell(clients, pod)
            pyz = build_agent_zipapp(Path(tmp) / "bundle")
            await round_trips(kube, sh, args.runs, pyz)
            await sync(kube, sh, args.files, args.rounds, Path(tmp))
        finally:
            if sh is not None:
                await sh.aclose()
            if clients is not None:
                await clients.aclose()
            kube.stop()


if __name__ == "__main__":
    asyncio.run(main())
