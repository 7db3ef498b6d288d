"""Look-ups of many clusters that come together share one EC2 call per region.

A daemon asks EC2 about its clusters all at once after a restart (every actor reconciles), on
``status --refresh`` and on every health check (the cluster actors' checks come due together:
see ``schedule_health``). One call per cluster would cost N round trips and N of the region's
request budget every ten seconds, and make EC2 filter every instance of the account N times.
Here each kind of look-up (a cluster's instances, its disks' sizes, its spot instances'
interruption notices) waits a moment (``GATHER_S``) for others of its region, then goes out
as one call whose filter lists all their keys (clusters, volumes, instances), and each caller
gets its own keys' answers back.

A look-up only ever joins a call that has not started yet, never one in flight (that call may
have been answered before what the look-up wants to see happened), so every answer is as fresh
as a call of its own; look-ups arriving while a call is in flight go together in the next one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Collection
from typing import Generic, TypeVar

import anyio

from stixd.providers.aws import instances
from stixd.providers.aws.client import Ec2Clients
from stixd.providers.aws.instances import Instance

GATHER_S = 0.05
"""How long a look-up waits for others of its region before its call goes out: the health
checks of many clusters come due at one instant but reach the provider over a few scheduling
steps; a short wait, small beside an EC2 round trip, takes them all into one call."""

V = TypeVar("V")
Fetch = Callable[[str, list[str]], Awaitable[dict[str, V]]]
"""(region, keys) → what EC2 says of each key it knows."""


@dataclasses.dataclass(eq=False)
class _Call(Generic[V]):
    keys: set[str] = dataclasses.field(default_factory=set)
    done: anyio.Event = dataclasses.field(default_factory=anyio.Event)
    found: dict[str, V] | None = None
    error: Exception | None = None


class Shared(Generic[V]):
    """One kind of look-up, whose concurrent askers of a region share its calls."""

    def __init__(self, fetch: Fetch[V], gather_s: float = GATHER_S) -> None:
        self.fetch = fetch
        self.gather_s = gather_s
        self._next: dict[str, _Call[V]] = {}
        """Per region, the call that look-ups can still join."""
        self._turn: dict[str, anyio.Lock] = {}
        """Per region, held by the call in flight."""

    async def get(self, region: str, keys: Collection[str]) -> dict[str, V]:
        """What EC2 says of each of ``keys`` (a key it does not know is left out)."""
        if not keys:
            return {}
        while True:
            call = self._next.get(region)
            if call is None:
                call = self._next[region] = _Call()
                call.keys.update(keys)
                await self._make(region, call)
            else:
                call.keys.update(keys)
                await call.done.wait()
            if call.error is not None:
                raise call.error
            if call.found is not None:
                return {k: call.found[k] for k in keys if k in call.found}
            # the look-up that made the call was cancelled before it was answered: ask again

    async def _make(self, region: str, call: _Call[V]) -> None:
        """Wait for the call in flight, let look-ups of this moment join, then ask EC2."""
        try:
            async with self._turn.setdefault(region, anyio.Lock()):
                await anyio.sleep(self.gather_s)  # look-ups that come together join this call
                if self._next.get(region) is call:
                    del self._next[region]
                try:
                    call.found = await self.fetch(region, sorted(call.keys))
                except Exception as exc:  # every look-up of the call gets the error
                    call.error = exc
        finally:
            if self._next.get(region) is call:
                del self._next[region]
            call.done.set()


class ClusterListing:
    """The provider's shared look-ups of clusters that are not being made."""

    def __init__(self, ec2: Ec2Clients, user: str, gather_s: float = GATHER_S) -> None:
        async def clusters(region: str, names: list[str]) -> dict[str, list[Instance]]:
            return await instances.find_clusters(ec2, region, names, user)

        async def volumes(region: str, ids: list[str]) -> dict[str, int]:
            return await instances.volume_sizes(ec2, region, ids)

        async def notices(region: str, ids: list[str]) -> dict[str, str]:
            return await instances.interruption_notices(ec2, region, ids)

        self._clusters = Shared(clusters, gather_s)
        self._volumes = Shared(volumes, gather_s)
        self._notices = Shared(notices, gather_s)

    async def find(self, region: str, cluster: str) -> list[Instance]:
        """The cluster's instances that are not terminated, by rank (as ``instances.find``)."""
        found = await self._clusters.get(region, [cluster])
        return list(found.get(cluster, []))

    async def disk_sizes(self, region: str, insts: list[Instance]) -> dict[str, int]:
        """Instance id → its root volume's size in GB (what it is now, resized or not)."""
        by_volume = {i.root_volume: i.id for i in insts if i.root_volume}
        sizes = await self._volumes.get(region, list(by_volume))
        return {by_volume[v]: size for v, size in sizes.items()}

    async def interruption_notices(self, region: str, ids: list[str]) -> dict[str, str]:
        """Spot instance id → its interruption notice (``code: message``), where it has one."""
        return await self._notices.get(region, ids)
