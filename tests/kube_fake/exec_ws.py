"""`pods/exec` over WebSocket, channel protocols v5 and v4 (what kubectl 1.32 and
kubernetes-asyncio speak): each binary frame starts with its channel — 0 stdin, 1 stdout,
2 stderr, 3 the final Status (exit code in `details.causes`), 4 terminal resize — and v5 adds
255 + channel to close that stream (how `kubectl exec -i` says stdin is done).

The command runs in the pod's sandbox in a process group of its own; if the client goes away
first it keeps running (as under a container runtime) until the pod is deleted."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import pty
import struct
import termios

from aiohttp import WSMsgType, web

from tests.kube_fake.meta import ApiError, Obj
from tests.kube_fake.sandbox import Sandbox

PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255
DRAIN = 0.5  # seconds to read a finished command's last output


def exit_status(code: int) -> Obj:
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"command terminated with non-zero exit code: error executing command "
        f"[...], exit code {code}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "false").lower() in ("true", "1")


def check_target(request: web.Request, pod: Obj, sandbox: Sandbox | None) -> list[str]:
    """The command to run, after the checks the API server and the kubelet make."""
    name = pod["metadata"]["name"]
    containers = [c["name"] for c in pod["spec"]["containers"]]
    container = request.query.get("container") or containers[0]
    if container not in containers:
        raise ApiError(400, "BadRequest", f"container {container} is not valid for pod {name}")
    if sandbox is None or pod["status"].get("phase") != "Running":
        phase = pod["status"].get("phase")
        raise ApiError(400, "BadRequest", f"unable to upgrade connection: pod {name} is {phase}")
    command = request.query.getall("command", [])
    if not command:
        raise ApiError(400, "BadRequest", "you must specify at least 1 command")
    if not request.headers.get("Upgrade", "").lower() == "websocket":
        raise ApiError(400, "BadRequest", "this fake serves exec over WebSocket only (no SPDY)")
    return command


async def serve_exec(
    request: web.Request, command: list[str], sandbox: Sandbox
) -> web.StreamResponse:
    ws = web.WebSocketResponse(protocols=PROTOCOLS, autoping=True, max_msg_size=0)
    await ws.prepare(request)
    try:
        if _flag(request, "tty"):
            code = await _run_tty(ws, command, sandbox)
        else:
            code = await _run_pipes(ws, request, command, sandbox)
    except FileNotFoundError as e:  # the runtime's answer for a missing binary
        await ws.send_bytes(bytes([STDOUT]) + f"exec: {e.strerror}: {command[0]}\r\n".encode())
        code = 127
    if not ws.closed:
        await ws.send_bytes(bytes([ERROR]) + json.dumps(exit_status(code)).encode())
        await ws.close()
    return ws


def _exit_code(returncode: int) -> int:
    return returncode if returncode >= 0 else 128 - returncode


async def _exited(proc: asyncio.subprocess.Process) -> int:
    """The exit status as soon as the process ends: `proc.wait()` would also wait for its pipes
    to close, which a child left in the background may never do."""
    while proc.returncode is None:
        await asyncio.sleep(0.02)
    return proc.returncode


async def _run_pipes(
    ws: web.WebSocketResponse, request: web.Request, command: list[str], sandbox: Sandbox
) -> int:
    pipe, null = asyncio.subprocess.PIPE, asyncio.subprocess.DEVNULL
    proc = await sandbox.spawn(
        command,
        stdin=pipe if _flag(request, "stdin") else null,
        stdout=pipe if _flag(request, "stdout") else null,
        stderr=pipe if _flag(request, "stderr") else null,
    )

    async def pump(stream: asyncio.StreamReader | None, channel: int) -> None:
        while stream is not None and (chunk := await stream.read(65536)):
            if not ws.closed:
                await ws.send_bytes(bytes([channel]) + chunk)

    async def feed() -> None:
        stdin = proc.stdin
        async for msg in ws:
            if msg.type != WSMsgType.BINARY or not msg.data or stdin is None:
                continue
            channel, data = msg.data[0], msg.data[1:]
            if channel == STDIN and data:
                with contextlib.suppress(ConnectionError):
                    stdin.write(data)
                    await stdin.drain()
            elif channel == CLOSE and data[:1] == bytes([STDIN]):
                stdin.close()
        if stdin is not None:
            stdin.close()  # the client is gone: so is its stdin

    feeder = asyncio.create_task(feed())
    pumps = [
        asyncio.create_task(pump(proc.stdout, STDOUT)),
        asyncio.create_task(pump(proc.stderr, STDERR)),
    ]
    try:
        code = _exit_code(await _exited(proc))
        # what it wrote is drained; a child it left in the background may hold the pipes
        # open for ever, and the session ends with the command as under a container runtime
        await asyncio.wait(pumps, timeout=DRAIN)
        return code
    finally:
        for task in [feeder, *pumps]:
            task.cancel()
        await asyncio.gather(feeder, *pumps, return_exceptions=True)


async def _run_tty(ws: web.WebSocketResponse, command: list[str], sandbox: Sandbox) -> int:
    """A terminal: the command gets a pty; its output (stdout and stderr merged) is channel 1."""
    master, slave = pty.openpty()
    try:
        proc = await sandbox.spawn(command, stdin=slave, stdout=slave, stderr=slave)
    finally:
        os.close(slave)
    loop = asyncio.get_running_loop()
    output: asyncio.Queue[bytes] = asyncio.Queue()

    def readable() -> None:
        try:
            output.put_nowait(os.read(master, 65536))
        except OSError:  # EIO: every writer of the pty has closed it
            output.put_nowait(b"")
            loop.remove_reader(master)

    async def feed() -> None:
        async for msg in ws:
            if msg.type != WSMsgType.BINARY or not msg.data:
                continue
            channel, data = msg.data[0], msg.data[1:]
            if channel == STDIN and data:
                os.write(master, data)
            elif channel == RESIZE:
                size = json.loads(data)
                winsize = struct.pack("HHHH", size.get("Height", 24), size.get("Width", 80), 0, 0)
                fcntl.ioctl(master, termios.TIOCSWINSZ, winsize)

    loop.add_reader(master, readable)
    feeder = asyncio.create_task(feed())
    try:
        while chunk := await output.get():
            if not ws.closed:
                await ws.send_bytes(bytes([STDOUT]) + chunk)
        return _exit_code(await proc.wait())
    finally:
        loop.remove_reader(master)
        os.close(master)
        feeder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await feeder
