"""The ``kubernetes:`` section of the config file, with SkyPilot's keys and meanings.

- ``allowed_contexts``: the contexts launches may use, in the order they are tried (failover
  goes down the list); unset: the kubeconfig's current context only.
- ``namespace``: where pods go; unset: each context's own namespace (``default`` if none).
- ``pod_config``: a pod manifest fragment merged into every pod stix makes (lists of containers
  merged by position, maps key by key, stix's own values winning only where it must).
- ``custom_metadata``: ``labels`` and ``annotations`` added to every object stix makes.
- ``provision_timeout``: seconds a pod may stay Pending while an autoscaler adds a node before
  the launch fails over (SkyPilot's default, 10, without an autoscaler; launches without one
  fail over at once on a ``FailedScheduling`` event).
- ``autoscaler``: the context's cluster autoscaler kind, if any (SkyPilot's names).
- ``remote_identity``: who pods are to the API server: SkyPilot's modes ``SERVICE_ACCOUNT``
  (the default: stix's own service account, made with its role), ``LOCAL_CREDENTIALS`` (that
  account, and the user's kubeconfig for the one context in each pod), ``NO_UPLOAD`` (that
  account, nothing uploaded), or an existing service account's name (``identity.py``).
- ``ports``: how a task's ports are exposed: ``loadbalancer`` (default), ``nodeport`` or
  ``podip`` (reachable only from inside the cluster's network).
- ``image``: the pod image when the task names none (must have python3 for the agent).
- ``fuse``: how the pods of a task that mounts a bucket get FUSE: ``device`` (the node's
  /dev/fuse as a hostPath and the ``SYS_ADMIN`` capability) or ``privileged``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from stixproto.bounds import MAX_SECONDS

PortMode = Literal["loadbalancer", "nodeport", "podip"]
FuseMode = Literal["device", "privileged"]
Autoscaler = Literal["gke", "karpenter", "coreweave", "generic"]
Seconds = Annotated[float, msgspec.Meta(ge=0, le=MAX_SECONDS)]
DEFAULT_IMAGE = "python:3.11-slim"
"""A small public image with python3; a task's ``image_id: docker:IMAGE`` replaces it."""
DEFAULT_PROVISION_TIMEOUT = 10.0
_IDENTITY = r"^(SERVICE_ACCOUNT|LOCAL_CREDENTIALS|NO_UPLOAD|[a-z0-9]([-a-z0-9.]*[a-z0-9])?)$"
"""One of SkyPilot's modes, or a service account's name (a DNS subdomain)."""


class CustomMetadata(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    annotations: dict[str, str] = msgspec.field(default_factory=dict)


class KubernetesConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    enabled: bool = True
    """False leaves Kubernetes out even where a kubeconfig exists."""
    allowed_contexts: tuple[str, ...] | None = None
    namespace: str | None = None
    pod_config: dict[str, Any] = msgspec.field(default_factory=dict)
    custom_metadata: CustomMetadata = msgspec.field(default_factory=CustomMetadata)
    provision_timeout: Seconds = DEFAULT_PROVISION_TIMEOUT
    autoscaler: Autoscaler | None = None
    remote_identity: Annotated[str, msgspec.Meta(max_length=253, pattern=_IDENTITY)] = (
        "SERVICE_ACCOUNT"
    )
    ports: PortMode = "loadbalancer"
    image: Annotated[str, msgspec.Meta(min_length=1, max_length=512)] = DEFAULT_IMAGE
    fuse: FuseMode = "device"
