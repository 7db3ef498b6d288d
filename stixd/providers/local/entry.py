"""The ``local`` registry entry: its metadata, config section and factory."""

from __future__ import annotations

from stixd.providers.local.config import LocalConfig
from stixd.providers.local.meta import META
from stixd.providers.registry import BuildContext, Built, InfraEntry


def build(ctx: BuildContext) -> Built:
    from stixd.providers.local.netns import NodeNetworks, node_resolver, unavailable_reason
    from stixd.providers.local.networked import NamespacedLocalProvider
    from stixd.providers.local.provider import LocalProvider

    section = ctx.section if isinstance(ctx.section, LocalConfig) else LocalConfig()
    if section.network == "host":
        return Built(LocalProvider(ctx.home, shared_why="local.network is host"))
    why = unavailable_reason()
    if why is not None and section.network == "auto":
        ctx.log.info("local_nodes_share_the_network", why=why)
        return Built(LocalProvider(ctx.home, shared_why=why))
    # with network: namespace where it cannot be, the first launch fails saying why
    network = NodeNetworks(section.subnet, outbound=section.outbound, refused=why)
    return Built(NamespacedLocalProvider(ctx.home, network=network, resolver=node_resolver()))


ENTRY = InfraEntry(META, LocalConfig, build)
