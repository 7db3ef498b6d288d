"""The ``kubernetes`` registry entry: built unless its config section leaves it off
(``enabled: false``); without a context in the kubeconfig, or with one that cannot be read, it
is built all the same, so ``check`` and launches say how to set one up or what is wrong.
Reading the kubeconfig is YAML only; ``kubernetes_asyncio`` is imported when a context is first
used."""

from __future__ import annotations

import os

from stixd.providers.kubernetes.config import KubernetesConfig
from stixd.providers.kubernetes.meta import META
from stixd.providers.registry import BuildContext, Built, InfraEntry


def build(ctx: BuildContext) -> Built | None:
    from stixd.providers.kubernetes.contexts import (
        Clients,
        Kubeconfig,
        KubeconfigError,
        kubeconfig_paths,
        read_kubeconfig,
    )
    from stixd.providers.kubernetes.deferred import DeferredShell
    from stixd.providers.kubernetes.podspec import overridden_keys
    from stixd.providers.kubernetes.provider import KubernetesProvider

    cfg = ctx.section if isinstance(ctx.section, KubernetesConfig) else KubernetesConfig()
    if not cfg.enabled:
        return None
    for warning in overridden_keys(cfg.pod_config):
        ctx.log.warning("kubernetes_pod_config_overridden", warning=warning)
    try:
        kubeconfig = read_kubeconfig()
    except KubeconfigError as exc:
        ctx.log.warning("kubeconfig_unreadable", error=exc.message)
        # built all the same: `check` says why, and a fixed file is read again
        kubeconfig = Kubeconfig.broken(exc.message, kubeconfig_paths(os.environ))
    clients = Clients(kubeconfig, ctx.home / "kubernetes" / "certs", log=ctx.log)
    provider = KubernetesProvider(
        ctx.home,
        cfg,
        kubeconfig,
        lambda pod: DeferredShell(clients, pod),
        clients=clients,
        log=ctx.log,
    )
    return Built(provider, [provider.planning.catalog_dir])


ENTRY = InfraEntry(META, KubernetesConfig, build)
