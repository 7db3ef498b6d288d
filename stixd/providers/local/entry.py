"""The ``local`` registry entry: its metadata, config section and factory."""

from __future__ import annotations

from stixd.providers.local.config import LocalConfig
from stixd.providers.local.meta import META
from stixd.providers.registry import BuildContext, Built, InfraEntry


def build(ctx: BuildContext) -> Built:
    from stixd.providers.local.provider import LocalProvider

    return Built(LocalProvider(ctx.home))


ENTRY = InfraEntry(META, LocalConfig, build)
