"""A cluster's ``resources.ports``, exposed as the config's ``kubernetes.ports`` says:

- ``loadbalancer`` (the default): one LoadBalancer service selecting the head pod; a port is
  reached at the address the cloud's load balancer gives the service (its status), at the
  port itself.
- ``nodeport``: one NodePort service; a port is reached at the head pod's node address, at
  the node port the API server gave it.
- ``podip``: nothing is made; a port is reached at the head pod's IP (from inside the
  cluster's network only).

The service carries stix's labels (``down`` and the leak scan find it by its cluster's label)
and ``custom_metadata``'s labels and annotations, as every object stix makes, and is made
idempotently: one that already exposes the ports is kept. A launch does not wait
for a LoadBalancer's address (a cloud may take minutes): it is looked up when asked for.
`preflight` refuses ``ports`` where the context cannot expose them (no load balancer controller
takes a LoadBalancer service on within a short bound, as on bare metal) in one sentence,
instead of a service that silently never gets an address.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Mapping, Sequence
from typing import Any

import anyio

from stixd.providers.abilities import AddressPending
from stixd.providers.kubernetes.api import KubeApi, KubeApiError, path
from stixd.providers.kubernetes.config import PortMode
from stixd.providers.kubernetes.podspec import (
    LABEL_CLUSTER,
    LABEL_OWNER,
    LABEL_RANK,
    label_value,
    object_name,
    pod_name,
)
from stixproto import names
from stixproto.errors import ProvisionError

ADDRESS_WAIT_S = 10.0
"""How long a LoadBalancer service may go without an address before the context is judged
unable to give it one."""
_POLL_S = 0.2
_UPDATE_TRIES = 3
_SUFFIX = "-ports"
_PROBE = "stix-ports-probe"
_KIND: Mapping[str, str] = {"loadbalancer": "LoadBalancer", "nodeport": "NodePort"}
_LB_FINALIZER = "service.kubernetes.io/load-balancer-cleanup"


class PortsUnavailable(ProvisionError):
    """The context cannot expose ports in the configured mode."""


def service_name(cluster: str, owner: str) -> str:
    """The ports service of ``owner``'s cluster: a DNS-1035 label (a letter first, at most 63
    long; stix names begin with a letter, the digest keeps names that clean alike apart)."""
    name = object_name(cluster, owner, _SUFFIX)
    if name[:1].isalpha():
        return name
    digest = hashlib.sha1(cluster.encode()).hexdigest()[:8]
    return object_name(f"s-{digest}", owner, _SUFFIX)


def _metadata(
    name: str, labels: Mapping[str, str], annotations: Mapping[str, str] | None
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": dict(labels)}
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


def service_manifest(
    cluster: str,
    owner: str,
    ports: Sequence[int],
    mode: PortMode,
    labels: Mapping[str, str],
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The service exposing ``ports`` of the cluster's head pod."""
    mine = {LABEL_CLUSTER: label_value(cluster), **({LABEL_OWNER: owner} if owner else {})}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(service_name(cluster, owner), {**labels, **mine}, annotations),
        "spec": {
            "type": _KIND[mode],
            "selector": {**mine, LABEL_RANK: "0"},
            "ports": [
                {"name": f"port-{p}", "port": p, "targetPort": p, "protocol": "TCP"}
                for p in sorted(set(ports))
            ],
        },
    }


def _obj(value: Any) -> dict[str, Any]:
    """``value`` where the API answered an object, else an empty one: a server answering a
    list, a number or a string in its place leaves nothing known, never an AttributeError."""
    return value if isinstance(value, dict) else {}


def _entries(value: Any) -> list[dict[str, Any]]:
    """The objects of a list the API answered (anything else in it, or in its place, skipped)."""
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _exposed(service: Mapping[str, Any], kind: str) -> set[int]:
    spec = _obj(service.get("spec"))
    if spec.get("type") != kind:
        return set()
    return {p["port"] for p in _entries(spec.get("ports")) if type(p.get("port")) is int}


