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
    why = unavailable_reason()
    # made in every mode: nodes that got a namespace before a config change are still found
    network = NodeNetworks(section.subnet, outbound=section.outbound, refused=why)
    if section.network == "host":
        shared = LocalProvider(ctx.home, network=network, shared_why="local.network is host")
        return Built(shared)
    if why is not None and section.network == "auto":
        ctx.log.info("local_nodes_share_the_network", why=why)
        return Built(LocalProvider(ctx.home, network=network, shared_why=why))
    # with network: namespace where it cannot be, each launch fails saying why
    resolver = node_resolver()
    return Built(NamespacedLocalProvider(ctx.home, network=network, resolver=resolver))


ENTRY = InfraEntry(META, LocalConfig, build)
