"""The ``ssh`` registry entry: pools come from ssh_node_pools.yaml, so no config section."""

from __future__ import annotations

from stixd.providers.registry import BuildContext, Built, InfraEntry
from stixd.providers.ssh.meta import META


def build(ctx: BuildContext) -> Built:
    from stixd.providers.ssh.provider import SshProvider

    return Built(SshProvider(ctx.home, {}, log=ctx.log))


ENTRY = InfraEntry(META, None, build)
