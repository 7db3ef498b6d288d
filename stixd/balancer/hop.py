"""What one try of a request at a replica shares between plain HTTP and WebSocket: the headers
passed on each way, the errors that move a request to another replica, how a try can miss."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

import aiohttp
from multidict import MultiMapping

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
EJECTING = (aiohttp.ClientConnectorError, aiohttp.ClientOSError, aiohttp.ConnectionTimeoutError)
"""Connection refused, unreachable, reset, or no connection within the connect timeout."""
RETRYING = (*EJECTING, aiohttp.ServerDisconnectedError)
"""A pooled connection the replica closed just as it was reused is a race, not a dead replica:
retried elsewhere without an ejection (a dead one refuses the next connection anyway)."""


class Miss(enum.Enum):
    """A try that sent nothing to the client, so the request may go to another replica."""

    FAILED = "failed"
    """Refused, reset or closed: the replica may be ejected."""
    SILENT = "silent"
    """No answer within the stream timeout: the replica is up but did not speak."""


def _tokens(headers: MultiMapping[str]) -> set[str]:
    """What the Connection headers name, lower case."""
    return {t.strip().lower() for v in headers.getall("Connection", ()) for t in v.split(",")}


FORWARDED = frozenset({"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"})
NOT_FORWARDED = HOP_BY_HOP | FORWARDED | {"host", "expect"}
"""Never passed on to a replica: besides these, the ones a Connection header names."""
NOT_RETURNED = HOP_BY_HOP | {"content-length"}
"""Never passed back to the client (the balancer frames the answer itself)."""


class Asked(Protocol):
    """A client's request as the headers for its replica are made from it: the front's
    (`stixd.balancer.asked.Request`) or aiohttp's (a WebSocket upgrade)."""

    @property
    def headers(self) -> MultiMapping[str]: ...

    @property
    def remote(self) -> str | None: ...

    @property
    def scheme(self) -> str: ...

    @property
    def host(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Refusal:
    """An answer of the balancer's own, one line of text."""

    status: int
    text: str
    headers: tuple[tuple[str, str], ...] = ()
    closes: bool = False
    """The connection is closed after it."""


def upstream_headers(request: Asked, drop: frozenset[str] = frozenset()) -> list[tuple[str, str]]:
    """The client's headers less hop-by-hop ones, Host (the replica's is set on the way) and
    ``drop``, with X-Forwarded-For/-Proto/-Host added."""
    headers = request.headers
    dropped = NOT_FORWARDED | drop if drop else NOT_FORWARDED
    if "Connection" in headers:
        dropped = dropped | _tokens(headers)
    out = [(k, v) for k, v in headers.items() if k.lower() not in dropped]
    peer = request.remote or ""
    before = headers.get("X-Forwarded-For")
    out.append(("X-Forwarded-For", f"{before}, {peer}" if before else peer))
    out.append(("X-Forwarded-Proto", request.scheme))
    if request.host:
        out.append(("X-Forwarded-Host", request.host))
    return out


def downstream_headers(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The replica's headers less hop-by-hop ones and Content-Length (set by the answer)."""
    named = [v for k, v in headers if k.lower() == "connection"]
    drop = NOT_RETURNED | {t.strip().lower() for v in named for t in v.split(",")}
    return [(k, v) for k, v in headers if k.lower() not in drop]


def one_line(status: int, text: str) -> Refusal:
    return Refusal(status, text + "\n")
