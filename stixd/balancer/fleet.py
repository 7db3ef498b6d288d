"""The daemon's side of the balancers: start, find again, restart and stop their processes.

A balancer is found again after a daemon restart by its pid file and control socket under
`<home>/serve/<service>/`; the pid counts only if that process is a balancer of that directory
and answers on the socket with the same pid. `ensure` restarts a balancer whose spec changed or
that died; a `RemoteBalancer` whose connection breaks reconnects, restarting a dead process and
pushing the last ready set again. The daemon's own stop leaves every balancer running.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import time
from dataclasses import replace
from pathlib import Path

import anyio
import structlog

from stixd.balancer import wire
from stixd.balancer.layout import Layout, check, digest, encode_spec, write_private
from stixd.balancer.link import BROKEN, CALL_SECONDS, BalancerDown, Link, RemoteBalancer
from stixd.serve.seams import BalancerSpec
from stixproto.paths import child_path

START_SECONDS = 15.0
STOP_SECONDS = 5.0

# Detaches the balancer: a double fork leaves it owned by init, in its own session, so neither
# a kill -9 of the daemon nor a terminal hang-up reaches it, and no zombie is left behind.
_SPAWN = """
import os, sys
child = os.fork()
if child:
    print(child, flush=True)
    os._exit(0)
os.setsid()
log = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
os.dup2(log, 1); os.dup2(log, 2)
null = os.open(os.devnull, os.O_RDONLY); os.dup2(null, 0)
os.execv(sys.argv[2], sys.argv[2:])
"""


class Fleet:
    """Every service's balancer process (`stixd.serve.seams.Balancers`)."""

    def __init__(
        self,
        root: Path,
        log: structlog.stdlib.BoundLogger | None = None,
        host: str = "127.0.0.1",
        python: str = sys.executable,
        hold_seconds: float = 300.0,
        head_seconds: float | None = None,
    ) -> None:
        self.root = root.resolve()  # the balancer finds its socket from the same path
        self.log = log or structlog.wrap_logger(structlog.ReturnLogger())  # silent by default
        self.host = host
        self._python = python
        self._hold_seconds = hold_seconds
        self._head_seconds = head_seconds
        """A client's time for a request head (None: the balancer's default)."""
        self._balancers: dict[str, RemoteBalancer] = {}
        self._locks: dict[str, anyio.Lock] = {}

    def layout(self, service: str) -> Layout:
        return Layout(child_path(self.root, service))

    def log_path(self, service: str) -> Path:
        """The balancer's output (start, stop, ejections), for `serve logs --load-balancer`."""
        return self.layout(service).log

    async def ensure(self, spec: BalancerSpec) -> RemoteBalancer:
        check(spec)
        layout = self.layout(spec.service)
        async with self._lock(spec.service):
            layout.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            spec = replace(spec, port=self._port(layout, spec))
            balancer = self._balancers.get(spec.service)
            if balancer is None:
                balancer = self._balancers[spec.service] = RemoteBalancer(
                    spec, layout, self.host, self.revive
                )
                welcome = await _hello(layout)
                if welcome is not None:  # attached to one an earlier daemon drove
                    balancer.ack = welcome.unacked
            balancer.spec, balancer.stopped = spec, False
            await self._running(balancer)
            return balancer

    async def stop(self, service: str) -> None:
        layout = self.layout(service)
        async with self._lock(service):
            balancer = self._balancers.pop(service, None)
            if balancer is not None:
                balancer.stopped = True
                await balancer.drop_link()
            pid = _our_pid(layout)
            if pid is not None:
                await _ask_to_stop(layout, pid)
                await self._halt(layout, pid)
            for path in (layout.spec, layout.port, layout.pid, layout.control):
                path.unlink(missing_ok=True)
        self.log.info("balancer_stopped", service=service)

    async def revive(self, balancer: RemoteBalancer) -> None:
        """After a broken connection: start the balancer again if it is gone (not if stopped)."""
        if balancer.stopped:
            raise balancer.down()
        async with self._lock(balancer.spec.service):
            await self._running(balancer)

    async def aclose(self) -> None:
        """Close the control connections; the balancers themselves run on (they outlive us)."""
        for balancer in self._balancers.values():
            await balancer.drop_link()

    def _lock(self, service: str) -> anyio.Lock:
        return self._locks.setdefault(service, anyio.Lock())

    async def _running(self, balancer: RemoteBalancer) -> None:
        """Make sure ``balancer``'s process runs with its spec. A new one starts beside the old
        (both listen on the port, SO_REUSEPORT), gets the ready set, and only then is the old
        one told to finish its requests and go: a change of spec drops no connection."""
        layout, spec = balancer.layout, balancer.spec
        welcome = await _hello(layout)
        if welcome is not None and welcome.spec_digest == digest(spec):
            return
        old = _our_pid(layout)  # a stale spec, or hung
        await balancer.drop_link()
        try:
            await self._start(layout, spec)
        except BalancerDown:
            if old is None:
                raise
            await self._halt(layout, old)  # perhaps it holds the port alone: retry without it
            old = None
            await self._start(layout, spec)
        if balancer.ready is not None:
            link = await Link.open(layout.control)
            try:
                with anyio.fail_after(CALL_SECONDS):
                    await link.call(wire.SetReady(balancer.ready))
            finally:
                await link.aclose()
        if old is not None:
            self.log.info("balancer_replaced", service=spec.service, old=old)
            await self._halt(layout, old)

    def _port(self, layout: Layout, spec: BalancerSpec) -> int:
        """The spec's port, or for 0 the one picked for this service before (picked now if
        none was), so the endpoint stays the same across restarts."""
        if spec.port:
            return spec.port
        with contextlib.suppress(OSError, ValueError):
            kept = int(layout.port.read_text().strip())
            if 0 < kept < 65536:
                return kept
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((self.host or "127.0.0.1", 0))
            port = int(s.getsockname()[1])
        write_private(layout.port, f"{port}\n".encode())
        return port

    async def _start(self, layout: Layout, spec: BalancerSpec) -> None:
        """Start a balancer with ``spec`` and return once it answers (the pid file is its)."""
        write_private(layout.spec, encode_spec(spec))
        command = [
            self._python,
            "-m",
            "stixd.balancer",
            "--dir",
            str(layout.dir),
            "--host",
            self.host,
            "--hold-seconds",
            str(self._hold_seconds),
        ]
        if self._head_seconds is not None:
            command += ["--head-seconds", str(self._head_seconds)]
        spawned = await anyio.run_process(
            [sys.executable, "-c", _SPAWN, str(layout.log), *command], check=True
        )
        pid = int(spawned.stdout.decode().strip() or 0)
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline and _alive(pid):
            welcome = await _hello(layout)
            if welcome is not None and welcome.pid == pid:
                self.log.info(
                    "balancer_started", service=spec.service, pid=welcome.pid, port=spec.port
                )
                return
            await anyio.sleep(0.02)
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)  # ours: we just started it, and it never answered
            why = f"did not answer within {START_SECONDS:g}s"
        else:
            why = "exited"
        tail = layout.log.read_text(errors="replace")[-300:] if layout.log.exists() else ""
        last = tail.strip().splitlines()[-1] if tail.strip() else "no output"
        raise BalancerDown(
            f"the balancer of service {spec.service} {why} ({last}); see {layout.log}"
        )

    async def _halt(self, layout: Layout, pid: int) -> None:
        """Stop the balancer ``pid`` of ``layout``: SIGTERM (it finishes the requests in flight),
        SIGKILL if it is still there after `STOP_SECONDS`; only while ``pid`` is verifiably that
        balancer (a pid is reused once its process is gone)."""
        for signum in (signal.SIGTERM, signal.SIGKILL):
            if not _is_balancer(pid, layout):
                return
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
            deadline = time.monotonic() + STOP_SECONDS
            while time.monotonic() < deadline:
                if not _alive(pid):
                    return
                await anyio.sleep(0.02)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


