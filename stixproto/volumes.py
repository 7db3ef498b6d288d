"""A volume as SkyPilot's volume YAML describes it (`sky volumes apply FILE`), checked as hostile
input: the same checks run on the CLI, in the SDK and when the socket decodes a request.

SkyPilot's types are ``k8s-pvc`` (a PersistentVolumeClaim), ``k8s-hostpath`` (a directory on
the node) and ``runpod-network-volume``. stix runs a ``k8s-hostpath`` volume on its own nodes
too (``infra: local`` or ``ssh/<pool>``): a directory under stix's folder on the node, named by
the volume, so a volume's name never picks a path outside that folder.

A task's ``volumes:`` entry with a ``size`` (SkyPilot's ephemeral volume: ``/mnt/x: {size: 10Gi,
labels: ..., type: k8s-pvc, config: {access_mode: ...}}``) names no volume: the launch makes one
for its cluster (`ephemeral`), named ``<cluster>-<hash of the mount path>`` as SkyPilot names
it, and the cluster's `down` removes it.
"""

from __future__ import annotations

import enum
import hashlib
import re
from typing import Annotated, Any, Literal

import msgspec

from stixproto import names
from stixproto.errors import InvalidRequest

PVC = "k8s-pvc"
HOSTPATH = "k8s-hostpath"
RUNPOD = "runpod-network-volume"
TYPES = (PVC, HOSTPATH, RUNPOD)
ACCESS_MODES = ("ReadWriteOnce", "ReadWriteOncePod", "ReadWriteMany", "ReadOnlyMany")
KUBERNETES = ("k8s", "kubernetes")
MAX_SIZE_GB = 1_000_000
MAX_LABELS = 64
_SIZE = re.compile(r"(\d+)\s*([KMGTP]i?B?|[kmgtp]i?b?)?")
_GB_PER = {"k": 1 / 1024**2, "m": 1 / 1024, "g": 1, "t": 1024, "p": 1024**2}
_LABEL_KEY = re.compile(r"([a-z0-9.-]{1,253}/)?[A-Za-z0-9]([-_.A-Za-z0-9]{0,61}[A-Za-z0-9])?")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-_.A-Za-z0-9]{0,61}[A-Za-z0-9])?)?")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_NAME = re.compile(r"[a-z0-9]([-.a-z0-9]{0,251}[a-z0-9])?")
_TEXT = Annotated[str, msgspec.Meta(max_length=253)]


class VolumeStatus(enum.StrEnum):
    """SkyPilot's volume states. IN_USE is never stored: `volumes ls` shows it for a READY
    volume that a live cluster mounts."""

    READY = "READY"
    IN_USE = "IN_USE"
    NOT_READY = "NOT_READY"


class VolumeOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """The ``config:`` map of a volume (SkyPilot's keys)."""

    storage_class_name: _TEXT | None = None
    access_mode: (
        Literal["ReadWriteOnce", "ReadWriteOncePod", "ReadWriteMany", "ReadOnlyMany"] | None
    ) = None
    namespace: _TEXT | None = None
    host_path: Annotated[str, msgspec.Meta(max_length=4096)] | None = None
    cleanup_on_deletion: bool | None = None


class VolumeConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """One volume. ``size`` is kept as SkyPilot writes it and read by `size_gb`."""

    name: str
    type: str
    infra: Annotated[str, msgspec.Meta(max_length=1024)] | None = None
    size: str | int | None = None
    labels: dict[str, str] = {}
    use_existing: bool = False
    config: VolumeOptions = VolumeOptions()

    def __post_init__(self) -> None:
        names.check_new(self.name, "volume")
        problem = _problem(self)
        if problem is not None:
            raise InvalidRequest(f"volume {names.shown(self.name)}: {problem}")

    @property
    def cloud(self) -> str:
        """``local``, ``ssh`` or ``kubernetes``: the infra the volume lives on."""
        return infra_parts(self)[0]

    @property
    def where(self) -> str | None:
        """The SSH pool or Kubernetes context (None: the default one)."""
        return infra_parts(self)[1]

    @property
    def size_gb(self) -> int | None:
        return None if self.size is None else parse_size(self.size)


def volume_infra(provider: str, pool: str | None) -> str:
    """The ``infra:`` of a volume made where a cluster runs on ``provider``/``pool`` (a
    Kubernetes context or an SSH pool qualifies it; elsewhere the pool is not a volume's)."""
    head = "k8s" if provider == "kubernetes" else provider
    return f"{head}/{pool}" if pool and provider in ("kubernetes", "ssh") else head


