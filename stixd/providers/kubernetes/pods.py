"""A cluster's pods at the API server: made idempotently by name, listed and deleted by label,
and waited for until they run, failing over early when the scheduler says no node fits.

A pod the scheduler cannot place is Pending with a ``FailedScheduling`` event. Without an
autoscaler nothing will change that, so the wait ends at once with ``CapacityError`` carrying
the scheduler's own sentence (the launcher then tries the next context or cloud). With one, a
node may be on its way: the wait goes on up to ``provision_timeout``, telling each new event of
the pods as progress.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

import anyio

from stixd.providers.base import Block, CapacityError
from stixd.providers.kubernetes.api import KubeApi, KubeApiError, path
from stixd.providers.kubernetes.podspec import LABEL_CLUSTER, LABEL_RANK, cluster_selector, is_ours
from stixd.providers.kubernetes.shapes import as_map, get, maps
from stixd.providers.kubernetes.unplaced import Verdict, refuse_misconfigured, refused_as_made
from stixproto.errors import ProvisionError

Pod = dict[str, Any]
Progress = Callable[[str], None]

POLL_S = 0.25
EVENTS_EVERY_S = 1.0
"""How often a waiting launch reads its pods' events for progress (a call per pod)."""
START_WITHIN_S = 600.0
"""How long a scheduled pod may take to run (its image pulled, its container started)."""
SCHEDULE_WITHIN_MIN_S = 2.0
"""The least time a pod may wait for the scheduler's word before the launch fails over; past
that it waits ``provision_timeout`` (SkyPilot's meaning: a pod still unscheduled then is no
capacity, whatever the reason: no scheduler, a broken API, a queue)."""
GONE_WITHIN_S = 60.0
ENDED = ("Succeeded", "Failed")
IMAGE_ERRORS = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull")
CONFIG_ERRORS = ("CreateContainerConfigError", "CreateContainerError", "RunContainerError")


class PodFailed(ProvisionError):
    """A pod of the launch ended or cannot start; retrying it as it is will not help."""

    retryable = False


def rank_of(pod: Pod) -> int | None:
    text = as_map(get(pod, "metadata", "labels")).get(LABEL_RANK, "")
    return int(text) if isinstance(text, str) and text.isdigit() else None


def is_gone(pod: Pod) -> bool:
    """Ended, or being deleted: the pod is no node any more."""
    return bool(get(pod, "metadata", "deletionTimestamp")) or get(pod, "status", "phase") in ENDED


def fate(pod: Pod) -> str:
    """What became of a pod that is gone, in the API's words."""
    status = as_map(pod.get("status"))
    if get(pod, "metadata", "deletionTimestamp"):
        return "is being deleted"
    reason = " ".join(str(status.get("reason") or "").split())[:100]
    message = " ".join(str(status.get("message") or "").split())[:300]
    said = f": {reason}" if reason else ""
    said += f" ({message})" if message else ""
    return f"ended {str(status.get('phase', ''))[:64]}{said}".rstrip()


async def create(api: KubeApi, namespace: str, pod: Pod, cluster: str, owner: str) -> Pod:
    """Make ``pod``, or find it when one of that name exists and its labels say it is this
    home's pod of ``cluster`` at that rank (a retry after a crash); another's is refused."""
    name = pod["metadata"]["name"]
    try:
        return await api.call("POST", path("namespaces", namespace, "pods"), body=pod)
    except KubeApiError as exc:
        if (refusal := refused_as_made(exc, api.context, pod_failed=PodFailed)) is not None:
            raise refusal from None
        if exc.status != 409:
            raise
    found = await api.call("GET", path("namespaces", namespace, "pods", name))
    labels = as_map(get(found, "metadata", "labels"))
    if not is_ours(labels, cluster, owner, rank_of(pod)):
        theirs = labels.get(LABEL_CLUSTER)
        whose = f"of stix cluster {theirs}" if isinstance(theirs, str) else "not made by stix"
        raise PodFailed(
            f"pod {name} in namespace {namespace} of context {api.context} exists and is "
            f"{whose}, not this stix home's pod of cluster {cluster}; delete it or use another "
            "cluster name"
        )
    return found


