"""The Kubernetes API as the provider calls it: JSON in, JSON out, every call bounded.

Through a context's ``kubernetes_asyncio`` client (its auth, TLS and proxy settings), without
its models: objects stay the server's JSON. An answer of 429 or 5xx, or a connection that
fails, is tried again a few times (429's ``Retry-After`` honoured, up to a bound); the whole
call, retries included, ends within its timeout. What fails is one ``KubeApiError`` line
naming the context, the call and the server's own message.
"""

from __future__ import annotations

import errno
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import anyio

from stixproto.errors import ProvisionError

if TYPE_CHECKING:
    from kubernetes_asyncio.client import ApiClient

API_TIMEOUT_S = 30.0
ATTEMPTS = 4
MAX_ANSWER_BYTES = 32 * 2**20
"""The most of one answer read: a page of ``PAGE_SIZE`` objects is a few MiB."""
PAGE_SIZE = 500
"""Objects per page of a list (kubectl's own chunk size)."""
MAX_LIST_ITEMS = 200_000
"""The most objects one list reads (so at most ``MAX_LIST_ITEMS // PAGE_SIZE + 1`` pages)."""
LIST_TIMEOUT_S = 120.0
"""A whole list, every page and one restart included (at most 4 calls' time)."""
MAX_TOKEN_CHARS = 8192
RETRY_AFTER_MAX_S = 2.0
CERT_REFUSED_HINT = (
    " (if the server refused the client certificate, check the user's client-certificate-data "
    "and client-key-data in the kubeconfig)"
)
_RETRIED = (0, 429, 500, 502, 503, 504)
"""Statuses tried again; 0 is a connection that failed before any answer."""


class AnswerTooLarge(Exception):
    def __init__(self, cap: int) -> None:
        self.cap = cap


async def read_capped(response: Any, cap: int) -> bytes:
    """The body of an ``aiohttp`` response, refused past ``cap`` bytes (its declared length
    first, then as it comes): a broken or hostile server cannot fill the daemon's memory."""
    declared = response.content_length
    if declared is not None and declared > cap:
        raise AnswerTooLarge(cap)
    body = bytearray()
    async for chunk in response.content.iter_chunked(2**16):
        body += chunk
        if len(body) > cap:
            raise AnswerTooLarge(cap)
    return bytes(body)


def tls_problem(exc: BaseException) -> str | None:
    """What a TLS failure of a connection to the API server means, in a few words with the
    kubeconfig's field to fix; None for an error that is no TLS failure."""
    import aiohttp

    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        said = exc.certificate_error
        why = getattr(said, "verify_message", "") or _first_line(str(said))
        return (
            f"the API server's TLS certificate is not trusted ({why}); check the cluster's "
            "certificate-authority-data (or certificate-authority) in the kubeconfig"
        )
    if isinstance(exc, aiohttp.ClientConnectorSSLError):
        why = _first_line(str(exc.os_error)).split(" (_ssl.c")[0]
        return (
            f"the TLS handshake with the API server failed ({why}); check the cluster's server "
            "URL and the user's client-certificate-data and client-key-data in the kubeconfig"
        )
    return None