def _our_pid(layout: Layout) -> int | None:
    """The pid in the pid file if that process is a balancer of this directory, else None."""
    try:
        pid = int(layout.pid.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _is_balancer(pid, layout) else None


def _is_balancer(pid: int, layout: Layout) -> bool:
    """Whether ``pid`` is alive and a balancer of ``layout``'s directory (by its command line)."""
    if pid <= 1 or not _alive(pid):
        return False
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return not Path("/proc/self").exists()  # no /proc: the control socket's answer decides
    except OSError:
        return False
    words = [a.decode(errors="replace") for a in argv]
    return "stixd.balancer" in words and str(layout.dir) in words


async def _ask_to_stop(layout: Layout, pid: int) -> None:
    """Ask the balancer on the control socket to exit, if the one answering there is ``pid``."""
    with contextlib.suppress(*BROKEN):
        link = await Link.open(layout.control)
        try:
            with anyio.fail_after(2):
                welcome = await link.call(wire.Hello())
                if isinstance(welcome, wire.Welcome) and welcome.pid == pid:
                    await link.call(wire.Stop())
        finally:
            await link.aclose()


async def _hello(layout: Layout) -> wire.Welcome | None:
    """The balancer's answer on the control socket, if it is ours and answers."""
    pid = _our_pid(layout)
    if pid is None:
        return None
    try:
        link = await Link.open(layout.control)
    except OSError:
        return None
    try:
        with anyio.fail_after(2):
            answer = await link.call(wire.Hello())
    except BROKEN:
        return None
    finally:
        await link.aclose()
    return answer if isinstance(answer, wire.Welcome) and answer.pid == pid else None
