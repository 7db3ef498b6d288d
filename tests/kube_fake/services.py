"""Services as the API server, kube-proxy and a cloud controller leave them: a ClusterIP, node
ports for NodePort and LoadBalancer, a LoadBalancer ingress address (unless the fake's cluster
has no load balancer, when it stays empty as on bare metal) — and each of them really listening
on loopback (forwarding.py). ClusterIPs come from 127.96.0.0/16 and ingress addresses from
127.97.0.0/16, each fake starting at a random offset so fakes running side by side rarely meet;
node ports are 30000-32767 on 127.0.0.1, skipping any port something else holds. A PUT may
change a service's ports (not its type or ClusterIP); its load balancer and address stay."""

from __future__ import annotations

import asyncio
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
LB_FINALIZER = "service.kubernetes.io/load-balancer-cleanup"


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


def _bind_all_hosts(hosts: list[str], port: int) -> list[socket.socket]:
    socks: list[socket.socket] = []
    for host in hosts:
        sock = bind(host, port)
        if sock is None:
            for s in socks:
                s.close()
            raise _invalid(f"spec.ports[].port: Invalid value: {port}: the fake cannot bind it")
        socks.append(sock)
    return socks


def _listened(ports: list[Obj], kind: str, ingress: bool) -> list[int]:
    """The service port of each listener `create` makes, in its order."""
    numbers = [p["port"] for p in ports]
    node = numbers if kind != "ClusterIP" else []
    return [*numbers, *node, *(numbers if ingress else [])]