class KubeApiError(ProvisionError):
    """An API call failed; ``status`` is the HTTP status (0: no answer)."""

    def __init__(self, message: str, status: int = 0, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


def _as_is(item: Any) -> Any:
    return item


class _Expired(Exception):
    """A list's continue token expired: the list starts over."""


def path(*parts: str) -> str:
    """``/api/v1/...`` with each part quoted (names come from configs and clusters)."""
    return "/api/v1/" + "/".join(quote(p, safe="") for p in parts)


def _size(count: int) -> str:
    return f"{count // 2**20} MiB" if count >= 2**20 else f"{count // 2**10} KiB"


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

    def __init__(
        self,
        client: ApiClient,
        context: str,
        timeout: float = API_TIMEOUT_S,
        *,
        page_size: int = PAGE_SIZE,
        max_bytes: int = MAX_ANSWER_BYTES,
    ) -> None:
        self.client = client
        self.context = context
        self.timeout = timeout
        self.page_size = page_size
        self.max_bytes = max_bytes

    async def list_all(
        self,
        where: str,
        *,
        query: dict[str, str] | None = None,
        max_items: int = MAX_LIST_ITEMS,
        keep: Callable[[Any], Any] = _as_is,
    ) -> dict[str, Any]:
        """Every object of the collection at ``where`` (``{"items": [...]}``, as one list
        answer), read in pages of ``page_size`` with ``limit`` and ``continue``. A continue
        token that expired (410, the server compacted meanwhile) starts the list over, once.
        More than ``max_items`` objects, or more pages than they make, is a one-line error.
        Each object is put through ``keep`` as its page comes (what it returns is kept, None
        is left out): a caller that needs a little of each object holds only that."""
        within = min(LIST_TIMEOUT_S, 4 * self.timeout)
        deadline = anyio.current_time() + within
        for attempt in range(2):
            try:
                items = await self._pages(where, query or {}, max_items, keep, deadline, within)
                return {"items": items}
            except _Expired:
                if attempt:
                    raise KubeApiError(
                        f"Kubernetes context {self.context}: GET {where} kept changing faster "
                        "than it could be listed (its continue token expired twice); retry",
                        410,
                        "Expired",
                    ) from None
        raise AssertionError("not reached")

    async def _pages(
        self,
        where: str,
        query: dict[str, str],
        max_items: int,
        keep: Callable[[Any], Any],
        deadline: float,
        within: float,
    ) -> list[Any]:
        items: list[Any] = []
        read, token = 0, ""
        for _ in range(max_items // self.page_size + 1):
            asked = {**query, "limit": str(self.page_size)} | ({"continue": token} if token else {})
            left = deadline - anyio.current_time()
            if left <= 0:
                raise KubeApiError(
                    f"Kubernetes context {self.context}: GET {where} was not listed within "
                    f"{within:g} s ({read} objects read)"
                )
            try:
                answer = await self.call("GET", where, query=asked, timeout=min(self.timeout, left))
            except KubeApiError as exc:
                if token and exc.status == 410:
                    raise _Expired from None
                raise
            page = answer.get("items")
            read += len(page) if isinstance(page, list) else 0
            items += (
                [k for i in page if (k := keep(i)) is not None] if isinstance(page, list) else []
            )
            if read > max_items:
                break
            meta = answer.get("metadata")
            more = meta.get("continue") if isinstance(meta, dict) else None
            if not more or not isinstance(more, str) or len(more) > MAX_TOKEN_CHARS:
                return items
            token = more
        raise KubeApiError(
            f"Kubernetes context {self.context}: GET {where} holds more than {max_items} "
            "objects, more than stix lists"
        )

    async def call(
        self,
        method: str,
        where: str,
        *,
        query: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (a bound on every try together)
    ) -> dict[str, Any]:
        what = f"Kubernetes context {self.context}: {method} {where}"
        last = ""
        bound = self.timeout if timeout is None else timeout
        try:
            with anyio.fail_after(bound):
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
            raise KubeApiError(f"{what} got no answer within {bound:g} s{after}") from None
        raise KubeApiError(last)  # not reached: the last attempt raised

    def _client_cert(self) -> bool:
        """Whether this context's user is a client certificate."""
        return bool(getattr(self.client.configuration, "cert_file", None))

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
                status, reason = int(response.status), str(response.reason or "")
                retry_after = response.headers.get("Retry-After", "")
                raw = await read_capped(response, self.max_bytes)
        except (aiohttp.ClientError, OSError) as exc:
            if (tls := tls_problem(exc)) is not None:  # the same next time: not tried again
                raise KubeApiError(f"Kubernetes context {self.context}: {tls}", 0, "TLS") from None
            said = _first_line(str(exc)) or type(exc).__name__
            dropped = isinstance(exc, aiohttp.ServerDisconnectedError) or (
                getattr(exc, "errno", None) == errno.ECONNRESET
            )
            if dropped and self._client_cert():
                said += CERT_REFUSED_HINT  # TLS 1.3 refuses a certificate after the handshake
            return 0, said, {}, None
        except AnswerTooLarge as exc:
            raise KubeApiError(
                f"Kubernetes context {self.context}: {method} {where} answered more than "
                f"{_size(exc.cap)}, more than stix reads of one answer (is the server URL an API "
                "server?)"
            ) from None
        answer: dict[str, Any] | None
        try:
            decoded = json.loads(raw) if raw else {}
        except (ValueError, RecursionError):  # garbage, or nested past the parser's depth
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
