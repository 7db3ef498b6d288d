"""The balancer process: the service's port, the control socket, and a stop on request.

It runs in a session of its own (`stixd.balancer.fleet` starts it detached), so it outlives
the daemon and serves the last ready set it was given until the daemon is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import ssl
import sys
from pathlib import Path

import aiohttp
import uvloop

from stixd.balancer import front
from stixd.balancer.control import Control, Held
from stixd.balancer.layout import Layout, decode_spec, digest, write_private
from stixd.balancer.limits import Server, hand_off_to
from stixd.balancer.pool import Arrivals, Pool
from stixd.balancer.proxy import KEEPALIVE_SECONDS, Proxy
from stixd.balancer.revive import Reviver
from stixd.serve.seams import BalancerSpec

HEAD_SECONDS = 30.0
"""A client that has not sent a whole request head this long after connecting (or after its
last answer) is dropped: a slow or idle client holds no connection for long."""


SHUTDOWN_SECONDS = 60.0
"""How long a stopping balancer lets the answers on their way finish (aiohttp's default)."""

ORPHAN_CHECK_SECONDS = 5.0
"""How often the balancer looks for its service's directory. Gone (its stix home deleted, not
through `serve down`), the balancer stops: no daemon will ever look after it again."""


async def _stop_when_orphaned(path: Path, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await asyncio.sleep(ORPHAN_CHECK_SECONDS)
        if not path.is_dir():
            print(f"balancer {os.getpid()}: {path} is gone, stopping", flush=True)
            stop.set()


def tls_context(spec: BalancerSpec) -> ssl.SSLContext | None:
    if spec.tls_certfile is None or spec.tls_keyfile is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(spec.tls_certfile, spec.tls_keyfile)
    return context


def _private_dir(path: Path) -> None:
    """Make ``path`` (0700) or accept it if it is ours and no one else can write in it: the
    socket's directory may be a shared one under /tmp that someone else could have made first."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.stat()
    if st.st_uid != os.getuid() or st.st_mode & 0o022:
        raise OSError(f"{path} is not this user's alone; remove it or make it 0700")


async def run(
    layout: Layout, host: str, hold_seconds: float, connect_timeout: float, head_seconds: float
) -> None:
    spec = decode_spec(layout.spec.read_bytes())
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    pool = Pool(policy=spec.policy)
    arrivals = Arrivals()
    held = Held(spec.queue_limit)
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=KEEPALIVE_SECONDS, ttl_dns_cache=60)
    async with aiohttp.ClientSession(
        connector=connector, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar()
    ) as session:
        proxy = Proxy(
            pool,
            arrivals,
            held,
            session,
            api_keys=tuple(k.encode() for k in spec.api_keys),
            stream_timeout=spec.stream_timeout_seconds,
            connect_timeout=connect_timeout,
            hold_seconds=hold_seconds,
        )
        # WebSocket upgrades are taken over by aiohttp's server, the rest is the front's.
        sockets = Server(proxy.handle_socket, head_seconds, access_log=None)
        http, fronts = await front.serve(
            proxy.handle,
            hand_off_to(sockets),
            host,
            spec.port,
            tls_context(spec),
            head_seconds,
            reuse_port=hasattr(socket, "SO_REUSEPORT"),  # a successor binds beside us, then we go
        )
        spec_digest = digest(spec)
        control = Control(pool, arrivals, held, spec_digest, spec.port, stop)
        _private_dir(layout.control.parent)
        server = await control.serve(str(layout.control))
        write_private(layout.pid, f"{os.getpid()}\n".encode())
        print(f"balancer {os.getpid()} serving {host}:{spec.port} ({spec.policy})", flush=True)
        tasks = [
            asyncio.create_task(stop.wait()),
            asyncio.create_task(Reviver(pool, held).run()),
            asyncio.create_task(_stop_when_orphaned(layout.dir, stop)),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            held.closing = True  # waiting requests get a 503 now, not a reset at the cleanup
            pool.wake()
            for task in tasks:
                task.cancel()
            ended = await asyncio.gather(*tasks, return_exceptions=True)
            proxy.sockets.stop_all()  # a WebSocket would hold the shutdown for its whole life
            server.close()
            with contextlib.suppress(FileNotFoundError):
                if layout.pid.read_text().strip() == str(os.getpid()):
                    layout.pid.unlink()
            http.close()
            await fronts.stop(SHUTDOWN_SECONDS)
            await sockets.shutdown(SHUTDOWN_SECONDS)
            proxy.upstream.close()
    for failed in ended:
        if isinstance(failed, Exception):  # a helper that broke ends the balancer, loudly
            raise failed
    print(f"balancer {os.getpid()} stopped", flush=True)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m stixd.balancer")
    parser.add_argument("--dir", required=True, type=Path, help="the service's directory")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on")
    parser.add_argument(
        "--hold-seconds",
        type=float,
        default=300.0,
        help="how long a request waits for a ready replica before a 503",
    )
    parser.add_argument("--connect-timeout", type=float, default=5.0)
    parser.add_argument(
        "--head-seconds",
        type=float,
        default=HEAD_SECONDS,
        help="how long a client may take to send a request's head, or stay idle between two",
    )
    args = parser.parse_args(argv)
    for value in (args.hold_seconds, args.connect_timeout):
        if not 0 <= value <= 86400:
            parser.error("--hold-seconds and --connect-timeout are 0 .. 86400")
    if not 0 < args.head_seconds <= 86400:  # 0 would turn the limit off
        parser.error("--head-seconds is in (0, 86400]")
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        uvloop.run(
            run(
                Layout(args.dir.resolve()),
                args.host,
                args.hold_seconds,
                args.connect_timeout,
                args.head_seconds,
            )
        )
    except (OSError, ValueError) as exc:
        print(f"balancer cannot start: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0