def mounts_node_disk(v: VolumeConfig) -> bool:
    """Whether ``v`` mounts a Kubernetes node's own disk into pods (a host path there): on a
    team server only an admin may make one."""
    return v.type == HOSTPATH and infra_parts(v)[0] == "kubernetes"


def infra_parts(v: VolumeConfig) -> tuple[str, str | None]:
    if v.infra is None:
        return "kubernetes", None  # SkyPilot's default for both Kubernetes types
    head, _, rest = v.infra.partition("/")
    cloud = head.lower()
    if cloud in KUBERNETES:
        return "kubernetes", rest or None
    return cloud, rest or None


def parse_size(size: str | int) -> int:
    """GB (GiB, as SkyPilot rounds it) from ``100``, ``"100"``, ``"10Gi"``, ``"1TB"``; a
    ValueError in one sentence for anything else."""
    if isinstance(size, bool):
        raise ValueError(f"size {size!r} is not a size like '10Gi' or 100")
    if isinstance(size, int):
        gb = float(size)
    else:
        found = _SIZE.fullmatch(size.strip())
        if found is None or len(size) > 32:
            raise ValueError(f"size {size[:32]!r} is not a size like '10Gi' or 100")
        unit = (found.group(2) or "g")[0].lower()
        gb = int(found.group(1)) * _GB_PER[unit]
    whole = int(-(-gb // 1))  # rounded up, as SkyPilot's allow_rounding does
    if not 1 <= whole <= MAX_SIZE_GB:
        raise ValueError(f"size must be from 1 to {MAX_SIZE_GB} GB, got {size!r}")
    return whole


def _problem(v: VolumeConfig) -> str | None:
    if v.type not in TYPES:
        return f"type {v.type[:40]!r} is not one of {', '.join(TYPES)}"
    if v.type == RUNPOD:
        return "runpod-network-volume is not supported in this build yet (RunPod is not an infra)"
    cloud, where = infra_parts(v)
    if v.infra is not None and ("\0" in v.infra or "\n" in v.infra):
        return "infra must be one line"
    if v.type == PVC and cloud != "kubernetes":
        return f"a k8s-pvc volume lives on Kubernetes (infra: k8s[/CONTEXT]), not on {cloud!r}"
    if cloud not in ("kubernetes", "local", "ssh"):
        return f"infra {cloud!r} has no volumes; use k8s[/CONTEXT], local or ssh/POOL"
    if cloud == "local" and where is not None:
        return "infra 'local' takes no region"
    if cloud == "ssh" and where is None:
        return "infra 'ssh' needs its pool: ssh/POOL"
    if v.size is not None:
        try:
            parse_size(v.size)
        except ValueError as exc:
            return str(exc)
    elif v.type == PVC and not v.use_existing:
        return "size is required for a new k8s-pvc volume (e.g. size: 10Gi)"
    if len(v.labels) > MAX_LABELS:
        return f"at most {MAX_LABELS} labels"
    for key, value in v.labels.items():
        if not _LABEL_KEY.fullmatch(key) or not _LABEL_VALUE.fullmatch(value):
            return f"label {key[:40]!r}: {value[:40]!r} is not a valid Kubernetes label"
    return _options_problem(v, cloud)


def _options_problem(v: VolumeConfig, cloud: str) -> str | None:
    o = v.config
    namespace = o.namespace
    if namespace is not None and not _DNS_LABEL.fullmatch(namespace):
        return f"config.namespace {namespace[:40]!r} is not a Kubernetes namespace name"
    if o.storage_class_name is not None and not re.fullmatch(
        r"[a-z0-9]([-.a-z0-9]*[a-z0-9])?", o.storage_class_name
    ):
        return f"config.storage_class_name {o.storage_class_name[:40]!r} is not a valid name"
    if cloud != "kubernetes":
        if o.host_path is not None:
            return (
                f"config.host_path is for Kubernetes nodes; on {cloud} the volume is a folder "
                "of stix's on the node"
            )
        if namespace is not None or o.storage_class_name is not None:
            return f"config.namespace and config.storage_class_name are for Kubernetes, not {cloud}"
    elif v.use_existing and v.type == PVC and not _DNS_NAME.fullmatch(v.name):
        return "use_existing adopts the PersistentVolumeClaim of this name: it must be a DNS name"
    elif v.type == HOSTPATH:
        if o.host_path is None:
            return "config.host_path is required for a k8s-hostpath volume on Kubernetes"
        if not o.host_path.startswith("/") or "\0" in o.host_path:
            return f"config.host_path must be an absolute path, got {o.host_path[:40]!r}"
        if "/".join(p for p in o.host_path.split("/") if p not in ("", ".")) in ("", ".."):
            return "config.host_path must not be the root directory"
    return None


def from_yaml(doc: Any) -> VolumeConfig:
    """A volume from a parsed YAML document; `InvalidRequest` in one line for anything else."""
    if not isinstance(doc, dict):
        raise InvalidRequest(f"a volume YAML is a map (name, type, ...), got {type(doc).__name__}")
    if doc.get("labels") is None:
        doc = {k: v for k, v in doc.items() if k != "labels"}
    if doc.get("config") is None:
        doc = {k: v for k, v in doc.items() if k != "config"}
    try:
        return msgspec.convert(doc, VolumeConfig)
    except msgspec.ValidationError as exc:
        text = str(exc).replace("`$.", "`").replace("`$", "`")
        raise InvalidRequest(f"volume YAML: {text}") from None


EPHEMERAL_TYPES = (PVC,)
"""SkyPilot's ``EPHEMERAL_VOLUME_TYPES``: a volume made for a cluster is a claim on Kubernetes
(and a folder of stix's on its own nodes, whatever the task says)."""
EPHEMERAL_KEYS = ("size", "type", "labels", "config", "name", "sub_path")


def ephemeral_name(cluster: str, dest: str) -> str:
    """SkyPilot's ``<cluster>-<md5(path)[:6]>``; a cluster name too long for that keeps its
    first letters and hashes both, so two clusters never share a volume."""
    digest = hashlib.md5(dest.encode(), usedforsecurity=False).hexdigest()[:6]
    if len(cluster) + 7 <= names.MAX_NAME_LENGTH:
        return f"{cluster}-{digest}"
    both = hashlib.md5(f"{cluster}\0{dest}".encode(), usedforsecurity=False).hexdigest()[:6]
    return f"{cluster[: names.MAX_NAME_LENGTH - 7]}-{both}"


def ephemeral(
    spec: dict[str, Any], cluster: str, dest: str, infra: str, num_nodes: int = 1
) -> VolumeConfig:
    """The volume a task's ``{size: ...}`` entry at ``dest`` stands for, made for ``cluster``
    on ``infra`` (``local``, ``ssh/POOL``, ``k8s[/CONTEXT]``); `InvalidRequest` in one line for
    a size, type or config SkyPilot would refuse too."""
    kind = spec.get("type")
    if kind is not None and (not isinstance(kind, str) or kind.lower() not in EPHEMERAL_TYPES):
        shown = str(kind)[:40]
        raise InvalidRequest(
            f"ephemeral volume type {shown!r} is not supported; use {', '.join(EPHEMERAL_TYPES)}"
        )
    size = spec.get("size")
    if not isinstance(size, str | int) or isinstance(size, bool):
        raise InvalidRequest(f"ephemeral volume size {str(size)[:32]!r} is not a size like '10Gi'")
    try:
        parse_size(size)
    except ValueError as exc:
        raise InvalidRequest(f"ephemeral volume {exc}") from None
    on_kube = infra.partition("/")[0].lower() in KUBERNETES
    doc: dict[str, Any] = {
        "name": ephemeral_name(cluster, dest),
        "type": PVC if on_kube else HOSTPATH,
        "infra": infra,
        "size": size,
    }
    if spec.get("labels"):
        doc["labels"] = spec["labels"]
    if on_kube and spec.get("config"):  # storage class, access mode: a claim's, nowhere else
        doc["config"] = spec["config"]
    volume = from_yaml(doc)
    if volume.config.host_path is not None:
        raise InvalidRequest("an ephemeral volume is a claim: config.host_path is not for it")
    access = volume.config.access_mode or "ReadWriteOnce"
    if on_kube and num_nodes > 1 and access in ("ReadWriteOnce", "ReadWriteOncePod"):
        raise InvalidRequest(
            f"access mode {access} is not supported for multi-node tasks: give the ephemeral "
            "volume config.access_mode: ReadWriteMany"
        )
    return volume
