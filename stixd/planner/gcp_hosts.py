"""GCP GPUs that attach to any N1 host: the host SkyPilot picks when a task names its CPUs.

GCP bills a T4 or V100 machine as an N1 host plus the GPUs. The catalog pairs each (GPU, count,
zone) with SkyPilot's default host (enough vCPUs for the count, 4 GiB each); when the task names
cpus, memory or the host type, SkyPilot instead takes the cheapest N1 host that fits, with at
least 4 GiB per requested vCPU unless memory is given. `attach` re-pairs the GPU rows with those
hosts. GPUs with their own machine families (A100, L4, H100, ...) and TPUs are left as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import msgspec

from stixd.planner.catalog import Offer
from stixd.planner.catalog.gcp import BUNDLED_HOSTS
from stixd.planner.offers import DEFAULT_MEMORY_PER_CPU, CloudOffers
from stixd.planner.request import Accelerator, Amount, ResourceRequest

__all__ = ["attach", "attachable", "host_fits"]

_N1 = ("n1-standard-", "n1-highmem-", "n1-highcpu-")


def attachable(offers: CloudOffers, acc: Accelerator) -> bool:
    return (
        offers.meta.gpus_attach_to_hosts
        and acc.name not in BUNDLED_HOSTS
        and not acc.name.startswith("tpu-")
        and float(acc.count).is_integer()
    )


def attach(
    offers: CloudOffers, paired: Sequence[Offer], host_ok: Callable[[Offer], bool]
) -> list[Offer]:
    """GCP GPUs attach to any N1 host: re-pair the catalog's GPU rows with the hosts allowed.

    The catalog pairs each (GPU, count, zone) with SkyPilot's default host; when the task names
    cpus, memory or the host type, SkyPilot picks the cheapest N1 host that fits instead. The
    GPU's own price is the paired offer minus its host's price in that zone.
    """
    out: list[Offer] = []
    for o in paired:
        host = offers.hosts.get((o.instance_type, o.region, o.zone))
        if host is None or o.price is None or host.price is None:
            continue
        gpu_price = o.price - host.price
        gpu_spot = (
            o.spot_price - host.spot_price
            if o.spot_price is not None and host.spot_price is not None
            else None
        )
        for h in offers.cpu_only:
            if h.zone != o.zone or h.region != o.region or not h.instance_type.startswith(_N1):
                continue
            if not host_ok(h) or h.price is None:
                continue
            spot = (
                h.spot_price + gpu_spot
                if h.spot_price is not None and gpu_spot is not None
                else None
            )
            out.append(
                msgspec.structs.replace(
                    o,
                    instance_type=h.instance_type,
                    vcpus=h.vcpus,
                    memory_gib=h.memory_gib,
                    price=round(h.price + gpu_price, 6),
                    spot_price=round(spot, 6) if spot is not None else None,
                )
            )
    return out


def host_fits(r: ResourceRequest) -> Callable[[Offer], bool]:
    """SkyPilot's N1 host rule for a GCP GPU: the cpus asked, and 4 GiB per vCPU unless given."""
    cpus, memory = r.cpus, r.memory_gib
    if memory is None and cpus is not None:
        memory = Amount(cpus.value * DEFAULT_MEMORY_PER_CPU, at_least=True)

    def fits(h: Offer) -> bool:
        return (cpus is None or cpus.admits(h.vcpus)) and (
            memory is None or memory.admits(h.memory_gib)
        )

    return fits
