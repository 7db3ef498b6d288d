"""The ``fake`` registry entry: built only when its config section says ``enabled: true``."""

from __future__ import annotations

from stixd.providers.fake.config import FakeConfig
from stixd.providers.fake.meta import META
from stixd.providers.registry import BuildContext, Built, InfraEntry


def build(ctx: BuildContext) -> Built | None:
    from stixd.providers.fake.provider import catalog_root, from_config

    cfg = ctx.section if isinstance(ctx.section, FakeConfig) else FakeConfig()
    if not cfg.enabled:  # tests and benchmarks only
        return None
    return Built(from_config(ctx.home, cfg, ctx.agent_build), [catalog_root(ctx.home)])


ENTRY = InfraEntry(META, FakeConfig, build)
