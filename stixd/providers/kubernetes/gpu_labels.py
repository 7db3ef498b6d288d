"""How Kubernetes clusters say which GPU a node has: the node-label schemes SkyPilot reads, in
one table, and the resources a pod asks GPUs by.

Each scheme is one label key, written by one kind of cluster, with its own spelling of an
accelerator's name (for an A100: ``a100``, ``nvidia-tesla-a100``, ``NVIDIA-A100-SXM4-80GB``,
``A100``). A pod that wants a GPU is pinned, by required node affinity, to the nodes whose
label of the scheme the context uses names that GPU. With an autoscaler configured the nodes
may not exist yet: the label is then spelled as that autoscaler's nodes will carry it.

The facts (keys, spellings, detection order, autoscaler schemes) are SkyPilot's
(``sky/provision/kubernetes/utils.py``, its ``*LabelFormatter`` classes).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping

from stixproto.errors import ProvisionError

GPU_RESOURCES = ("nvidia.com/gpu", "amd.com/gpu")
"""The extended resources a GPU is requested by, NVIDIA's first (the default)."""

# Longer names before the names they begin with ('L40S', 'L40', 'L4'): the first whole-word hit
# in a product label is the GPU it names.
CANONICAL_GPUS = (
    "GB300", "GB200", "B300", "B200", "B100", "GH200", "H200", "H100-80GB", "H100-MEGA", "H100",
    "A100-80GB", "A100", "A10G", "A10", "A16", "A30", "A40", "RTX6000-Ada", "L40S", "L40", "L4",
    "A6000", "A5000", "A4000", "V100-32GB", "V100", "P100", "P40", "P4000", "P4", "T4g", "T4",
    "K80", "M60",
)  # fmt: skip


def _gke_spelling(accelerator: str) -> str:
    """GKE's ``nvidia-tesla-<gpu>``, except for the GPUs GKE names ``nvidia-<gpu>``."""
    gpu = "H100-80GB" if accelerator.upper() == "H100" else accelerator
    if gpu.upper() == "H200":
        return "nvidia-h200-141gb"
    if gpu.upper() in ("A100-80GB", "L4", "H100-80GB", "H100-MEGA-80GB", "B200"):
        return f"nvidia-{gpu.lower()}"
    if gpu.startswith(("tpu-", "amd-")):
        return gpu
    return f"nvidia-tesla-{gpu.lower()}"


def _gke_reading(value: str) -> str:
    if value.startswith("nvidia-tesla-"):
        return value[len("nvidia-tesla-") :].upper()
    if value.startswith("nvidia-"):
        gpu = value[len("nvidia-") :].upper()
        return {"H100-80GB": "H100", "H200-141GB": "H200"}.get(gpu, gpu)
    return value


def _product_reading(value: str) -> str:
    """GPU feature discovery's product name (``NVIDIA-A100-SXM4-80GB``) as a GPU name."""
    for name in CANONICAL_GPUS:
        if name == "A100-80GB" and re.search(r"A100.*-80GB", value):
            return name
        if name == "H100-80GB" and re.search(r"H100.*-80GB", value):
            return name
        if re.search(rf"\b{re.escape(name)}\b", value):
            return name
    return value.upper().replace("NVIDIA-", "").replace("GEFORCE-", "").replace("RTX-", "RTX")


@dataclasses.dataclass(frozen=True)
class LabelScheme:
    key: str
    written_by: str
    spell: Callable[[str], str] | None
    """An accelerator's name as this scheme's label value; None where one GPU has many
    spellings (GPU feature discovery's product names), so only nodes that exist can be named."""
    read: Callable[[str], str]
    """A label value as the GPU's name."""


SCHEMES: tuple[LabelScheme, ...] = (
    LabelScheme("skypilot.co/accelerator", "SkyPilot's GPU labeler", str.lower, str.upper),
    LabelScheme("cloud.google.com/gke-accelerator", "GKE", _gke_spelling, _gke_reading),
    LabelScheme("karpenter.k8s.aws/instance-gpu-name", "Karpenter", str.lower, str.upper),
    LabelScheme("nvidia.com/gpu.product", "NVIDIA GPU feature discovery", None, _product_reading),
    LabelScheme(
        "gpu.nvidia.com/class",
        "CoreWeave",
        str.upper,
        lambda value: {"H100_NVLINK_80GB": "H100"}.get(value, value),
    ),
)
"""In SkyPilot's order of detection: a context uses the first scheme any of its nodes carries."""

