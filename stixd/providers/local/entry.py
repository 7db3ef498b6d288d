"""The ``local`` registry entry: its metadata, config section and factory."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from stixd.providers.local.config import LocalConfig
from stixd.providers.local.meta import META
from stixd.providers.registry import BuildContext, Built, InfraEntry

if TYPE_CHECKING:
    import structlog

    from stixd.providers.local.provider import LocalProvider


def build(ctx: BuildContext) -> Built:
    section = ctx.section if isinstance(ctx.section, LocalConfig) else LocalConfig()
    return Built(node_provider(ctx.home, section, ctx.log))


def node_provider(
    home: Path,
    section: LocalConfig,
    log: structlog.stdlib.BoundLogger,
    setting: str = "local.network",
) -> LocalProvider:
    """Local nodes under ``home/clusters``, each with a network of its own as ``section`` says
    (also the machinery of the fake provider's process nodes, whose ``setting`` says so)."""
    from stixd.providers.local.netns import NodeNetworks, node_resolver, unavailable_reason
    from stixd.providers.local.networked import NamespacedLocalProvider
    from stixd.providers.local.provider import LocalProvider

    why = unavailable_reason()
    # made in every mode: nodes that got a namespace before a config change are still found
    network = NodeNetworks(section.subnet, outbound=section.outbound, refused=why)
    if section.network == "host":
        return LocalProvider(home, network=network, shared_why=f"{setting} is host")
    if why is not None and section.network == "auto":
        log.info("local_nodes_share_the_network", why=why)
        return LocalProvider(home, network=network, shared_why=why)
    # with network: namespace where it cannot be, each launch fails saying why
    return NamespacedLocalProvider(home, network=network, resolver=node_resolver())


ENTRY = InfraEntry(META, LocalConfig, build)
