"""What a network namespace per local node costs, beside a plain local node launch (root).

In one process, on this machine's local provider: a one-node ``launch`` to the agent answering
(then ``terminate``), alternately with the nodes sharing the machine's network and with a
namespace each, ``ROUNDS`` times; ``NodeNetworks.ensure`` of a node alone with the subnet's
switch already up (what every node pays), and once for the first node, which also makes the
switch and its outbound rule. Printed as medians and ratios to the plain launch.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path

import anyio

from stixd.agent_bundle import build_agent_zipapp
from stixd.providers.base import ProvisionRequest
from stixd.providers.local.netns import NodeNetworks, remove_under, unavailable_reason
from stixd.providers.local.networked import NamespacedLocalProvider
from stixd.providers.local.provider import LocalProvider

ROUNDS = 5
SUBNET = "10.179.0.0/24"  # a switch of its own, so the first-node figure is a first node


async def _launch(provider: LocalProvider, pyz: Path, cluster: str) -> float:
    started = time.perf_counter()
    await provider.launch(ProvisionRequest(cluster, 1, pyz))
    took = time.perf_counter() - started
    await provider.terminate(cluster)
    return took


def _ensure(networks: NodeNetworks, node: Path) -> float:
    started = time.perf_counter()
    networks.ensure(node)
    return time.perf_counter() - started


async def measure(home: Path, run_dir: Path) -> None:
    pyz = build_agent_zipapp(home / "agent")
    networks = NodeNetworks(SUBNET, run_dir=run_dir)
    plain, spaced = LocalProvider(home), NamespacedLocalProvider(home, network=networks)
    first = _ensure(networks, home / "first" / "node-0")  # the switch comes with it
    shared_s, own_s, alone_s = [], [], []
    for i in range(ROUNDS):
        shared_s.append(await _launch(plain, pyz, f"plain{i}"))
        own_s.append(await _launch(spaced, pyz, f"own{i}"))
        alone_s.append(_ensure(networks, home / "alone" / f"node-{i}"))
    base = statistics.median(shared_s)
    own, alone = statistics.median(own_s), statistics.median(alone_s)
    print(f"plain local node launch      {base * 1000:7.1f} ms   1.00")
    print(f"namespaced node launch       {own * 1000:7.1f} ms   {own / base:.2f}")
    print(f"a node's namespace alone     {alone * 1000:7.1f} ms   {alone / base:.3f}")
    print(f"first node, with its switch  {first * 1000:7.1f} ms   {first / base:.3f}")


def main() -> None:
    why = unavailable_reason()
    if why is not None:
        print(f"skipped: node namespaces need root and `ip` ({why})")
        return
    home = Path(tempfile.mkdtemp(prefix="stxbnet", dir="/tmp"))
    run_dir = home / "net"
    try:
        anyio.run(measure, home, run_dir)
    finally:
        remove_under(home, run_dir=run_dir)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
