"""One command in a pod over the API server's ``pods/exec`` WebSocket, with nothing but aiohttp.

The connection is made on the aiohttp session of the context's ``kubernetes_asyncio``
``ApiClient`` (its TLS context already holds the CA, the verify flag and a client certificate)
with the client's own auth headers (a bearer token, refreshed by its hook). kubernetes_asyncio's
``WsApiClient`` is not used: it asks for v4 only and hides which protocol the server chose, and
v5 is what lets stdin be closed.

Frames carry their channel in the first byte: 0 stdin, 1 stdout, 2 stderr, 3 the final
``Status`` (the exit code), and on v5 255 + channel closes that stream. Every call is bounded by a
timeout; a stream that ends without a status, an API error or a pod gone mid-way fails the call
with one ``ExecError`` line.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

import anyio
from yarl import URL

from stixd.providers.kubernetes.api import AnswerTooLarge, read_capped, tls_problem
from stixd.providers.kubernetes.seams import PodRef
from stixd.providers.kubernetes.shapes import get, maps
from stixd.providers.shared.lazy import lazy_module
from stixproto.errors import ProvisionError

if TYPE_CHECKING:
    import aiohttp
    from kubernetes_asyncio.client import ApiClient
else:  # loaded by the first pod exec: a daemon with no Kubernetes does not pay for it
    aiohttp = lazy_module("aiohttp")

PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
STDIN, STDOUT, STDERR, STATUS, CLOSE = 0, 1, 2, 3, 255
STDIN_FRAME = 256 * 1024
MAX_FRAME = 64 * 1024 * 1024  # one WebSocket message from the API server
MAX_OUTPUT = 256 * 1024 * 1024  # what ``run`` keeps of a command's stdout and stderr together
CHECK_POD_WITHIN_S = 5.0
MAX_POD_BYTES = 2**20
"""The most of one pod's answer read (a pod object is a few KiB)."""


class ExecError(ProvisionError):
    """An exec into a pod failed; ``retryable`` tells whether the same call may work later."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class ExecResult:
    status: int
    stdout: bytes
    stderr: bytes


def describe(argv: Sequence[str], limit: int = 60) -> str:
    """The command as a message quotes it, cut short."""
    text = shlex.join(argv)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_status(data: bytes) -> dict[str, Any]:
    """The final ``Status`` of channel 3 (one that cannot be read is a failure saying so)."""
    try:
        status = json.loads(data)
    except (ValueError, RecursionError):
        status = None
    if not isinstance(status, dict):
        return {"status": "Failure", "message": f"unreadable exit status {data[:100]!r}"}
    return status


def exit_code(status: dict[str, Any], pod: PodRef) -> int:
    """The exit code in the final ``Status``; a failure without one (the runtime could not start
    the command) is an error."""
    if status.get("status") == "Success":
        return 0
    for cause in maps(get(status, "details", "causes")):
        if cause.get("reason") == "ExitCode":
            try:
                return int(str(cause.get("message")))
            except (TypeError, ValueError):
                break
    message = str(status.get("message") or status.get("reason") or status)
    raise ExecError(f"{pod}: exec failed: {message.splitlines()[0][:300]}", retryable=True)


async def _headers(client: ApiClient) -> dict[str, str]:
    headers: dict[str, str] = {}
    for setting in (await client.configuration.auth_settings()).values():
        if setting.get("in") == "header" and setting.get("value"):
            headers[str(setting["key"])] = str(setting["value"])
    return headers


def _handshake_error(status: int, pod: PodRef) -> ExecError:
    context = pod.context
    if status == 404:
        return ExecError(f"{pod} does not exist (deleted, or never made)", retryable=False)
    if status == 401:
        return ExecError(
            f"the API server of context {context} refused its credentials (401): renew them "
            "in the kubeconfig",
            retryable=False,
        )
    if status == 403:
        return ExecError(
            f"context {context} may not exec into {pod} (403): grant `create` on `pods/exec` "
            f"in namespace {pod.namespace}",
            retryable=False,
        )
    if status == 400:
        return ExecError(
            f"cannot exec into {pod} (400): it is not running, or has no container {pod.container}",
            retryable=True,
        )
    return ExecError(
        f"the API server of context {context} answered {status} to an exec into {pod}; try again",
        retryable=status == 429 or status >= 500,
    )


def _exec_url(host: str, pod: PodRef, argv: Sequence[str], stdin: bool) -> URL:
    query = [
        ("container", pod.container),
        ("stdin", "true" if stdin else "false"),
        ("stdout", "true"),
        ("stderr", "true"),
        ("tty", "false"),
        *(("command", word) for word in argv),
    ]
    path = f"/api/v1/namespaces/{quote(pod.namespace)}/pods/{quote(pod.name)}/exec"
    return URL(f"{host.rstrip('/')}{path}?{urlencode(query, quote_via=quote)}", encoded=True)


class ExecChannel:
    """An open exec: stdin to send, (channel, bytes) frames to read until the server closes."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, pod: PodRef) -> None:
        self.ws = ws
        self.pod = pod
        self.v5 = ws.protocol == PROTOCOLS[0]
        self._send_lock = anyio.Lock()

    async def send(self, data: bytes) -> None:
        """``data`` on stdin, in frames of at most ``STDIN_FRAME`` bytes."""
        view = memoryview(data)
        async with self._send_lock:
            for start in range(0, len(view), STDIN_FRAME):
                await self.ws.send_bytes(bytes([STDIN]) + view[start : start + STDIN_FRAME])

    async def close_stdin(self) -> None:
        """Tell the command its stdin is done (v5 only; on v4 the sender counts its bytes)."""
        if self.v5:
            async with self._send_lock:
                await self.ws.send_bytes(bytes([CLOSE, STDIN]))

    async def frames(self) -> AsyncIterator[tuple[int, bytes]]:
        while True:
            msg = await self.ws.receive()
            if msg.type == aiohttp.WSMsgType.BINARY:
                if msg.data:
                    yield msg.data[0], msg.data[1:]
            elif msg.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSING,
                aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.ERROR,
            ):
                return

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True), anyio.move_on_after(2):
            await self.ws.close()

    async def __aenter__(self) -> ExecChannel:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


