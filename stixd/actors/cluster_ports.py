"""A task's ``resources.ports``, made reachable on launch where the provider can open them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from stixd.actors.jobs_submit import infra_label
from stixd.providers.abilities import OpensPorts, ReachesEveryPort
from stixd.runtime.mailbox import Envelope
from stixproto import messages as m

if TYPE_CHECKING:
    from stixd.actors.cluster import ClusterActor


def wanted_ports(spec: dict[str, object]) -> list[int]:
    """The ports the cluster's task asks for: its placement's on a cloud, else the task's."""
    placement = spec.get("placement")
    ports = placement.get("ports") if isinstance(placement, dict) else spec.get("ports")
    return [int(p) for p in ports] if isinstance(ports, list) else []


async def open_task_ports(cluster: ClusterActor, env: Envelope) -> None:
    """Open the task's ports on a provider that opens ports (idempotent: a retry or a restart
    opens nothing twice); on one that cannot, say so and go on without them."""
    ports = wanted_ports(cluster.row.spec)
    provider = cluster.provider
    if not ports or isinstance(provider, ReachesEveryPort):
        return
    listed = ", ".join(map(str, ports))
    if isinstance(provider, OpensPorts):
        await provider.open_ports(cluster.id, ports)
        env.progress(m.Progress(f"Ports {listed} open on {cluster.id}."))
        return
    where = infra_label(cluster.spec.provider, cluster.spec.pool)
    why = f"{where} cannot open ports: {listed} are reachable only as its network allows"
    cluster.log.info("ports_not_opened", ports=ports, why=why)
    env.progress(m.Progress(f"Ports not opened: {why}."))
