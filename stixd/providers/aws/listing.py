"""Look-ups of clusters' instances that run at the same time share one ``describe_instances``.

A daemon asks EC2 about each of its clusters at once after a restart (every actor reconciles)
and on ``status --refresh``: one call per cluster would cost N round trips and N of the
region's request budget, and each call makes EC2 filter every instance of the account. Here
the look-ups of one region that wait together go out as one call whose ``stix-cluster`` filter
lists all their clusters, and each gets its own cluster's instances back.

A look-up only ever joins a call that has not started yet, never one in flight (that call may
have been answered before what the look-up wants to see happened), so every answer is as fresh
as a call of its own; look-ups arriving while a call is in flight go together in the next one.
"""

from __future__ import annotations

import dataclasses

import anyio
import anyio.lowlevel

from stixd.providers.aws import instances
from stixd.providers.aws.client import Ec2Clients
from stixd.providers.aws.instances import Instance

MAX_CLUSTERS_PER_CALL = 200
"""EC2 takes up to 200 values in one filter."""


@dataclasses.dataclass(eq=False)
class _Call:
    clusters: set[str] = dataclasses.field(default_factory=set)
    done: anyio.Event = dataclasses.field(default_factory=anyio.Event)
    found: dict[str, list[Instance]] | None = None
    error: Exception | None = None


class ClusterListing:
    def __init__(self, ec2: Ec2Clients, user: str) -> None:
        self.ec2 = ec2
        self.user = user
        self._next: dict[str, _Call] = {}
        """Per region, the call that look-ups can still join."""
        self._turn: dict[str, anyio.Lock] = {}
        """Per region, held by the call in flight."""

    async def find(self, region: str, cluster: str) -> list[Instance]:
        """The cluster's instances that are not terminated, by rank (as ``instances.find``)."""
        while True:
            call = self._next.get(region)
            if call is None or len(call.clusters) >= MAX_CLUSTERS_PER_CALL:
                call = self._next[region] = _Call()
                call.clusters.add(cluster)
                await self._make(region, call)
            else:
                call.clusters.add(cluster)
                await call.done.wait()
            if call.error is not None:
                raise call.error
            if call.found is not None:
                return list(call.found.get(cluster, []))
            # the look-up that made the call was cancelled before it was answered: ask again

    async def _make(self, region: str, call: _Call) -> None:
        """Wait for the call in flight, let look-ups of this moment join, then ask EC2."""
        try:
            async with self._turn.setdefault(region, anyio.Lock()):
                await anyio.lowlevel.checkpoint()  # look-ups started together join this call
                if self._next.get(region) is call:
                    del self._next[region]
                try:
                    call.found = await instances.find_clusters(
                        self.ec2, region, sorted(call.clusters), self.user
                    )
                except Exception as exc:  # every look-up of the call gets the error
                    call.error = exc
        finally:
            if self._next.get(region) is call:
                del self._next[region]
            call.done.set()