BY_KEY = {s.key: s for s in SCHEMES}
AUTOSCALER_SCHEME = {
    "gke": BY_KEY["cloud.google.com/gke-accelerator"],
    "karpenter": BY_KEY["karpenter.k8s.aws/instance-gpu-name"],
    "coreweave": BY_KEY["gpu.nvidia.com/class"],
    "generic": BY_KEY["skypilot.co/accelerator"],
}
"""The scheme the nodes an autoscaler adds carry (as the config's ``autoscaler`` names it)."""


class NoGpuNodes(ProvisionError):
    """No node of the context carries the GPU asked for (and no autoscaler may add one)."""


@dataclasses.dataclass(frozen=True)
class Selection:
    """A required node affinity: for one of ``terms``, the node's ``key`` label is one of its
    values (a cluster may label some nodes one way and others another)."""

    terms: tuple[tuple[str, tuple[str, ...]], ...]

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(key for key, _ in self.terms)

    def node_selector_terms(self) -> list[dict[str, object]]:
        return [
            {"matchExpressions": [{"key": key, "operator": "In", "values": list(values)}]}
            for key, values in self.terms
        ]


def label(labels: Mapping[str, object], key: str) -> str:
    """A node's label ``key``, stripped; "" when it has none or one that is no string."""
    value = labels.get(key)
    return value.strip() if isinstance(value, str) else ""


def detect(nodes: Iterable[Mapping[str, str]]) -> LabelScheme | None:
    """The scheme of a context: the first of ``SCHEMES`` some node labels with a value."""
    listed = list(nodes)
    for scheme in SCHEMES:
        if any(label(labels, scheme.key) for labels in listed):
            return scheme
    return None


def names_match(asked: str, named: str) -> bool:
    """Whether a node whose GPU is ``named`` serves a request for ``asked``: the same name, or
    ``asked`` is the start of ``named`` up to a dash (an ``A100`` request takes an
    ``A100-80GB`` node, never the other way round)."""
    a, n = asked.lower(), named.lower()
    return a == n or (n.startswith(a) and n[len(a)] == "-")


def gpu_resource(allocatable: Iterable[Mapping[str, object]]) -> str:
    """The GPU resource of a context: the first of ``GPU_RESOURCES`` a node offers (NVIDIA's
    when none does yet, as an autoscaler's new nodes most likely will)."""
    offered = {key for alloc in allocatable for key in alloc}
    return next((r for r in GPU_RESOURCES if r in offered), GPU_RESOURCES[0])


def select(
    accelerator: str, nodes: Iterable[Mapping[str, str]], autoscaler: str | None, context: str
) -> Selection:
    """Which nodes a pod wanting ``accelerator`` may go to, by the labels of ``nodes`` (each
    node's labels): per scheme the nodes carry, the values that name it. With ``autoscaler``,
    nodes not made yet count too: its scheme's spelling of the GPU is added."""
    listed = list(nodes)
    found: dict[str, list[str]] = {}
    for scheme in SCHEMES:
        for labels in listed:
            value = label(labels, scheme.key)
            if not value or value in found.get(scheme.key, []):
                continue
            if names_match(accelerator, scheme.read(value)) or names_match(accelerator, value):
                found.setdefault(scheme.key, []).append(value)
    if autoscaler is not None:
        grows = AUTOSCALER_SCHEME.get(autoscaler, BY_KEY["skypilot.co/accelerator"])
        assert grows.spell is not None  # every autoscaler's scheme spells one value
        spelled = grows.spell(accelerator)
        if spelled not in found.get(grows.key, []):
            found.setdefault(grows.key, []).append(spelled)
    if not found:
        labelled = detect(listed)
        keys = ", ".join(s.key for s in SCHEMES)
        why = (
            f"no node has a GPU label ({keys}); label the GPU nodes or set kubernetes.autoscaler"
            if labelled is None
            else f"no node has a {accelerator} (by their GPU labels)"
        )
        raise NoGpuNodes(f"Kubernetes context {context}: {why}")
    return Selection(tuple((key, tuple(values)) for key, values in found.items()))
