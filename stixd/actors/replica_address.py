"""Where a replica's port is reached, and the wait for an address still being made.

A replica's head node is reached at its ``ip``, or where its provider says this machine reaches
it (``ReachedElsewhere``: a cloud instance's public address, a Kubernetes load balancer's).
A load balancer's address may come minutes after its cluster is up: the provider answers
``AddressPending`` meanwhile and looks it up again at each health check. The replica stays
STARTING and is not probed until the address is known (`await_address`, told to the actor as
`AddressWait` each round and `Reached` once known). Its initial delay counts from its cluster
being up, as SkyServe counts it from its first probe round: an address still pending when the
delay is over fails the replica as FAILED_PROVISION naming the Service, an infra's failure
that does not stop the version's rollout (the service launches another replica); one that
comes late leaves the replica the rest of the delay to pass a probe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from stixd.actors.specs import ClusterData, ClusterSpec, data_or_none, spec_or_none
from stixd.providers.abilities import AddressPending, ReachedElsewhere
from stixd.providers.base import NodeInfo
from stixproto.errors import ProvisionError

if TYPE_CHECKING:
    from stixd.actors.replica import ReplicaActor


@dataclass(frozen=True)
class AddressWait:
    """This round, the replica's address was still pending."""

    why: str
    service: str


@dataclass(frozen=True)
class Reached:
    """The replica's address is known now: its readiness is probed at ``url``."""

    url: str


@dataclass(frozen=True)
class Unreachable:
    """Its provider says this machine cannot reach the replica's port at all."""

    why: str


def reachable(replica: ReplicaActor, provider_name: str | None, head: dict[str, Any]) -> str:
    """The address the daemon and the balancer reach the replica's head node at: its ``ip``
    (a local node's, an SSH pool host's), or where its provider says this machine reaches it
    (a cloud instance's public address); ``ProvisionError`` where it cannot reach it at all,
    ``AddressPending`` while that address is being made."""
    ip = str(head.get("ip") or "127.0.0.1")
    provider = replica.app.providers.get(provider_name or "")
    if not isinstance(provider, ReachedElsewhere):
        return ip
    try:
        node = NodeInfo.from_dict(head)
    except (KeyError, ValueError):  # a node row of an older daemon: its ip, as before
        return ip
    return provider.reachable_address(replica.cluster, node)


def url_of(replica: ReplicaActor, address: str) -> str:
    return f"http://{address}:{replica.spec.port}"


async def await_address(replica: ReplicaActor) -> str:
    """The replica's URL, once its provider knows the address (asked every starting-probe
    period; each round told to the actor, which ends the wait when the delay is over)."""
    config = replica.app.config.daemon
    period = min(config.serve_starting_probe_seconds, config.serve_probe_seconds)
    while True:
        row = await replica.app.store.get("cluster", replica.cluster)
        data = data_or_none(row, ClusterData) if row is not None else None
        spec = spec_or_none(row, ClusterSpec) if row is not None else None
        if data is not None and spec is not None and data.nodes:
            try:
                url = url_of(replica, reachable(replica, spec.provider, data.nodes[0]))
            except AddressPending as exc:
                replica.tell(AddressWait(exc.message, exc.service))
            except ProvisionError as exc:
                replica.tell(Unreachable(exc.message))
                await anyio.sleep_forever()  # the actor ends this phase
            else:
                replica.tell(Reached(url))
                return url
        await anyio.sleep(period)
