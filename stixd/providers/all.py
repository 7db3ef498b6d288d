"""The registry: every infra stix knows, in the order `check` lists them.

With `stixd.daemon` this is the composition root, the only code that names concrete providers.
Adding a provider is a folder under `stixd/providers/` and one line here (see README.md,
"Adding a provider"). An entry without a factory is planned, not launchable: the planner
prices it from its catalog and `check` lists it as not supported yet.
"""

from __future__ import annotations

from stixd.planner.infra_meta import Infras
from stixd.providers.aws import entry as aws
from stixd.providers.azure import meta as azure
from stixd.providers.fake import entry as fake
from stixd.providers.gcp import meta as gcp
from stixd.providers.hyperbolic import meta as hyperbolic
from stixd.providers.kubernetes import entry as kubernetes
from stixd.providers.lambda_cloud import meta as lambda_cloud
from stixd.providers.local import entry as local
from stixd.providers.mithril import meta as mithril
from stixd.providers.nebius import meta as nebius
from stixd.providers.registry import InfraEntry, planner_table
from stixd.providers.runpod import meta as runpod
from stixd.providers.ssh import entry as ssh

__all__ = ["ENTRIES", "PLANNED", "infras"]

PLANNED = "planned, not launchable"

ENTRIES: tuple[InfraEntry, ...] = (
    local.ENTRY,
    ssh.ENTRY,
    aws.ENTRY,
    fake.ENTRY,
    InfraEntry(gcp.META, note=PLANNED),
    InfraEntry(azure.META, note=PLANNED),
    kubernetes.ENTRY,
    InfraEntry(nebius.META, note=PLANNED),
    InfraEntry(lambda_cloud.META, note=PLANNED),
    InfraEntry(runpod.META, note=PLANNED),
    InfraEntry(hyperbolic.META, note=PLANNED),
    InfraEntry(mithril.META, note=PLANNED),
)


def infras() -> Infras:
    """The planner's table of every entry."""
    return planner_table(ENTRIES)
