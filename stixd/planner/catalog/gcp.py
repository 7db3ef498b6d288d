"""GCP's split layout: machine rows + accelerator rows, combined into offers.

GCP prices a GPU machine as two rows: the host machine type (accelerator columns empty) and the
accelerators (InstanceType empty, one row per accelerator, count and zone, priced for that many
devices). An offer is the pair, priced as their sum, in one zone. Which host goes with which
accelerator follows SkyPilot's GCP rules:

* A100, A100-80GB, L4, H100 and the newer parts come only in their own machine families
  (``a2-highgpu-*``, ``a2-ultragpu-*``, ``g2-standard-*``, ``a3-*``, ``a4-*``), a fixed list of
  types per count; the cheapest one present in the zone is the host. Those machines are never
  offered on their own: their row prices the host alone, the GPUs are billed on top.
* Every other GPU (T4, V100, P100, K80, P4, ...) attaches to an N1 machine with at least a
  default number of vCPUs for the count and 4 GiB of memory per such vCPU, within GCP's maximum
  vCPUs and memory for that count; the cheapest such N1 machine in the zone is the host.
* TPU rows (``tpu-*``) are TPU VMs: offered as they are, with no host.
"""

from __future__ import annotations

from stixd.planner.catalog.model import Offer
from stixd.planner.catalog.readers import Table, accelerator_of, gpu_memory_gib

__all__ = ["BUNDLED_HOSTS", "read_gcp"]

# accelerator -> count -> the machine types that carry exactly that many.
BUNDLED_HOSTS: dict[str, dict[int, tuple[str, ...]]] = {
    "A100": {
        1: ("a2-highgpu-1g",),
        2: ("a2-highgpu-2g",),
        4: ("a2-highgpu-4g",),
        8: ("a2-highgpu-8g",),
        16: ("a2-megagpu-16g",),
    },
    "A100-80GB": {
        1: ("a2-ultragpu-1g",),
        2: ("a2-ultragpu-2g",),
        4: ("a2-ultragpu-4g",),
        8: ("a2-ultragpu-8g",),
    },
    "L4": {
        1: ("g2-standard-4", "g2-standard-8", "g2-standard-12", "g2-standard-16", "g2-standard-32"),
        2: ("g2-standard-24",),
        4: ("g2-standard-48",),
        8: ("g2-standard-96",),
    },
    "H100": {
        1: ("a3-highgpu-1g",),
        2: ("a3-highgpu-2g",),
        4: ("a3-highgpu-4g",),
        8: ("a3-highgpu-8g",),
    },
    "H100-MEGA": {8: ("a3-megagpu-8g",)},
    "H200": {8: ("a3-ultragpu-8g",)},
    "B200": {8: ("a4-highgpu-8g",)},
}
_BUNDLED_TYPES = frozenset(
    t for by_count in BUNDLED_HOSTS.values() for ts in by_count.values() for t in ts
)

# Default host vCPUs per accelerator count for N1-attached GPUs (SkyPilot sizes them like the
# matching AWS instances); "DEFAULT" covers the rest.
_N1_DEFAULT_VCPUS: dict[str, dict[int, int]] = {
    "K80": {1: 4, 2: 8, 4: 16, 8: 32, 16: 64},
    "V100": {1: 8, 2: 16, 4: 32, 8: 64},
    "T4": {1: 4, 2: 8, 4: 48},
    "P100": {1: 8, 2: 16, 4: 32, 8: 64},
    "DEFAULT": {1: 8, 2: 16, 4: 32, 8: 64, 16: 128},
}
_N1_MEMORY_PER_VCPU = 4.0
# GCP's limits: accelerator -> count -> (max vCPUs, max memory GiB) of the N1 host.
_N1_MAX: dict[str, dict[int, tuple[float, float]]] = {
    "K80": {1: (8, 52), 2: (16, 104), 4: (32, 208), 8: (64, 208)},
    "V100": {1: (12, 78), 2: (24, 156), 4: (48, 312), 8: (96, 624)},
    "T4": {1: (48, 312), 2: (48, 312), 4: (96, 624)},
    "P4": {1: (24, 156), 2: (48, 312), 4: (96, 624)},
    "P100": {1: (16, 104), 2: (32, 208), 4: (96, 624)},
}
_N1_PREFIXES = ("n1-standard-", "n1-highmem-", "n1-highcpu-")
_TPU_VM = "TPU-VM"