async def connect(
    client: ApiClient,
    pod: PodRef,
    argv: Sequence[str],
    *,
    stdin: bool,
    heartbeat: float | None = None,
) -> ExecChannel:
    """Start ``argv`` in the pod; the caller bounds the time (``anyio.fail_after``). With a
    ``heartbeat``, a connection that answers no ping within half of it is closed (the caller
    must keep reading its frames, which is where the answers are seen)."""
    config = client.configuration
    session: aiohttp.ClientSession = client.rest_client.pool_manager
    try:
        ws = await session.ws_connect(
            _exec_url(str(config.host), pod, argv, stdin),
            protocols=PROTOCOLS,
            headers=await _headers(client),
            proxy=config.proxy or None,
            autoping=True,
            heartbeat=heartbeat,
            max_msg_size=MAX_FRAME,
        )
    except aiohttp.WSServerHandshakeError as exc:
        raise _handshake_error(exc.status, pod) from None
    except (aiohttp.ClientError, OSError) as exc:
        if (tls := tls_problem(exc)) is not None:
            raise ExecError(f"Kubernetes context {pod.context}: {tls}", retryable=False) from None
        raise ExecError(
            f"cannot reach the API server of context {pod.context}: {exc}", retryable=True
        ) from None
    return ExecChannel(ws, pod)


async def pod_trouble(client: ApiClient, pod: PodRef) -> str | None:
    """Why the pod can no longer run commands (gone, being deleted, not running), or None when
    it looks fine or cannot be read quickly."""
    url = f"{str(client.configuration.host).rstrip('/')}/api/v1/namespaces/{quote(pod.namespace)}"
    url += f"/pods/{quote(pod.name)}"
    session: aiohttp.ClientSession = client.rest_client.pool_manager
    try:
        with anyio.fail_after(CHECK_POD_WITHIN_S):
            async with session.get(
                url, headers=await _headers(client), proxy=client.configuration.proxy or None
            ) as answer:
                if answer.status == 404:
                    return "was deleted"
                if answer.status != 200:
                    return None
                body = json.loads(await read_capped(answer, MAX_POD_BYTES))
    except (TimeoutError, aiohttp.ClientError, OSError, ValueError, RecursionError, AnswerTooLarge):
        return None  # RecursionError: JSON nested past the parser's depth
    if get(body, "metadata", "deletionTimestamp"):
        return "is being deleted"
    phase = get(body, "status", "phase")
    if not isinstance(phase, str):
        return None  # not a pod's answer: nothing known of its trouble
    return None if phase == "Running" else f"is {phase[:64]}"