async def _get(api: KubeApi, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return _obj(await api.call("GET", path("namespaces", namespace, "services", name)))
    except KubeApiError as exc:
        if exc.status == 404:
            return None
        raise


async def open_ports(
    api: KubeApi,
    namespace: str,
    cluster: str,
    owner: str,
    ports: Sequence[int],
    mode: PortMode,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
) -> None:
    """Expose ``ports`` of the cluster's head pod (nothing to make in ``podip`` mode). A
    service already exposing them stays; one exposing fewer gets the others added in place
    (a PUT: its load balancer, and so its address, stays); one of another type (the mode
    changed) is made again."""
    if mode == "podip" or not ports:
        return
    kind, name = _KIND[mode], service_name(cluster, owner)
    where = path("namespaces", namespace, "services")
    found = await _get(api, namespace, name)
    if found is not None and (found.get("spec") or {}).get("type") == kind:
        if not set(ports) <= _exposed(found, kind):
            await _add_ports(api, namespace, name, found, ports)
        return
    if found is not None:
        await delete_service(api, namespace, name)
    body = service_manifest(cluster, owner, ports, mode, labels or {}, annotations)
    try:
        await api.call("POST", where, body=body)
    except KubeApiError as exc:
        if exc.status != 409:  # made meanwhile by another try: it is the same service
            raise


async def _add_ports(
    api: KubeApi, namespace: str, name: str, found: dict[str, Any], ports: Sequence[int]
) -> None:
    """Add ``ports`` to service ``name`` as read (``found``), keeping every port it has with
    its node port; a 409 (changed since it was read) reads it again, a few times."""
    where = path("namespaces", namespace, "services", name)
    for attempt in range(_UPDATE_TRIES):
        spec = dict(_obj(found.get("spec")))
        have = _entries(spec.get("ports"))
        known = {p.get("port") for p in have}
        have += [
            {"name": f"port-{p}", "port": p, "targetPort": p, "protocol": "TCP"}
            for p in sorted(set(ports) - known)
        ]
        body = {**found, "spec": {**spec, "ports": have}}
        body.pop("status", None)
        try:
            await api.call("PUT", where, body=body)
            return
        except KubeApiError as exc:
            if exc.status != 409 or attempt == _UPDATE_TRIES - 1:
                raise
        again = await _get(api, namespace, name)
        if again is None:
            raise ProvisionError(f"the ports service {name} was deleted while ports were added")
        found = again


async def delete_service(api: KubeApi, namespace: str, name: str) -> None:
    try:
        await api.call("DELETE", path("namespaces", namespace, "services", name))
    except KubeApiError as exc:
        if exc.status != 404:
            raise


async def close_ports(api: KubeApi, namespace: str, cluster: str, owner: str) -> None:
    """Delete the cluster's ports service, if any (``down``)."""
    await delete_service(api, namespace, service_name(cluster, owner))


def _ingress(service: Mapping[str, Any]) -> str | None:
    for entry in _entries(_obj(_obj(service.get("status")).get("loadBalancer")).get("ingress")):
        address = entry.get("ip") or entry.get("hostname")
        if isinstance(address, str) and address:
            return address
    return None


def _handled(service: Mapping[str, Any]) -> bool:
    """Whether a load balancer controller took the service on: it has an address, or the
    cloud controller's cleanup finalizer (added at once, the address may take a minute)."""
    finalizers = _obj(service.get("metadata")).get("finalizers")
    return _ingress(service) is not None or (
        isinstance(finalizers, list) and _LB_FINALIZER in finalizers
    )


async def _address_within(
    api: KubeApi, namespace: str, name: str, wait_s: float, *, handled: bool = False
) -> str | None:
    """The LoadBalancer address of service ``name``, polled until ``wait_s`` has passed;
    ``handled``: stop as soon as a controller took the service on (``"pending"`` then)."""
    deadline = time.monotonic() + wait_s
    while True:
        service = await _get(api, namespace, name)
        address = _ingress(service) if service is not None else None
        if handled and service is not None and address is None and _handled(service):
            return "pending"
        if address is not None or time.monotonic() >= deadline:
            return address
        await anyio.sleep(min(_POLL_S, max(0.0, deadline - time.monotonic())))


def address_pending(cluster: str, owner: str) -> AddressPending:
    """The cluster's LoadBalancer service has no address yet (its cloud is still making it)."""
    name = service_name(cluster, owner)
    return AddressPending(
        f"the LoadBalancer address of {cluster} is pending (the cloud is still making it for "
        f"service {name}); retry once `{names.command('status', '-r', cluster)}` shows it",
        service=name,
    )


def _no_address(context: str, waited: float) -> PortsUnavailable:
    return PortsUnavailable(
        f"Kubernetes context {context} gave a LoadBalancer service no address within "
        f"{waited:g} s, so it cannot expose ports this way: set kubernetes.ports to nodeport "
        "or podip, or drop resources.ports"
    )


async def load_balancer_address(
    api: KubeApi, namespace: str, cluster: str, owner: str
) -> str | None:
    """The address the cloud gave the cluster's LoadBalancer service so far (one read); None
    while it is pending (or there is no such service)."""
    service = await _get(api, namespace, service_name(cluster, owner))
    return _ingress(service) if service is not None else None


async def endpoints(
    api: KubeApi,
    namespace: str,
    cluster: str,
    owner: str,
    ports: Sequence[int],
    mode: PortMode,
    *,
    wait_s: float = ADDRESS_WAIT_S,
) -> dict[int, str]:
    """Where each of ``ports`` is reached (``host:port``), as the mode exposes it."""
    if not ports:
        return {}
    if mode == "loadbalancer":
        address = await _address_within(api, namespace, service_name(cluster, owner), wait_s)
        if address is None:
            raise _no_address(api.context, wait_s)
        return {p: f"{address}:{p}" for p in ports}
    head = await api.call("GET", path("namespaces", namespace, "pods", pod_name(cluster, 0, owner)))
    status = _obj(_obj(head).get("status"))
    if mode == "podip":
        pod_ip = status.get("podIP")
        if not isinstance(pod_ip, str) or not pod_ip:
            raise ProvisionError(f"the head pod of {cluster} has no IP yet")
        return {p: f"{pod_ip}:{p}" for p in ports}
    host = status.get("hostIP")
    service = await _get(api, namespace, service_name(cluster, owner))
    node_ports = {
        p["port"]: p["nodePort"]
        for p in _entries(_obj(_obj(service).get("spec")).get("ports"))
        if type(p.get("port")) is int and type(p.get("nodePort")) is int
    }
    if not isinstance(host, str) or not host or any(p not in node_ports for p in ports):
        raise ProvisionError(f"cluster {cluster}: its NodePort service or node is not ready")
    return {p: f"{host}:{node_ports[p]}" for p in ports}


async def preflight(
    api: KubeApi,
    namespace: str,
    mode: PortMode,
    labels: Mapping[str, str] | None = None,
    *,
    annotations: Mapping[str, str] | None = None,
    wait_s: float = ADDRESS_WAIT_S,
) -> None:
    """Refuse, with `PortsUnavailable`, ports the context cannot expose in ``mode``: in
    ``loadbalancer`` mode a load balancer controller must take a probe service (selecting
    nothing) on within ``wait_s`` (give it an address, or the cloud controller's cleanup
    finalizer, which comes before a slow cloud's address); the probe is deleted either way.
    NodePort and pod IPs need nothing of the cluster."""
    if mode != "loadbalancer":
        return
    # a name of its own: probes at once (two launches, two daemons on one namespace) never
    # delete each other's; the label lets the leak scan find one a crash left behind
    probe = f"{_PROBE}-{secrets.token_hex(4)}"
    body = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(probe, {**(labels or {}), LABEL_CLUSTER: _PROBE}, annotations),
        "spec": {
            "type": "LoadBalancer",
            "selector": {LABEL_CLUSTER: _PROBE},
            "ports": [{"port": 8080, "targetPort": 8080, "protocol": "TCP"}],
        },
    }
    await api.call("POST", path("namespaces", namespace, "services"), body=body)
    try:
        address = await _address_within(api, namespace, probe, wait_s, handled=True)
    finally:
        with anyio.CancelScope(shield=True):
            await delete_service(api, namespace, probe)
    if address is None:
        raise _no_address(api.context, wait_s)