class Services:
    def __init__(
        self, store: Store, load_balancer: bool = True, load_balancer_delay: float = 0.0
    ) -> None:
        self.store, self.load_balancer = store, load_balancer
        self.load_balancer_delay = load_balancer_delay
        """Seconds before a LoadBalancer gets its address; meanwhile it carries only the
        cloud controller's cleanup finalizer (GKE takes about a minute)."""
        self.holding = False
        """Set by the ``load_balancer`` knob: new LoadBalancers get no address until released
        (a cloud that is out of addresses, or slow beyond any delay a test knows in advance)."""
        self._held: list[tuple[str, Obj]] = []  # (namespace, metadata) of each one held back
        self._cluster_ips, self._ingress_ips = _Addresses("127.96"), _Addresses("127.97")
        self._forwarders: dict[str, Forwarder] = {}  # by service uid
        self._ingress: dict[str, str] = {}  # by service uid: its load balancer's address
        self._slow: set[asyncio.Task[None]] = set()

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
            now = (
                kind == "LoadBalancer"
                and self.load_balancer
                and not self.load_balancer_delay
                and not self.holding
            )
            if now:
                ip, socks = self._address(self._ingress_ips, numbers)
                listeners += zip(socks, [p["targetPort"] for p in ports], strict=True)
                status["loadBalancer"] = {"ingress": [{"ip": ip, "ipMode": "VIP"}]}
        except BaseException:
            for sock, _ in listeners:
                sock.close()
            raise
        spec.setdefault("sessionAffinity", "None")
        if kind == "LoadBalancer" and self.load_balancer:
            meta["finalizers"] = [LB_FINALIZER]  # the cloud controller took it on
        service = {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": spec,
                   "status": status}  # fmt: skip
        forwarder = Forwarder(service, self.endpoints)
        self._forwarders[meta["uid"]] = forwarder
        for (sock, target), port in zip(listeners, _listened(ports, kind, now), strict=True):
            await forwarder.listen(sock, target, port)
        if now:
            self._ingress[meta["uid"]] = status["loadBalancer"]["ingress"][0]["ip"]
        made = self.store.create("services", service)
        if kind == "LoadBalancer" and self.load_balancer and not now and self.holding:
            self._held.append((namespace, meta))
        elif kind == "LoadBalancer" and self.load_balancer and not now:
            task = asyncio.get_running_loop().create_task(self._address_later(namespace, meta))
            self._slow.add(task)
            task.add_done_callback(self._slow.discard)
        return made

    async def hold(self, holding: bool) -> int:
        """Hold new LoadBalancers' addresses back, or give every one held back its address now
        (the ``load_balancer`` knob); returns how many got one."""
        self.holding = holding
        if holding:
            return 0
        held, self._held = self._held, []
        for namespace, meta in held:
            await self._give_address(namespace, meta)
        return len(held)

    async def _address_later(self, namespace: str, meta: Obj) -> None:
        """A slow cloud's load balancer: its address comes ``load_balancer_delay`` late."""
        await asyncio.sleep(self.load_balancer_delay)
        await self._give_address(namespace, meta)

    async def _give_address(self, namespace: str, meta: Obj) -> None:
        """The load balancer of the service ``meta`` names gets its address (unless the service
        is gone or made again meanwhile)."""
        service = self.store.find("services", namespace, meta["name"])
        forwarder = self._forwarders.get(meta["uid"])
        if service is None or forwarder is None or service["metadata"]["uid"] != meta["uid"]:
            return
        ports = service["spec"]["ports"]
        ip, socks = self._address(self._ingress_ips, [p["port"] for p in ports])
        for sock, port in zip(socks, ports, strict=True):
            await forwarder.listen(sock, port["targetPort"], port["port"])
        self._ingress[meta["uid"]] = ip
        service["status"] = {"loadBalancer": {"ingress": [{"ip": ip, "ipMode": "VIP"}]}}
        self.store.update("services", service)

    async def replace(self, body: Obj, namespace: str, name: str) -> Obj:
        """A PUT of the service: its ports may change (a port kept keeps its node port and
        listeners; a new one gets them), its ClusterIP, type and load balancer stay. A
        ``resourceVersion`` other than the stored one is a 409 Conflict, as on etcd."""
        old = self.store.get("services", namespace, name)
        meta, spec = dict(body.get("metadata") or {}), copy.deepcopy(body.get("spec") or {})
        version = meta.get("resourceVersion")
        if version and version != old["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on services "{name}"'
                           ": the object has been modified; please apply your changes to the "
                           "latest version and try again")  # fmt: skip
        kind = spec.setdefault("type", old["spec"]["type"])
        if kind != old["spec"]["type"]:
            raise _invalid("spec.type: the fake cannot change a service's type")
        if spec.setdefault("clusterIP", old["spec"]["clusterIP"]) != old["spec"]["clusterIP"]:
            raise _invalid("spec.clusterIPs[0]: Invalid value: field is immutable")
        ports = spec.get("ports")
        if not ports or not all(isinstance(p, dict) and isinstance(p.get("port"), int)
                                for p in ports):  # fmt: skip
            raise _invalid("spec.ports: Required value")
        before = {p["port"]: p for p in old["spec"]["ports"]}
        forwarder = self._forwarders[old["metadata"]["uid"]]
        ingress = self._ingress.get(old["metadata"]["uid"])
        for port in ports:
            port.setdefault("protocol", "TCP")
            port.setdefault("targetPort", port["port"])
            had = before.get(port["port"])
            if had is not None:
                if kind != "ClusterIP":
                    port.setdefault("nodePort", had.get("nodePort"))
                continue
            hosts = [spec["clusterIP"], *([ingress] if ingress else [])]
            socks = _bind_all_hosts(hosts, port["port"])
            if kind != "ClusterIP":
                sock, port["nodePort"] = self._node_port(port.get("nodePort"))
                socks.append(sock)
            for sock in socks:
                await forwarder.listen(sock, port["targetPort"], port["port"])
        for gone in set(before) - {p["port"] for p in ports}:
            await forwarder.drop(gone)
        spec.setdefault("sessionAffinity", "None")
        meta.update({k: old["metadata"][k] for k in ("name", "namespace", "uid",
                                                     "creationTimestamp")})  # fmt: skip
        meta.setdefault("labels", {})
        if "finalizers" in old["metadata"]:
            meta.setdefault("finalizers", old["metadata"]["finalizers"])
        service = {**old, "metadata": meta, "spec": spec, "status": old["status"]}
        forwarder.service = service
        return self.store.update("services", service)

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
        self._ingress.pop(gone["metadata"]["uid"], None)
        if forwarder := self._forwarders.pop(gone["metadata"]["uid"], None):
            await forwarder.close()
        return gone

    async def close(self) -> None:
        for task in list(self._slow):
            task.cancel()
        await asyncio.gather(*self._slow, return_exceptions=True)
        for forwarder in self._forwarders.values():
            await forwarder.close()
        self._forwarders.clear()