async def _feed(chan: ExecChannel, stdin: Sequence[bytes | Iterator[bytes]]) -> None:
    try:
        for part in stdin:
            if isinstance(part, bytes):
                await chan.send(part)
                continue
            while (chunk := await anyio.to_thread.run_sync(next, part, None)) is not None:
                await chan.send(chunk)
        await chan.close_stdin()
    except (ConnectionError, RuntimeError, aiohttp.ClientError):
        pass  # the command ended before reading it all: its status, or its absence, says why


async def _collect(
    chan: ExecChannel, out: bytearray, err: bytearray, what: str
) -> dict[str, Any] | None:
    """Read the exec to its end: its output into ``out``/``err``, and its final status."""
    status: dict[str, Any] | None = None
    async for channel, data in chan.frames():
        if channel == STDOUT:
            out += data
        elif channel == STDERR:
            err += data
        elif channel == STATUS:
            status = read_status(data)
        if len(out) + len(err) > MAX_OUTPUT:
            message = f"{chan.pod}: {what} printed more than {MAX_OUTPUT / 2**20:g} MiB"
            raise ExecError(message, retryable=False)
    return status


async def _exchange(
    chan: ExecChannel,
    stdin: Sequence[bytes | Iterator[bytes]],
    out: bytearray,
    err: bytearray,
    what: str,
) -> dict[str, Any] | None:
    """``_collect`` while stdin is fed; its errors are raised bare, not in an exception group."""
    failure: Exception | None = None
    status = None
    async with anyio.create_task_group() as tg:
        tg.start_soon(_feed, chan, stdin)
        try:
            status = await _collect(chan, out, err, what)
        except (ExecError, aiohttp.ClientError, ConnectionError) as exc:
            failure = exc
        tg.cancel_scope.cancel()
    if failure is not None:
        raise failure
    return status


async def run(
    client: ApiClient,
    pod: PodRef,
    argv: Sequence[str],
    *,
    timeout: float,  # noqa: ASYNC109 (the bound is ours, so the error can name the command)
    stdin: Sequence[bytes | Iterator[bytes]] = (),
) -> ExecResult:
    """Run ``argv`` in the pod to its end: exit status, stdout and stderr. The ``stdin`` parts
    (bytes, or iterators of bytes advanced on a worker thread) are sent in order, then stdin is
    closed on v5; the command should read exactly as many bytes as it is told to, never wait
    for an end."""
    what = f"`{describe(argv)}`"
    out, err = bytearray(), bytearray()
    try:
        with anyio.fail_after(timeout):
            async with await connect(client, pod, argv, stdin=bool(stdin)) as chan:
                if not stdin:
                    status = await _collect(chan, out, err, what)
                else:
                    status = await _exchange(chan, stdin, out, err, what)
    except TimeoutError:
        raise ExecError(
            f"{pod}: {what} did not finish within {timeout:g} s", retryable=True
        ) from None
    except (aiohttp.ClientError, ConnectionError) as exc:
        raise ExecError(f"{pod}: the exec stream broke: {exc}", retryable=True) from None
    if status is None:
        trouble = await pod_trouble(client, pod)
        if trouble:
            raise ExecError(f"{pod} {trouble} while running {what}", retryable=False)
        raise ExecError(
            f"{pod}: the exec stream of {what} ended without an exit status; try again",
            retryable=True,
        )
    code = exit_code(status, pod)
    if code > 128 and (trouble := await pod_trouble(client, pod)):
        raise ExecError(f"{pod} {trouble} while running {what}", retryable=False)
    return ExecResult(code, bytes(out), bytes(err))