def well_formed(answer: dict[str, Any]) -> list[dict[str, Any]]:
    """The items of a list answer that have a name, each with a ``status`` map (the API's
    answers are read as hostile: anything else is left out, never a KeyError later)."""
    items = answer.get("items")
    found = []
    for item in items if isinstance(items, list) else []:
        meta = item.get("metadata") if isinstance(item, dict) else None
        if isinstance(meta, dict) and isinstance(meta.get("name"), str):
            if not isinstance(item.get("status"), dict):
                item["status"] = {}
            found.append(item)
    return found


async def list_cluster(api: KubeApi, namespace: str, cluster: str, owner: str) -> list[Pod]:
    answer = await api.list_all(
        path("namespaces", namespace, "pods"),
        query={"labelSelector": cluster_selector(cluster, owner)},
    )
    return well_formed(answer)


async def delete(api: KubeApi, namespace: str, kind: str, name: str) -> None:
    """Delete one object; one already gone is fine."""
    try:
        await api.call("DELETE", path("namespaces", namespace, kind, name))
    except KubeApiError as exc:
        if exc.status != 404:
            raise


async def delete_cluster(api: KubeApi, namespace: str, cluster: str, owner: str) -> list[str]:
    """Delete every pod and service of ``cluster`` made by ``owner``; returns the pods still
    going away."""
    selector = {"labelSelector": cluster_selector(cluster, owner)}
    services = await api.list_all(path("namespaces", namespace, "services"), query=selector)
    going = []
    for pod in await list_cluster(api, namespace, cluster, owner):
        await delete(api, namespace, "pods", pod["metadata"]["name"])
        going.append(pod["metadata"]["name"])
    for service in well_formed(services):
        await delete(api, namespace, "services", service["metadata"]["name"])
    return going


async def wait_gone(
    api: KubeApi,
    namespace: str,
    cluster: str,
    owner: str,
    names: Sequence[str],
    *,
    ending: bool = False,
) -> None:
    """Until none of ``names`` is listed (their processes stopped), bounded. ``ending``: a pod
    still listed past the bound with a ``deletionTimestamp`` counts as gone (its processes end
    with its grace period, which ``pod_config`` may make long; the leak scan keeps watching),
    so ``down`` is not failed again and again by a pod that is on its way out."""
    with anyio.move_on_after(GONE_WITHIN_S):
        while True:
            listed = await list_cluster(api, namespace, cluster, owner)
            if not {p["metadata"]["name"] for p in listed} & set(names):
                return
            await anyio.sleep(POLL_S)
    left = [p for p in listed if p["metadata"]["name"] in names]
    if ending and all(p["metadata"].get("deletionTimestamp") for p in left):
        return
    raise ProvisionError(
        f"pods {', '.join(sorted(names))} in context {api.context} were still being deleted "
        f"after {GONE_WITHIN_S:g} s; run the command again"
    )


def _unschedulable(pod: Pod) -> str | None:
    """The scheduler's sentence when it could not place the pod (its PodScheduled condition)."""
    for cond in maps(get(pod, "status", "conditions")):
        if (cond.get("type"), cond.get("status"), cond.get("reason")) == (
            "PodScheduled",
            "False",
            "Unschedulable",
        ):
            said = str(cond.get("message") or "").strip().splitlines()
            return said[0][:500] if said else "no node fits the pod"
    return None


def _scheduled(pod: Pod) -> bool:
    """Placed on a node, or the scheduler said something of it (then ``_unschedulable``)."""
    return bool(get(pod, "spec", "nodeName")) or any(
        cond.get("type") == "PodScheduled" for cond in maps(get(pod, "status", "conditions"))
    )


def _cannot_start(pod: Pod) -> str | None:
    for status in maps(get(pod, "status", "containerStatuses")):
        waiting = as_map(get(status, "state", "waiting"))
        reason = waiting.get("reason") or ""
        if reason in IMAGE_ERRORS + CONFIG_ERRORS:
            message = str(waiting.get("message") or "").strip().splitlines()
            return f"{reason}{': ' + message[0][:300] if message else ''}"
    return None


