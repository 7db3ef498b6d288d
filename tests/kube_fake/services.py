"""Services as the API server, kube-proxy and a cloud controller leave them: a ClusterIP, node
ports for NodePort and LoadBalancer, a LoadBalancer ingress address (unless the fake's cluster
has no load balancer, when it stays empty as on bare metal) — and each of them really listening
on loopback (forwarding.py). ClusterIPs come from 127.96.0.0/16 and ingress addresses from
127.97.0.0/16, each fake starting at a random offset so fakes running side by side rarely meet;
node ports are 30000-32767 on 127.0.0.1, skipping any port something else holds."""

from __future__ import annotations

import copy
import random
import socket

from tests.kube_fake.forwarding import Forwarder, bind
from tests.kube_fake.meta import ApiError, Obj, new_metadata
from tests.kube_fake.sandbox import POD_IP
from tests.kube_fake.store import Store

NODE_PORTS = range(30000, 32768)
ADDRESS_TRIES = 64
KINDS = ("ClusterIP", "NodePort", "LoadBalancer")


def _invalid(message: str) -> ApiError:
    return ApiError(422, "Invalid", f"Service is invalid: {message}")


class _Addresses:
    """Loopback addresses of one /16, handed out from a random start."""

    def __init__(self, prefix: str) -> None:
        self.prefix, self.next = prefix, random.randrange(65000)

    def take(self) -> str:
        n, self.next = self.next % 65024, self.next + 1
        return f"{self.prefix}.{n // 254}.{n % 254 + 1}"


def _bind_all(host: str, ports: list[int]) -> list[socket.socket] | None:
    socks: list[socket.socket] = []
    for port in ports:
        sock = bind(host, port)
        if sock is None:
            for s in socks:
                s.close()
            return None
        socks.append(sock)
    return socks


class Services:
    def __init__(self, store: Store, load_balancer: bool = True) -> None:
        self.store, self.load_balancer = store, load_balancer
        self._cluster_ips, self._ingress_ips = _Addresses("127.96"), _Addresses("127.97")
        self._forwarders: dict[str, Forwarder] = {}  # by service uid

    def endpoints(self, service: Obj) -> list[Obj]:
        """The Running pods the service's selector picks (none without a selector)."""
        selector = service["spec"].get("selector") or {}
        namespace = service["metadata"]["namespace"]
        return [
            pod
            for pod in self.store.list("pods", namespace)
            if selector
            and all(pod["metadata"].get("labels", {}).get(k) == v for k, v in selector.items())
            and pod["status"].get("phase") == "Running"
            and not pod["metadata"].get("deletionTimestamp")
        ]

    async def create(self, body: Obj, namespace: str) -> Obj:
        spec = copy.deepcopy(body.get("spec") or {})
        kind = spec.setdefault("type", "ClusterIP")
        if kind not in KINDS:
            raise _invalid(f'spec.type: Unsupported value: "{kind}"')
        ports = spec.get("ports")
        if not ports or not all(isinstance(p, dict) and isinstance(p.get("port"), int)
                                for p in ports):  # fmt: skip
            raise _invalid("spec.ports: Required value")
        meta = new_metadata(body, namespace, "services")
        if self.store.find("services", namespace, meta["name"]):
            self.store.create("services", {"metadata": meta})  # the 409, in the store's words
        listeners: list[tuple[socket.socket, int | str]] = []
        try:
            for port in ports:
                port.setdefault("protocol", "TCP")
                port.setdefault("targetPort", port["port"])
            numbers = [p["port"] for p in ports]
            spec["clusterIP"], socks = self._address(self._cluster_ips, numbers)
            spec["clusterIPs"] = [spec["clusterIP"]]
            listeners += zip(socks, [p["targetPort"] for p in ports], strict=True)
            if kind != "ClusterIP":
                for port in ports:
                    sock, port["nodePort"] = self._node_port(port.get("nodePort"))
                    listeners.append((sock, port["targetPort"]))
            status: Obj = {"loadBalancer": {}}
            if kind == "LoadBalancer" and self.load_balancer:
                ip, socks = self._address(self._ingress_ips, numbers)
                listeners += zip(socks, [p["targetPort"] for p in ports], strict=True)
                status["loadBalancer"] = {"ingress": [{"ip": ip, "ipMode": "VIP"}]}
        except BaseException:
            for sock, _ in listeners:
                sock.close()
            raise
        spec.setdefault("sessionAffinity", "None")
        service = {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": spec,
                   "status": status}  # fmt: skip
        forwarder = Forwarder(service, self.endpoints)
        self._forwarders[meta["uid"]] = forwarder
        for sock, target in listeners:
            await forwarder.listen(sock, target)
        return self.store.create("services", service)

    @staticmethod
    def _address(pool: _Addresses, ports: list[int]) -> tuple[str, list[socket.socket]]:
        for _ in range(ADDRESS_TRIES):
            ip = pool.take()
            if (socks := _bind_all(ip, ports)) is not None:
                return ip, socks
        raise ApiError(500, "InternalError", "the fake found no free loopback address")

    def _node_port(self, asked: int | None) -> tuple[socket.socket, int]:
        if asked is not None:
            if asked not in NODE_PORTS:
                raise _invalid(f"spec.ports[].nodePort: Invalid value: {asked}: not in range")
            if (sock := bind(POD_IP, asked)) is None:
                raise _invalid(f"spec.ports[].nodePort: Invalid value: {asked}: "
                               "provided port is already allocated")  # fmt: skip
            return sock, asked
        start = random.randrange(len(NODE_PORTS))
        for i in range(len(NODE_PORTS)):
            port = NODE_PORTS[(start + i) % len(NODE_PORTS)]
            if (sock := bind(POD_IP, port)) is not None:
                return sock, port
        raise _invalid("spec.ports[].nodePort: Internal error: range is full")

    async def delete(self, namespace: str, name: str) -> Obj:
        gone = self.store.delete("services", namespace, name)
        if forwarder := self._forwarders.pop(gone["metadata"]["uid"], None):
            await forwarder.close()
        return gone

    async def close(self) -> None:
        for forwarder in self._forwarders.values():
            await forwarder.close()
        self._forwarders.clear()
