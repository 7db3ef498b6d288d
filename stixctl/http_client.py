"""A request to a remote API server over HTTP(S) (stdlib `http.client`), read as frames.

Imported only when the command goes to a remote server (`stixctl.endpoint`): a command on the
local socket never loads `http.client` or `ssl`.
"""

from __future__ import annotations

import http.client
import json
import urllib.parse
from collections.abc import Generator
from typing import Any

from stixctl.endpoint import Remote
from stixproto import PROTOCOL_VERSION
from stixproto.errors import DaemonUnavailable, PermissionDenied, ProtocolError
from stixproto.framing import recv_frame

REQUEST_PATH = "/api/v1/request"
HEALTH_PATH = "/api/v1/health"
FRAMES = "application/x-stix-frames"
CONNECT_TIMEOUT = 15.0
HEALTH_TIMEOUT = 10.0
MAX_HEALTH = 64 * 1024


def proxy_login(endpoint: str) -> PermissionDenied:
    return PermissionDenied(
        f"authentication required by a proxy in front of {endpoint}; sign in to it in a "
        f"browser (or ask its admin for a way past it), then run `stixctl api login {endpoint}` "
        "again"
    )


def unreachable(remote: Remote, exc: BaseException) -> DaemonUnavailable:
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return DaemonUnavailable(
        f"cannot reach the API server {remote.endpoint}: {reason}; check it with "
        "`stixctl api status`"
    )


def lost(remote: Remote) -> DaemonUnavailable:
    return DaemonUnavailable(
        f"the connection to the API server {remote.endpoint} was lost; clusters and jobs keep "
        "running — check them with `stixctl status` and `stixctl queue`"
    )


def _connect(remote: Remote, timeout: float) -> tuple[http.client.HTTPConnection, str]:
    url = urllib.parse.urlsplit(remote.endpoint)
    try:
        port = url.port
    except ValueError:
        raise unreachable(remote, ValueError("its port is not a number")) from None
    host = url.hostname or ""
    if url.scheme == "https":
        import ssl

        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            host, port, timeout=timeout, context=ssl.create_default_context()
        )
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    return conn, url.path.rstrip("/")


def _check(remote: Remote, resp: http.client.HTTPResponse, want: str) -> None:
    """Refuse an answer that is not the server's (an SSO proxy's page, a redirect, another
    service), in one line; an answer of `want` passes, whatever its status."""
    kind = (resp.getheader("Content-Type") or "").split(";")[0].strip().lower()
    if kind == want:
        return
    if kind == "text/html" or 300 <= resp.status < 400 or resp.status in (401, 403, 407):
        raise proxy_login(remote.endpoint)
    raise DaemonUnavailable(
        f"{remote.endpoint} answered HTTP {resp.status} {resp.reason} ({kind or 'no type'}), "
        "not a stix API server's answer; check the endpoint"
    )


class _Body:
    """An HTTP response body as the `recv` that `recv_frame` reads from."""

    def __init__(self, resp: http.client.HTTPResponse) -> None:
        self.resp = resp

    def recv(self, bufsize: int, /) -> bytes:
        return self.resp.read(bufsize)


def http_frames(remote: Remote, body: bytes) -> Generator[bytes, None, None]:
    """POST one request body; yield the bodies of the frames that answer it (the caller stops
    after the final reply); `lost` when the answer ends before."""
    conn, prefix = _connect(remote, CONNECT_TIMEOUT)
    headers = {
        "Content-Type": FRAMES,
        "Accept": FRAMES,
        "Stix-Protocol": str(PROTOCOL_VERSION),
    }
    if remote.token:
        headers["Authorization"] = f"Bearer {remote.token}"
    try:
        try:
            conn.request("POST", prefix + REQUEST_PATH, body=body, headers=headers)
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            raise unreachable(remote, exc) from None
        _check(remote, resp, FRAMES)
        if conn.sock is not None:  # a log followed may stay silent for long: no read timeout
            conn.sock.settimeout(None)
        reader = _Body(resp)
        while True:
            try:
                frame = recv_frame(reader)
            except (ProtocolError, OSError, http.client.HTTPException):
                frame = None
            if frame is None:
                raise lost(remote)
            yield frame
    finally:
        conn.close()


def health(remote: Remote) -> dict[str, Any]:
    """The server's `/api/v1/health` answer (no token needed), or a one-line error."""
    conn, prefix = _connect(remote, HEALTH_TIMEOUT)
    try:
        try:
            conn.request("GET", prefix + HEALTH_PATH, headers={"Accept": "application/json"})
            resp = conn.getresponse()
            _check(remote, resp, "application/json")
            data = resp.read(MAX_HEALTH)
        except (OSError, http.client.HTTPException) as exc:
            raise unreachable(remote, exc) from None
    finally:
        conn.close()
    try:
        answer = json.loads(data)
    except ValueError:
        answer = None
    if resp.status != 200 or not isinstance(answer, dict) or "protocol" not in answer:
        raise DaemonUnavailable(
            f"{remote.endpoint} answered HTTP {resp.status} without a stix health report; "
            "check the endpoint"
        )
    return answer
