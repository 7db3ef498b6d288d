"""The ``fake`` registry entry: built only when its config section says ``enabled: true``."""

from __future__ import annotations

from stixd.providers.fake.config import FakeConfig
from stixd.providers.fake.meta import META
from stixd.providers.registry import BuildContext, Built, InfraEntry


def build(ctx: BuildContext) -> Built | None:
    from stixd.providers.fake.provider import NAME, FakeProvider, catalog_root, settings

    cfg = ctx.section if isinstance(ctx.section, FakeConfig) else FakeConfig()
    if not cfg.enabled:  # tests and benchmarks only
        return None
    kw = settings(ctx.home, cfg)
    if cfg.nodes == "memory":
        provider = FakeProvider(cfg.regions, build=ctx.agent_build, **kw)
        return Built(provider, [catalog_root(ctx.home)])
    from stixd.providers.fake.process import ProcessFakeProvider
    from stixd.providers.local.config import LocalConfig
    from stixd.providers.local.entry import node_provider

    # apart from local's clusters: `<home>/fake/clusters/<cluster>/node-<rank>`
    section = LocalConfig(network=cfg.network)
    nodes = node_provider(ctx.home / NAME, section, ctx.log, "fake.network")
    process = ProcessFakeProvider(cfg.regions, build=ctx.agent_build, nodes=nodes, **kw)
    return Built(process, [catalog_root(ctx.home)])


ENTRY = InfraEntry(META, FakeConfig, build)
