"""A list in pages, as the API server cuts it: ``limit=N`` answers at most N items and, when
more are left, ``metadata.continue``, an opaque token to ask for the rest. Every page of one
list is read from the same snapshot (the first page's resourceVersion, as etcd serves it);
a token older than the last compaction, or whose snapshot the fake no longer keeps, is
answered 410 Expired with a token that goes on from the current state (the server's
"inconsistent continue"). Without selectors a page also says ``remainingItemCount``.

The token is what the server's is: URL-safe base64, unpadded, of
``{"v": "meta.k8s.io/v1", "rv": N, "start": KEY}``, KEY the next object's key."""

from __future__ import annotations

import base64
import binascii
import copy
import json
from collections import OrderedDict
from collections.abc import Callable

from tests.kube_fake.meta import ApiError, Obj
from tests.kube_fake.store import Store

SNAPSHOTS = 16
"""Lists the fake keeps the snapshot of for their next page (the oldest is forgotten)."""
LATEST = -1
"""The ``rv`` of an inconsistent token: go on from whatever the store holds now."""
EXPIRED = (
    "The provided continue parameter is too old to display a consistent list result. You can "
    "start a new list without the continue parameter, or use the continue token in this "
    "response to retrieve the remainder of the results. Continuing with the provided token "
    "results in an inconsistent list - objects that were created, modified, or deleted "
    "between the time the first chunk was returned and now may show up in the list."
)


class Expired(ApiError):
    """410 Expired, carrying the token that goes on inconsistently in its metadata."""

    def __init__(self, token: str) -> None:
        super().__init__(410, "Expired", EXPIRED)
        self.token = token

    def status(self) -> Obj:
        return {**super().status(), "metadata": {"continue": self.token}}


def key(obj: Obj) -> str:
    meta = obj["metadata"]
    return f"{meta.get('namespace', '')}/{meta['name']}"


def encode(rv: int, start: str) -> str:
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": start}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(token: str) -> tuple[int, str]:
    try:
        raw = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        rv, start = raw["rv"], raw["start"]
        if (
            raw.get("v") != "meta.k8s.io/v1"
            or not isinstance(rv, int)
            or not isinstance(start, str)
        ):
            raise ValueError("unknown version")
    except (binascii.Error, ValueError, KeyError, TypeError) as exc:
        raise ApiError(400, "BadRequest", f"continue key is not valid: {exc}") from None
    return rv, start


def _limit(query: dict[str, str]) -> int:
    given = query.get("limit", "")
    if not given:
        return 0
    try:
        return max(int(given), 0)
    except ValueError:
        raise ApiError(400, "BadRequest", f"invalid limit: {given!r}") from None


class Pager:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._snapshots: OrderedDict[tuple[str, int], list[Obj]] = OrderedDict()

    def page(
        self,
        resource: str,
        namespace: str | None,
        accepts: Callable[[Obj], bool],
        query: dict[str, str],
    ) -> tuple[list[Obj], Obj]:
        """(this page's items, the list's metadata) for a list request's ``query``."""
        limit, token = _limit(query), query.get("continue", "")
        if token:
            rv, start = decode(token)
            objects = self._resumed(resource, rv, start)
        else:
            rv, start, objects = self.store.version, "", self._current(resource)
        latest = rv == LATEST
        if latest:
            rv = self.store.version
        mine = [
            o
            for o in objects
            if key(o) >= start
            and (namespace is None or o["metadata"].get("namespace") == namespace)
            and accepts(o)
        ]
        meta: Obj = {"resourceVersion": str(rv)}
        if not limit or len(mine) <= limit:
            return mine, meta
        page, rest = mine[:limit], mine[limit:]
        if not token:
            self._keep(resource, rv, objects)
        meta["continue"] = encode(LATEST if latest else rv, key(rest[0]))
        if not any(query.get(s) for s in ("labelSelector", "fieldSelector")):
            meta["remainingItemCount"] = len(rest)
        return page, meta

    def _current(self, resource: str) -> list[Obj]:
        return sorted(self.store.list(resource), key=key)

    def _resumed(self, resource: str, rv: int, start: str) -> list[Obj]:
        if rv == LATEST:
            return self._current(resource)
        kept = self._snapshots.get((resource, rv))
        if kept is None or rv < self.store.compacted:
            raise Expired(encode(LATEST, start))
        self._snapshots.move_to_end((resource, rv))
        return kept

    def _keep(self, resource: str, rv: int, objects: list[Obj]) -> None:
        if (resource, rv) not in self._snapshots:
            self._snapshots[(resource, rv)] = copy.deepcopy(objects)
        while len(self._snapshots) > SNAPSHOTS:
            self._snapshots.popitem(last=False)
