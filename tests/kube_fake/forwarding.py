"""Service traffic, for real: what kube-proxy and a cloud load balancer do, on loopback. A
service's ClusterIP, every NodePort (on 127.0.0.1, the nodes' address) and a LoadBalancer's
ingress address each get a listening socket whose connections go, round robin, to a Running pod
the selector picks, at its target port (a number or a container port's name). No pod to take
it: the connection is closed at once, as a real service without endpoints refuses it."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import socket
from collections.abc import Callable

from tests.kube_fake.meta import Obj
from tests.kube_fake.sandbox import POD_IP

Endpoints = Callable[[Obj], list[Obj]]  # service -> the Running pods behind it


def bind(host: str, port: int) -> socket.socket | None:
    """A listening socket on host:port, or None when something else holds that port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError as e:
        sock.close()
        if e.errno in (errno.EADDRINUSE, errno.EACCES):
            return None
        raise
    return sock


def _target_port(pod: Obj, target: int | str) -> int | None:
    if isinstance(target, int) or str(target).isdigit():
        return int(target)
    for container in pod["spec"]["containers"]:
        for port in container.get("ports") or []:
            if port.get("name") == target:
                return int(port["containerPort"])
    return None


class Forwarder:
    """The listeners of one service, and the connections they carry."""

    def __init__(self, service: Obj, endpoints: Endpoints) -> None:
        self.service, self._endpoints = service, endpoints
        self._turn = itertools.count()
        self._servers: list[asyncio.Server] = []
        self._by_port: dict[int, list[asyncio.Server]] = {}
        self._pipes: set[asyncio.Task[None]] = set()

    async def listen(self, sock: socket.socket, target: int | str, port: int = 0) -> None:
        """Carry what ``sock`` accepts to ``target``; ``port``: the service port it serves
        (`drop` closes a port's listeners when an update takes the port away)."""

        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            self._pipes.add(task)
            try:
                await self._carry(reader, writer, target)
            finally:
                self._pipes.discard(task)

        server = await asyncio.start_server(accept, sock=sock)
        self._servers.append(server)
        self._by_port.setdefault(port, []).append(server)

    async def drop(self, port: int) -> None:
        for server in self._by_port.pop(port, []):
            self._servers.remove(server)
            server.close()
            with contextlib.suppress(Exception):
                await server.wait_closed()

    async def _carry(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     target: int | str) -> None:  # fmt: skip
        pods = self._endpoints(self.service)
        pod = pods[next(self._turn) % len(pods)] if pods else None
        port = _target_port(pod, target) if pod else None
        pod_ip = pod["status"].get("podIP", POD_IP) if pod else POD_IP
        try:
            if port is None:
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(pod_ip, port)
            except OSError:
                return
            try:
                await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
            finally:
                up_writer.close()
        finally:
            writer.close()

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while chunk := await src.read(65536):
            dst.write(chunk)
            await dst.drain()
        if dst.can_write_eof():
            dst.write_eof()
