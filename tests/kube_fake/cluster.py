"""The fake cluster's behaviour: the scheduler binds pods to nodes that fit, the "kubelet" runs
each bound pod in a sandbox and reports its phase, deletion honours the grace period — and the
knobs a test turns from outside (evict, delete, add a node)."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import shutil
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from stixd.providers.local.netns import NodeNetworks
from tests.kube_fake import events, pods
from tests.kube_fake.claims import claim_problem, pod_level_message, pod_mounts
from tests.kube_fake.faults import Faults
from tests.kube_fake.meta import Obj, timestamp
from tests.kube_fake.nodes import default_nodes, failed_scheduling_message, why_not
from tests.kube_fake.sandbox import Sandbox
from tests.kube_fake.store import Store

RESTART_DELAY = 0.5  # seconds before a restartPolicy=Always container starts again


@dataclasses.dataclass
class Kubelet:
    """What the fake's kubelet holds for one running pod."""

    sandbox: Sandbox
    ending: bool = False  # being deleted or evicted: an exit is no longer news
    task: asyncio.Task[None] | None = None


class KubeFake:
    def __init__(
        self, root: Path, nodes: list[Obj] | None = None, networks: NodeNetworks | None = None
    ) -> None:
        self.root, self.networks = root, networks
        self.store = Store()
        self.faults = Faults()
        self.kubelets: dict[str, Kubelet] = {}  # by pod uid
        self._tasks: set[asyncio.Task[Any]] = set()
        for n in default_nodes() if nodes is None else nodes:
            self.store.create("nodes", n)
        for ns in ("default", "kube-system"):
            self.store.create(
                "namespaces",
                {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "spec": {"finalizers": ["kubernetes"]},
                    "metadata": {"name": ns, "uid": f"ns-{ns}", "creationTimestamp": timestamp()},
                    "status": {"phase": "Active"},
                },
            )

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _current(self, pod: Obj) -> Obj | None:
        meta = pod["metadata"]
        now = self.store.find("pods", meta["namespace"], meta["name"])
        return now if now is not None and now["metadata"]["uid"] == meta["uid"] else None

    # --- scheduler ------------------------------------------------------------------------

    def create_pod(self, namespace: str, body: Obj) -> Obj:
        self.store.get("namespaces", "", namespace)
        pod = self.store.create("pods", pods.new_pod(body, namespace))
        self.schedule()
        return self.store.get("pods", namespace, pod["metadata"]["name"])

    def schedule(self) -> None:
        """Bind every pending pod that fits somewhere; say why for the others."""
        for pod in self.store.list("pods"):
            spec, meta = pod["spec"], pod["metadata"]
            if spec.get("nodeName") or meta.get("deletionTimestamp"):
                continue
            reasons = {}
            if problem := claim_problem(self.store, pod):
                self._unschedulable(pod, pod_level_message(len(self.store.list("nodes")), problem))
                continue
            for node in self.store.list("nodes"):
                name = node["metadata"]["name"]
                on_node = [p for p in self.store.list("pods") if self._holds(p, name)]
                reasons[name] = why_not(pod, node, on_node)
                if not reasons[name]:
                    self._bind(pod, name)
                    break
            else:
                self._unschedulable(pod, failed_scheduling_message(reasons))

    def _unschedulable(self, pod: Obj, message: str) -> None:
        conditions = pod["status"].get("conditions") or [{}]
        if conditions[0].get("message") != message:
            pods.unschedulable(pod, message)
            self.store.update("pods", pod)
            events.record(
                self.store,
                pod,
                "FailedScheduling",
                message,
                warning=True,
                component="default-scheduler",
            )

    @staticmethod
    def _holds(pod: Obj, node_name: str) -> bool:
        ended = pod["status"].get("phase") in ("Succeeded", "Failed")
        return pod["spec"].get("nodeName") == node_name and not ended

    def _bind(self, pod: Obj, node_name: str) -> None:
        pods.scheduled(pod, node_name)
        self.store.update("pods", pod)
        meta = pod["metadata"]
        events.record(
            self.store,
            pod,
            "Scheduled",
            f"Successfully assigned {meta['namespace']}/{meta['name']} to {node_name}",
            component="default-scheduler",
        )
        mounts = pod_mounts(self.store, self.root, pod)
        kubelet = Kubelet(Sandbox(self.root, pod, self.networks, mounts))
        self.kubelets[meta["uid"]] = kubelet
        kubelet.task = self.spawn(self._run(pod, kubelet))

    # --- kubelet --------------------------------------------------------------------------

    async def _run(self, pod: Obj, kubelet: Kubelet) -> None:
        container = pod["spec"]["containers"][0]
        await kubelet.sandbox.make_network()
        restarts = 0
        code: int | None
        while True:
            events.record(
                self.store,
                pod,
                "Pulled",
                f'Container image "{container["image"]}" already present on machine',
            )
            try:
                main = await kubelet.sandbox.start_main(container)
            except OSError as e:  # the runtime's StartError: no such command, not executable
                main, code = None, 128
                message = f"failed to start container {container['name']}: {e}"
                events.record(self.store, pod, "Failed", message, warning=True)
            else:
                code = None
            now = self._current(pod)
            if now is None or kubelet.ending:
                return
            if code is None:
                pods.running(now, kubelet.sandbox.ip, restarts)
                self.store.update("pods", now)
                events.record(self.store, now, "Started", f"Started container {container['name']}")
                if main is None:
                    return
                code = await main.wait()
            if kubelet.ending:
                return
            # the container's init is gone: so is everything else in it, execs included
            await kubelet.sandbox.stop(0)
            now = self._current(pod)
            if now is None:
                return
            policy = now["spec"]["restartPolicy"]
            if policy == "Always" or (policy == "OnFailure" and code != 0):
                restarts += 1
                await asyncio.sleep(RESTART_DELAY)
                continue
            pods.terminated(now, code if code >= 0 else 128 - code)
            self.store.update("pods", now)
            self.schedule()  # its requests are free again
            return

    async def delete_pod(self, namespace: str, name: str, grace: int | None = None) -> Obj:
        """Mark the pod (deletionTimestamp), stop its processes within the grace period, then
        remove it; a pod no kubelet runs goes at once, as the API server does."""
        pod = self.store.get("pods", namespace, name)
        meta = pod["metadata"]
        if meta.get("deletionTimestamp"):
            return pod
        kubelet = self.kubelets.get(meta["uid"])
        if kubelet is None:
            gone = self.store.delete("pods", namespace, name)
            self.schedule()
            return gone
        grace = pod["spec"]["terminationGracePeriodSeconds"] if grace is None else grace
        meta["deletionTimestamp"] = timestamp(time.time() + grace)
        meta["deletionGracePeriodSeconds"] = grace
        self.store.update("pods", pod)
        kubelet.ending = True
        events.record(
            self.store, pod, "Killing", f"Stopping container {pod['spec']['containers'][0]['name']}"
        )
        self.spawn(self._finish_deletion(pod, kubelet, grace))
        return copy.deepcopy(pod)

    async def _finish_deletion(self, pod: Obj, kubelet: Kubelet, grace: float) -> None:
        await self._stop_kubelet(pod, kubelet, grace)
        if self._current(pod) is not None:
            self.store.delete("pods", pod["metadata"]["namespace"], pod["metadata"]["name"])
        self.schedule()

    async def _stop_kubelet(self, pod: Obj, kubelet: Kubelet, grace: float) -> None:
        kubelet.ending = True
        if kubelet.task is not None:
            kubelet.task.cancel()
        await kubelet.sandbox.stop(grace)
        await kubelet.sandbox.remove()
        self.kubelets.pop(pod["metadata"]["uid"], None)

    # --- knobs ----------------------------------------------------------------------------

    async def evict(
        self, namespace: str, name: str, message: str = "The node was low on resource: memory."
    ) -> Obj:
        """What the kubelet does under node pressure: kill the pod's processes at once and
        leave it Failed with reason Evicted (it stays listed until someone deletes it)."""
        pod = self.store.get("pods", namespace, name)
        kubelet = self.kubelets.get(pod["metadata"]["uid"])
        if kubelet is not None:
            await self._stop_kubelet(pod, kubelet, 0)
        now = self._current(pod) or pod
        pods.terminated(now, 137, "Evicted", message)
        self.store.update("pods", now)
        events.record(self.store, now, "Evicted", message, warning=True)
        self.schedule()
        return now

    def add_node(self, node: Obj) -> Obj:
        added = self.store.create("nodes", node)
        self.schedule()
        return added

    async def close(self) -> None:
        """Stop every pod's processes and remove every sandbox; end every watch."""
        self.store.close_watches()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for uid, kubelet in list(self.kubelets.items()):
            kubelet.ending = True
            await kubelet.sandbox.stop(0)
            await kubelet.sandbox.remove()
            self.kubelets.pop(uid, None)
        shutil.rmtree(self.root / "pods", ignore_errors=True)
