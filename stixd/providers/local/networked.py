"""The local provider when its nodes have namespaces: it also finds the namespaces no cluster
owns (a daemon killed between making one and recording its cluster, a test home deleted under
a running cluster) and removes them, through the daemon's leak reconciler."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Collection, Sequence

import anyio

from stixd.providers.abilities import Leak, LeakPolicy
from stixd.providers.local.netns import NodeNet, NodeNetworks
from stixd.providers.local.provider import LocalProvider

REGION = "local"
KIND = "instance"
"""What a leaked node is: its namespace and whatever still runs in it, removed together as a
cloud's instance is."""


class NamespacedLocalProvider(LocalProvider):
    network: NodeNetworks

    def leak_policy(self) -> LeakPolicy:
        return LeakPolicy(check_every_s=60.0, min_age_s=30.0, terminate=True)

    def regions(self) -> list[str]:
        return [REGION]

    async def leaks(
        self, regions: Sequence[str], live: Collection[str], young_s: float
    ) -> list[Leak]:
        return await anyio.to_thread.run_sync(self._leaks, set(live), young_s)

    def _leaks(self, live: set[str], young_s: float) -> list[Leak]:
        now = time.time()
        found = []
        for net in self.network.records():
            if now - net.created < young_s or not self._orphan(net, live):
                continue
            age = now - net.created
            found.append(Leak(KIND, net.name, REGION, net.node_dir.parent.name, age_s=age))
        found += [Leak(KIND, name, REGION, "") for name in self.network.unrecorded()]
        return found

    def _orphan(self, net: NodeNet, live: Collection[str]) -> bool:
        """Ours and of no live cluster; or another home's whose node is gone, nothing inside."""
        if net.node_dir.parent.parent == self.root:
            return net.node_dir.parent.name not in live
        return not net.node_dir.exists() and not self.network.pids_in(net)

    async def clean_leaks(self, leaks: Sequence[Leak]) -> None:
        await anyio.to_thread.run_sync(self._clean, [x.id for x in leaks if x.kind == KIND])

    def _clean(self, names: list[str]) -> None:
        records = {net.name: net for net in self.network.records()}
        for name in names:
            net = records.get(name)
            if net is None:
                self.network.remove_unrecorded(name)
                continue
            for pid in self.network.pids_in(net):  # a leaked node's processes leak with it
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            self.network.remove(net)