REQUIRED = (
    "InstanceType",
    "vCPUs",
    "MemoryGiB",
    "AcceleratorName",
    "AcceleratorCount",
    "Price",
    "Region",
    "AvailabilityZone",
)


def _whole(count: float) -> int | None:
    return int(count) if float(count).is_integer() else None


def _pick_host(hosts: list[Offer], accelerator: str, count: float) -> Offer | None:
    """The cheapest host in one zone that SkyPilot's rules pair with ``accelerator:count``."""
    n = _whole(count)
    if n is None:
        return None
    if accelerator in BUNDLED_HOSTS:
        allowed = BUNDLED_HOSTS[accelerator].get(n, ())
        fits = [h for h in hosts if h.instance_type in allowed]
    else:
        default = _N1_DEFAULT_VCPUS.get(accelerator, _N1_DEFAULT_VCPUS["DEFAULT"]).get(n)
        if default is None:
            return None
        max_vcpus, max_mem = _N1_MAX.get(accelerator, {}).get(n, (float("inf"), float("inf")))
        fits = [
            h
            for h in hosts
            if h.instance_type.startswith(_N1_PREFIXES)
            and h.vcpus is not None
            and h.memory_gib is not None
            and default <= h.vcpus <= max_vcpus
            and default * _N1_MEMORY_PER_VCPU <= h.memory_gib <= max_mem
        ]
    priced = [h for h in fits if h.price is not None]
    return min(priced, key=lambda h: (h.price, h.instance_type)) if priced else None


def _sum(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a + b, 6)


def read_gcp(cloud: str, text: str, source: str) -> list[Offer]:
    """Offers from GCP's vms.csv: CPU machines as they are, GPU hosts + accelerators combined."""
    table = Table(text, source, REQUIRED)
    machines: list[Offer] = []
    accelerators: list[tuple[str, float, Offer]] = []
    for row in table.rows():
        instance_type = row.text("InstanceType")
        name, count = accelerator_of(row)
        region = row.required_text("Region")
        zone = row.text("AvailabilityZone")
        price, spot = row.number("Price"), row.number("SpotPrice")
        if instance_type is not None:
            machines.append(
                Offer(
                    cloud=cloud,
                    instance_type=instance_type,
                    accelerator=name,
                    accelerator_count=count,
                    vcpus=row.number("vCPUs"),
                    memory_gib=row.number("MemoryGiB"),
                    price=price,
                    spot_price=spot,
                    region=region,
                    zone=zone,
                    gpu_memory_gib=gpu_memory_gib(row.text("GpuInfo")) if name else None,
                )
            )
        elif name is not None:
            bare = Offer(cloud, _TPU_VM, name, count, None, None, price, spot, region, zone)
            accelerators.append((name, count, bare))
        else:
            raise row.error("InstanceType", "a row needs an InstanceType or an AcceleratorName")

    hosts_by_zone: dict[tuple[str, str | None], list[Offer]] = {}
    offers: list[Offer] = []
    for m in machines:
        if m.accelerator is None:
            hosts_by_zone.setdefault((m.region, m.zone), []).append(m)
        if m.instance_type not in _BUNDLED_TYPES:
            offers.append(m)
    for name, count, bare in accelerators:
        if name.startswith("tpu-"):
            offers.append(bare)
            continue
        host = _pick_host(hosts_by_zone.get((bare.region, bare.zone), []), name, count)
        if host is None:
            continue  # GCP lists the GPU here but no machine that can carry it
        offers.append(
            Offer(
                cloud=cloud,
                instance_type=host.instance_type,
                accelerator=name,
                accelerator_count=count,
                vcpus=host.vcpus,
                memory_gib=host.memory_gib,
                price=_sum(bare.price, host.price),
                spot_price=_sum(bare.spot_price, host.spot_price),
                region=bare.region,
                zone=bare.zone,
            )
        )
    return offers