@dataclasses.dataclass
class Waiter:
    """Waits for one launch's pods; ``progress`` hears each new event of theirs."""

    api: KubeApi
    namespace: str
    cluster: str
    owner: str
    autoscaler: str | None
    provision_timeout: float
    progress: Progress | None = None
    seen: set[tuple[str, str, str, str]] = dataclasses.field(default_factory=set)
    told_at: float | None = None
    judged: dict[str, Verdict] = dataclasses.field(default_factory=dict)

    async def running(self, names: Sequence[str]) -> dict[str, Pod]:
        """Every pod of ``names`` Running, by name."""
        began = time.monotonic()
        pending_since: float | None = None
        while True:
            listed = {
                p["metadata"]["name"]: p
                for p in await list_cluster(self.api, self.namespace, self.cluster, self.owner)
            }
            missing = [n for n in names if n not in listed]
            if missing:
                raise PodFailed(
                    f"pod {missing[0]} in context {self.api.context} was deleted during the launch"
                )
            for name in names:
                pod = listed[name]
                if is_gone(pod):
                    raise PodFailed(f"pod {name} in context {self.api.context} {fate(pod)}")
                if problem := _cannot_start(pod):
                    raise PodFailed(
                        f"pod {name} in context {self.api.context} cannot start: {problem}"
                    )
            waiting = [n for n in names if listed[n]["status"].get("phase") != "Running"]
            if not waiting:
                return listed
            unplaced = {n: m for n in waiting if (m := _unschedulable(listed[n])) is not None}
            await self._tell(waiting)
            if unplaced:
                pending_since = pending_since or time.monotonic()
                name, said = next(iter(unplaced.items()))
                await refuse_misconfigured(
                    self.api, name, said, autoscaler=self.autoscaler is not None, judged=self.judged
                )
                if self.autoscaler is None:
                    raise self._no_capacity(name, said, "no autoscaler is configured")
                if time.monotonic() - pending_since > self.provision_timeout:
                    raise self._no_capacity(
                        name, said, f"no node came within {self.provision_timeout:g} s"
                    )
            elif (unseen := [n for n in waiting if not _scheduled(listed[n])]) and (
                time.monotonic() - began > (within := self.schedule_within())
            ):
                raise self._no_capacity(
                    unseen[0], "no scheduler placed it", f"not scheduled within {within:g} s"
                )
            elif time.monotonic() - began > START_WITHIN_S + self.provision_timeout:
                raise ProvisionError(
                    f"pods of {self.cluster} in context {self.api.context} did not run within "
                    f"{START_WITHIN_S + self.provision_timeout:g} s; see `kubectl describe pod`"
                )
            await anyio.sleep(POLL_S)

    def schedule_within(self) -> float:
        """How long a pod may go without the scheduler's word (no node, no condition)."""
        return max(self.provision_timeout, SCHEDULE_WITHIN_MIN_S)

    def _no_capacity(self, name: str, said: str, why: str) -> CapacityError:
        context = self.api.context
        return CapacityError(
            f"Kubernetes context {context} cannot place pod {name} ({why}): {said}",
            Block(infra="kubernetes", region=context, reason=said),
        )

    async def _tell(self, names: Sequence[str]) -> None:
        """Each event of the waiting pods not told before, as progress."""
        now = time.monotonic()
        if self.progress is None or (self.told_at and now - self.told_at < EVENTS_EVERY_S):
            return
        self.told_at = now
        for name in names:
            try:
                answer = await self.api.list_all(
                    path("namespaces", self.namespace, "events"),
                    query={"fieldSelector": f"involvedObject.name={name}"},
                )
            except KubeApiError:
                return  # events are news, not the launch: a failed read is left out
            for event in maps(answer.get("items")):
                said = (
                    name,
                    str(event.get("reason") or "")[:100],
                    " ".join(str(event.get("message") or "").split())[:300],
                    str(event.get("count") or event.get("lastTimestamp") or ""),
                )
                if said not in self.seen:
                    self.seen.add(said)
                    self.progress(f"pod {name}: {said[1]}: {said[2]}")
