"""Start and stop the fake API server: an aiohttp app on 127.0.0.1 and a kubeconfig that points
kubectl and kubernetes-asyncio at it."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import yaml
from aiohttp import web

from stixd.providers.local.netns import NodeNetworks, unavailable_reason
from tests.kube_fake.auth import TOKEN, bearer_tokens
from tests.kube_fake.cluster import KubeFake
from tests.kube_fake.meta import Obj
from tests.kube_fake.routes import Routes, statuses
from tests.kube_fake.sandbox import POD_SUBNET
from tests.kube_fake.services import Services

CONTEXT = "kube-fake"


def kubeconfig(server: str, context: str = CONTEXT, namespace: str = "default") -> Obj:
    """One cluster, user and context, all named `context`: several fakes' files merge
    (KUBECONFIG=a:b) into one config with a context per fake."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": context, "cluster": {"server": server}}],
        "users": [{"name": context, "user": {"token": TOKEN}}],
        "contexts": [
            {
                "name": context,
                "context": {"cluster": context, "user": context, "namespace": namespace},
            }
        ],
        "current-context": context,
        "preferences": {},
    }


def write_kubeconfig(path: Path, server: str, context: str = CONTEXT) -> None:
    """Written whole and renamed into place, so a reader never sees half of it."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump(kubeconfig(server, context), sort_keys=False))
    os.replace(tmp, path)


@dataclasses.dataclass
class Served:
    kube: KubeFake
    services: Services
    runner: web.AppRunner
    url: str

    async def close(self) -> None:
        """End the watches and every pod's processes first, then the HTTP side."""
        await self.kube.close()
        await self.services.close()
        await self.runner.cleanup()


async def serve(
    root: Path,
    port: int = 0,
    nodes: list[Obj] | None = None,
    load_balancer: bool = True,
    pod_networks: bool = False,
    load_balancer_delay: float = 0.0,
) -> Served:
    """Serve a fresh fake cluster on 127.0.0.1:`port` (0: a free port), sandboxes under `root`;
    with `pod_networks`, each pod has a network namespace and an address of its own."""
    if pod_networks and (why := unavailable_reason()):
        raise RuntimeError(f"pods cannot have networks of their own here: {why}")
    networks = NodeNetworks(POD_SUBNET, outbound=False) if pod_networks else None
    kube = KubeFake(root, nodes, networks)
    app = web.Application(middlewares=[bearer_tokens, kube.faults.middleware(), statuses])
    services = Services(kube.store, load_balancer, load_balancer_delay)
    app.add_routes(Routes(kube, services).table())
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    bound = runner.addresses[0][1]
    return Served(kube, services, runner, f"http://127.0.0.1:{bound}")
