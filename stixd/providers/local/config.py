"""The ``local:`` section of the config file."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal

import msgspec

from stixproto.bounds import MAX_COUNT

NetworkMode = Literal["auto", "namespace", "host"]
"""``auto``: a network namespace per node where this machine allows it (root, `ip`), else the
host's network; ``namespace``: always, or a launch fails saying why; ``host``: never."""

DEFAULT_SUBNET = "10.177.0.0/16"
"""Where local nodes get their addresses: private, and rarely used by VPNs or Docker."""


_SHARED_SPACE = ipaddress.IPv4Network("100.64.0.0/10")
"""Carrier-grade NAT space: not "private" to Python, yet never routed on the internet."""


class LocalConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    max_nodes: Annotated[int, msgspec.Meta(ge=1, le=MAX_COUNT)] = 16
    network: NetworkMode = "auto"
    subnet: str = DEFAULT_SUBNET
    outbound: bool = True
    """Nodes in namespaces reach beyond this machine (IPv4 forwarding and a masquerade rule)."""

    def __post_init__(self) -> None:
        network = ipaddress.ip_network(self.subnet, strict=True)  # ValueError names the text
        private = isinstance(network, ipaddress.IPv4Network) and (
            network.is_private or network.subnet_of(_SHARED_SPACE)
        )
        if not private:
            raise ValueError(f"local.subnet {self.subnet!r} must be a private IPv4 network")
        if not 8 <= network.prefixlen <= 24:
            raise ValueError(f"local.subnet {self.subnet!r} must be between a /8 and a /24")
