"""The daemon's life: build the app, respawn every live actor, serve the socket, stop cleanly."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import anyio

from stixd.actors import factory_for
from stixd.actors.cluster_health import check_health
from stixd.agent_bundle import build_agent_zipapp, build_id
from stixd.app import App
from stixd.config import Config
from stixd.control import leak_cmds
from stixd.control.handlers import dispatch
from stixd.control.server import ControlServer
from stixd.logs import make_logger
from stixd.providers.abilities import Closes
from stixd.providers.all import ENTRIES
from stixd.providers.registry import build_providers, planner_table
from stixd.runtime.clock import RealClock
from stixd.runtime.supervisor import RestartPolicy, Supervisor
from stixd.runtime.watch import RowWatch
from stixd.store.db import open_store
from stixproto.errors import InvalidConfig
from stixproto.paths import socket_path


async def _signals(app: App) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as received:
        async for signum in received:
            app.log.info("signal", signal=signal.Signals(signum).name)
            app.shutdown.set()
            return


async def serve(home: Path, config: Config) -> None:
    log, log_stream = make_logger(home / "stixd.log", config.daemon.log_level)
    sock = socket_path(home)
    try:
        pyz = await anyio.to_thread.run_sync(build_agent_zipapp, home / "agent")
        async with open_store(home / "state.db") as store:
            watch = RowWatch(store)
            async with anyio.create_task_group() as tg:
                intensity = config.daemon.restart_intensity
                supervisor = Supervisor(
                    tg,
                    store,
                    log,
                    RestartPolicy(intensity.max_restarts, intensity.within_seconds),
                    clock=RealClock(),
                )
                built = build_providers(
                    ENTRIES, config.sections(), home=home, log=log, agent_build=build_id()
                )
                app = App(
                    home=home,
                    config=config,
                    store=store,
                    watch=watch,
                    supervisor=supervisor,
                    providers={name: b.provider for name, b in built.items()},
                    agent_pyz=pyz,
                    agent_build=build_id(),
                    log=log,
                    actor_factories=factory_for,
                    infras=planner_table(ENTRIES),
                    catalog_dirs=[d for b in built.values() for d in b.catalog_dirs],
                )
                try:
                    app.ssh_pool_sizes()  # read ssh_node_pools.yaml before reconciling
                except InvalidConfig as exc:
                    log.error("ssh_pools_invalid", error=exc.message)
                rows = await store.live_rows()
                held = [c for c in (app.spawn(row) for row in rows) if c.failed is not None]
                for child in held:  # recorded before any client can list them
                    await child.finished.wait()
                await tg.start(ControlServer(app, sock, dispatch).serve)
                log.info(
                    "ready",
                    pid=os.getpid(),
                    actors=len(rows),
                    quarantined=len(held),
                    home=str(home),
                )
                tg.start_soon(_signals, app)
                tg.start_soon(leak_cmds.watch, app)
                tg.start_soon(check_health, app)
                await app.shutdown.wait()
                log.info("shutting_down")
                tg.cancel_scope.cancel()
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                for provider in app.providers.values():
                    if isinstance(provider, Closes):  # the others hold nothing to close
                        await provider.aclose()
    finally:
        sock.unlink(missing_ok=True)
        log.info("stopped")
        log_stream.close()
