"""The fake's etcd: objects by resource, one resourceVersion counter, a bounded history per
resource and the watchers it feeds. A watch from a version older than the history answers
410 Expired, as the API server does once etcd has compacted."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
from collections import deque
from collections.abc import Callable

from tests.kube_fake.meta import ApiError, Obj, not_found

HISTORY = 1000


@dataclasses.dataclass(eq=False)
class Watcher:
    resource: str
    namespace: str | None
    accepts: Callable[[Obj], bool]
    queue: asyncio.Queue[tuple[str, Obj] | None] = dataclasses.field(default_factory=asyncio.Queue)


class Store:
    def __init__(self) -> None:
        self.version = 1
        self._objects: dict[str, dict[tuple[str, str], Obj]] = {}
        self._history: dict[str, deque[tuple[int, str, Obj]]] = {}
        self._compacted = 0  # watches from before this version are expired, for every resource
        self._floor: dict[str, int] = {}  # ... and, per resource, from before its oldest kept event
        self._watchers: set[Watcher] = set()

    def get(self, resource: str, namespace: str, name: str) -> Obj:
        try:
            return self._objects.get(resource, {})[(namespace, name)]
        except KeyError:
            raise not_found(resource, name) from None

    def find(self, resource: str, namespace: str, name: str) -> Obj | None:
        return self._objects.get(resource, {}).get((namespace, name))

    def list(self, resource: str, namespace: str | None = None) -> list[Obj]:
        items = self._objects.get(resource, {}).values()
        return [
            o for o in items if namespace is None or o["metadata"].get("namespace") == namespace
        ]

    def create(self, resource: str, obj: Obj) -> Obj:
        key = (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
        if key in self._objects.get(resource, {}):
            raise ApiError(
                409,
                "AlreadyExists",
                f'{resource} "{key[1]}" already exists',
                {"name": key[1], "kind": resource},
            )
        return self._write(resource, obj, "ADDED")

    def update(self, resource: str, obj: Obj) -> Obj:
        return self._write(resource, obj, "MODIFIED")

    def delete(self, resource: str, namespace: str, name: str) -> Obj:
        obj = self._objects.get(resource, {}).pop((namespace, name), None)
        if obj is None:
            raise not_found(resource, name)
        self.version += 1
        gone = copy.deepcopy(obj)
        gone["metadata"]["resourceVersion"] = str(self.version)
        self._publish(resource, "DELETED", gone)
        return gone

    def _write(self, resource: str, obj: Obj, kind: str) -> Obj:
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)
        key = (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
        self._objects.setdefault(resource, {})[key] = obj
        self._publish(resource, kind, copy.deepcopy(obj))
        return obj

    def _publish(self, resource: str, kind: str, obj: Obj) -> None:
        history = self._history.setdefault(resource, deque(maxlen=HISTORY))
        if len(history) == HISTORY:
            self._floor[resource] = history[0][0]
        history.append((self.version, kind, obj))
        for w in list(self._watchers):
            if w.resource == resource and self._visible(w, obj):
                w.queue.put_nowait((kind, obj))

    @staticmethod
    def _visible(w: Watcher, obj: Obj) -> bool:
        in_ns = w.namespace is None or obj["metadata"].get("namespace") == w.namespace
        return in_ns and w.accepts(obj)

    @property
    def compacted(self) -> int:
        """The version of the last compaction: what is older is no longer served."""
        return self._compacted

    def compact(self) -> None:
        """Forget every history, as etcd's compaction does: older watches then get 410."""
        self._compacted = self.version
        self._history.clear()

    def watch(
        self,
        resource: str,
        namespace: str | None,
        accepts: Callable[[Obj], bool],
        since: int | None,
    ) -> Watcher:
        """A watcher fed from now on, primed with what a client at `since` has not seen yet
        (everything present as ADDED when `since` is None, as for resourceVersion=0)."""
        w = Watcher(resource, namespace, accepts)
        if since is None:
            for obj in self.list(resource, namespace):
                if accepts(obj):
                    w.queue.put_nowait(("ADDED", copy.deepcopy(obj)))
        else:
            floor = max(self._compacted, self._floor.get(resource, 0))
            if since < floor:
                raise ApiError(410, "Expired", f"too old resource version: {since} ({floor})")
            for version, kind, obj in self._history.get(resource, ()):
                if version > since and self._visible(w, obj):
                    w.queue.put_nowait((kind, obj))
        self._watchers.add(w)
        return w

    def unwatch(self, w: Watcher) -> None:
        self._watchers.discard(w)

    def close_watches(self) -> None:
        for w in self._watchers:
            w.queue.put_nowait(None)
        self._watchers.clear()
