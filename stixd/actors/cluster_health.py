"""The health check of every live cluster: one look a tick for all clusters of a provider.

A host may die unseen, so every UP (or degraded) cluster is looked at every
``health_check_seconds``. Each cluster actor registers what its last look found
(``schedule_health`` in cluster_observe) with the app's ticker (stixd.runtime.ticker); at each
tick the ticker asks each provider about all its watched clusters at once (``query_many`` where
the provider has it, else ``query`` of each, a few at a time) and tells only the actors of
clusters that look different: their nodes, lost nodes, machines or node errors changed. A
cluster that looks as it did is not woken, and its row is not written.
"""

from __future__ import annotations

import contextlib
from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING, NamedTuple, NoReturn

import anyio

from stixd.providers.abilities import LookAbilities, query_each
from stixd.providers.base import Machine, NodeInfo, NodeLoss

if TYPE_CHECKING:
    from stixd.app import App

LOOKS_AT_ONCE = 32
"""Clusters of a provider without ``query_many`` looked at together in a round."""


class HealthTick:
    """Told by the ticker: the cluster looks different from its last look; look again."""


class Look(NamedTuple):
    """What one look at a cluster found: equal looks lead ``observe`` to the same decisions.
    (A tuple: made and compared for every watched cluster at every tick.)"""

    nodes: tuple[NodeInfo, ...]
    lost: tuple[NodeLoss, ...]
    machines: tuple[Machine, ...]
    errors: tuple[tuple[int, str], ...]


def look_of(abilities: LookAbilities, cluster: str, nodes: Sequence[NodeInfo]) -> Look:
    """The look at `cluster` whose ``query`` found `nodes`: with what the provider says after
    that query of the nodes it lost, their machines and why it could not reach some."""
    lost = abilities.lost.lost_nodes(cluster) if abilities.lost is not None else ()
    machines = abilities.machines.machines(cluster) if abilities.machines is not None else ()
    errors = abilities.errors.node_errors(cluster) if abilities.errors is not None else None
    return Look(
        tuple(nodes), tuple(lost), tuple(machines), tuple(sorted(errors.items())) if errors else ()
    )


async def look_at(app: App, provider_name: str, clusters: list[str]) -> dict[str, Hashable]:
    """One round of the health check for the watched clusters of a provider: how each looks
    now (a cluster whose look failed is left out: its actor looks itself)."""
    provider = app.provider(provider_name)
    abilities = app.look_abilities(provider_name)
    if abilities.many is not None:
        found = await abilities.many.query_many(clusters)
    else:  # its actor looks itself at one whose look failed, and records the error
        found = await query_each(provider, clusters, LOOKS_AT_ONCE)
    return {c: look_of(abilities, c, nodes) for c, nodes in found.items()}


async def check_health(app: App) -> NoReturn:
    """The daemon's health checks, until it stops."""

    def tell(cluster: str) -> None:
        with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
            app.supervisor.tell("cluster", cluster, HealthTick())  # not once it has stopped

    async def look(provider_name: str, clusters: list[str]) -> dict[str, Hashable]:
        return await look_at(app, provider_name, clusters)

    await app.health.run(
        lambda: app.config.daemon.health_check_seconds, look, tell, app.log.bind(task="health")
    )
