"""The Kubernetes API as the provider calls it: JSON in, JSON out, every call bounded.

Through a context's ``kubernetes_asyncio`` client (its auth, TLS and proxy settings), without
its models: objects stay the server's JSON. An answer of 429 or 5xx, or a connection that
fails, is tried again a few times (429's ``Retry-After`` honoured, up to a bound); the whole
call, retries included, ends within its timeout. What fails is one ``KubeApiError`` line
naming the context, the call and the server's own message.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import anyio

from stixproto.errors import ProvisionError

if TYPE_CHECKING:
    from kubernetes_asyncio.client import ApiClient

API_TIMEOUT_S = 30.0
ATTEMPTS = 4
RETRY_AFTER_MAX_S = 2.0
_RETRIED = (0, 429, 500, 502, 503, 504)
"""Statuses tried again; 0 is a connection that failed before any answer."""


class KubeApiError(ProvisionError):
    """An API call failed; ``status`` is the HTTP status (0: no answer)."""

    def __init__(self, message: str, status: int = 0, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


def path(*parts: str) -> str:
    """``/api/v1/...`` with each part quoted (names come from configs and clusters)."""
    return "/api/v1/" + "/".join(quote(p, safe="") for p in parts)


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0][:300] if text.strip() else ""


def _said(status: int, reason: str, answer: dict[str, Any] | None) -> str:
    """What a failed try amounts to, after ``<context>: <method> <path>``."""
    if status == 0:
        return f"could not connect: {reason}"
    if answer is None:
        return f"answered {status} with no Kubernetes object (is the server URL an API server?)"
    message = _first_line(str(answer.get("message") or ""))
    return f"answered {status} {reason}" + (f": {message}" if message and message != reason else "")


class KubeApi:
    """One context's API server."""

    def __init__(self, client: ApiClient, context: str, timeout: float = API_TIMEOUT_S) -> None:
        self.client = client
        self.context = context
        self.timeout = timeout

    async def call(
        self,
        method: str,
        where: str,
        *,
        query: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        what = f"Kubernetes context {self.context}: {method} {where}"
        last = ""
        try:
            with anyio.fail_after(self.timeout):
                for attempt in range(ATTEMPTS):
                    status, reason, answer, wait = await self._once(method, where, query, body)
                    if 200 <= status < 300 and answer is not None:
                        return answer
                    last = f"{what} {_said(status, reason, answer)}"
                    if status not in _RETRIED or attempt == ATTEMPTS - 1:
                        why = (answer or {}).get("reason") or reason
                        raise KubeApiError(last, status, str(why))
                    await anyio.sleep(wait if wait is not None else 0.2 * 2**attempt)
        except TimeoutError:
            after = f" (last: {last})" if last else ""
            raise KubeApiError(f"{what} got no answer within {self.timeout:g} s{after}") from None
        raise KubeApiError(last)  # not reached: the last attempt raised

    async def _once(
        self, method: str, where: str, query: dict[str, str] | None, body: dict[str, Any] | None
    ) -> tuple[int, str, dict[str, Any] | None, float | None]:
        """(status, reason, the answer's JSON object, how long the server asks to wait) of one
        try; a connection that fails is status 0 with its error as the reason; a 2xx answer
        that is not a JSON object is None."""
        import aiohttp  # the client's own transport, loaded with it

        headers = {"Accept": "application/json", "Content-Type": "application/json"}
        try:
            response = await self.client.call_api(
                where,
                method,
                query_params=list((query or {}).items()),
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _return_http_data_only=True,
            )
            async with response:
                raw = await response.read()
                status, reason = int(response.status), str(response.reason or "")
                retry_after = response.headers.get("Retry-After", "")
        except (aiohttp.ClientError, OSError) as exc:
            return 0, _first_line(str(exc)) or type(exc).__name__, {}, None
        answer: dict[str, Any] | None
        try:
            decoded = json.loads(raw) if raw else {}
        except ValueError:
            decoded = None
        if isinstance(decoded, dict):
            answer = decoded
        elif 200 <= status < 300:
            answer = None  # a proxy's web page, a list, a bare value: not what was asked for
        else:
            text = raw.decode(errors="replace") if decoded is None else ""
            answer = {"message": _first_line(text)}
        wait = None
        if retry_after.isdigit():
            wait = min(float(retry_after), RETRY_AFTER_MAX_S)
        return status, reason, answer, wait
