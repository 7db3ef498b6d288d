"""Services as the API server and a cloud controller leave them: a ClusterIP, node ports for
NodePort and LoadBalancer, and a LoadBalancer ingress address (unless the test's cluster has no
load balancer, when it stays empty as on a bare-metal cluster).

Addresses are loopback (ClusterIPs from 127.96.0.0/16, the ingress 127.0.0.1) and nothing
listens on them: the fake records ports, it does not forward them."""

from __future__ import annotations

import copy
import itertools

from tests.kube_fake.meta import ApiError, Obj, new_metadata

NODE_PORTS = range(30000, 32768)


class Services:
    def __init__(self, load_balancer: bool = True) -> None:
        self.load_balancer = load_balancer
        self._ips = (f"127.96.{i // 250}.{i % 250 + 1}" for i in itertools.count())
        self._used_ports: set[int] = set()

    def new(self, body: Obj, namespace: str) -> Obj:
        spec = copy.deepcopy(body.get("spec") or {})
        kind = spec.setdefault("type", "ClusterIP")
        if kind not in ("ClusterIP", "NodePort", "LoadBalancer"):
            raise ApiError(
                422, "Invalid", f'Service is invalid: spec.type: Unsupported value: "{kind}"'
            )
        if not spec.get("ports"):
            raise ApiError(422, "Invalid", "Service is invalid: spec.ports: Required value")
        spec.setdefault("clusterIP", next(self._ips))
        spec["clusterIPs"] = [spec["clusterIP"]]
        spec.setdefault("sessionAffinity", "None")
        for port in spec["ports"]:
            port.setdefault("protocol", "TCP")
            port.setdefault("targetPort", port.get("port"))
            if kind != "ClusterIP" and "nodePort" not in port:
                port["nodePort"] = self._free_node_port()
        status: Obj = {"loadBalancer": {}}
        if kind == "LoadBalancer" and self.load_balancer:
            status["loadBalancer"] = {"ingress": [{"ip": "127.0.0.1", "ipMode": "VIP"}]}
        meta = new_metadata(body, namespace, "services")
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta,
            "spec": spec,
            "status": status,
        }

    def _free_node_port(self) -> int:
        for port in NODE_PORTS:
            if port not in self._used_ports:
                self._used_ports.add(port)
                return port
        raise ApiError(422, "Invalid", "Service is invalid: spec.ports[0].nodePort: range is full")

    def release(self, service: Obj) -> None:
        for port in service["spec"].get("ports", []):
            self._used_ports.discard(port.get("nodePort", -1))
