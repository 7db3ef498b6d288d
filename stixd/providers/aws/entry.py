"""The ``aws`` registry entry: its metadata, config section and factory."""

from __future__ import annotations

from stixd.providers.aws.config import AwsConfig
from stixd.providers.aws.meta import META
from stixd.providers.registry import BuildContext, Built, InfraEntry


def build(ctx: BuildContext) -> Built:
    from stixd.providers.aws.provider import AwsProvider

    cfg = ctx.section if isinstance(ctx.section, AwsConfig) else AwsConfig()
    return Built(
        AwsProvider(ctx.home, log=ctx.log, ssh_user=cfg.ssh_user, vpc_name=cfg.vpc_name, config=cfg)
    )


ENTRY = InfraEntry(META, AwsConfig, build)
