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
from tests.kube_fake.tls import Pki, certificates_or_tokens, secure, server_context

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


def write_kubeconfig(
    path: Path,
    server: str,
    context: str = CONTEXT,
    pki: Pki | None = None,
    client_certs: bool = False,
) -> None:
    """Written whole and renamed into place, so a reader never sees half of it; with ``pki``,
    trusting its CA (and, with ``client_certs``, as its client certificate), inline."""
    config = kubeconfig(server, context)
    if pki is not None:
        config = secure(config, pki, client_certs=client_certs)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump(config, sort_keys=False))
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
    pki: Pki | None = None,
    client_certs: bool = False,
) -> Served:
    """Serve a fresh fake cluster on 127.0.0.1:`port` (0: a free port), sandboxes under `root`;
    with `pod_networks`, each pod has a network namespace and an address of its own; with
    `pki`, over HTTPS (`tls.py`; `client_certs`: a client certificate authenticates)."""
    if pod_networks and (why := unavailable_reason()):
        raise RuntimeError(f"pods cannot have networks of their own here: {why}")
    networks = NodeNetworks(POD_SUBNET, outbound=False) if pod_networks else None
    kube = KubeFake(root, nodes, networks)
    authenticate = [bearer_tokens] + ([certificates_or_tokens()] if client_certs else [])
    app = web.Application(middlewares=[*authenticate, kube.faults.middleware(), statuses])
    services = Services(kube.store, load_balancer, load_balancer_delay)
    app.add_routes(Routes(kube, services).table())
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    tls = server_context(pki, client_certs=client_certs) if pki is not None else None
    site = web.TCPSite(runner, "127.0.0.1", port, ssl_context=tls)
    await site.start()
    bound = runner.addresses[0][1]
    scheme = "https" if tls is not None else "http"
    return Served(kube, services, runner, f"{scheme}://127.0.0.1:{bound}")
