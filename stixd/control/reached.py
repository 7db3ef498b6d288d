"""A service's endpoint as the client asking can call it.

A balancer listening on every address (`daemon.balancer_host: 0.0.0.0`) reports its endpoint on
127.0.0.1, which is right for a client on the server's machine (the socket) and wrong for a
client of the HTTP API on another machine: that one is shown the endpoint at the host it
reached the API server by (`REACHED`, set by stixd/control/http_api.py for each request).
"""

from __future__ import annotations

import contextvars
import re
from urllib.parse import urlsplit

REACHED: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "stix_reached_as", default=None
)
"""The host an HTTP client named in its request (None: the socket)."""

WILDCARDS = frozenset({"", "0.0.0.0", "::"})
_HOST = re.compile(r"[A-Za-z0-9.-]{1,253}|[0-9A-Fa-f:.]{2,45}")
"""A host name, an IPv4 or an IPv6 address: what a client's Host header may give back to it."""


def endpoint(url: str | None, balancer_host: str, reached: str | None) -> str | None:
    """`url` (a balancer's endpoint) with its loopback host replaced by `reached` when the
    balancer listens on every address; unchanged otherwise (or when `reached` is not a host)."""
    if url is None or reached is None or balancer_host not in WILDCARDS:
        return url
    if not _HOST.fullmatch(reached):
        return url
    parts = urlsplit(url)
    if parts.hostname != "127.0.0.1" or parts.port is None:
        return url
    host = f"[{reached}]" if ":" in reached else reached
    return parts._replace(netloc=f"{host}:{parts.port}").geturl()


def for_client(url: str | None, balancer_host: str) -> str | None:
    """`endpoint` for the client of the request being handled."""
    return endpoint(url, balancer_host, REACHED.get())
