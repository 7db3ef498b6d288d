"""The daemon's life: build the app, respawn every live actor, serve the socket, stop cleanly.

A stop run by `stixd` itself ends the process once the store and the providers are closed,
without unwinding every actor: unwinding tens of thousands of them took half a minute, and
nothing an actor would do on its way out is needed, since a kill -9 at any instant is
survivable by design (every decision is a committed row; a restart reconciles the rest)."""

from __future__ import annotations

import gc
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import anyio

from stixd.actors import factory_for
from stixd.actors.cluster_health import check_health
from stixd.agent_bundle import build_agent_zipapp, build_id
from stixd.app import App
from stixd.balancer.fleet import Fleet
from stixd.config import Config
from stixd.control import leak_cmds, replicas
from stixd.control.api_serving import ApiServing
from stixd.control.handlers import dispatch
from stixd.control.server import ControlServer
from stixd.logs import make_logger
from stixd.providers.abilities import Closes
from stixd.providers.all import ENTRIES
from stixd.providers.registry import build_providers, planner_table
from stixd.runtime.clock import RealClock
from stixd.runtime.heap import keep_heap
from stixd.runtime.supervisor import Child, RestartPolicy, Supervisor
from stixd.runtime.watch import RowWatch
from stixd.store.backend import StoreUnavailable
from stixd.store.chosen import open_chosen
from stixd.store.db import Row
from stixd.store.leases import Leases
from stixproto.errors import InvalidConfig
from stixproto.paths import socket_path


async def _signals(app: App) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as received:
        async for signum in received:
            app.log.info("signal", signal=signal.Signals(signum).name)
            app.shutdown.set()
            return


def _adopt(app: App, rows: list[Row]) -> list[Child]:
    """Build the actor of every live row, to run once the socket answers (`start_deferred`);
    the children held instead (rows that cannot run), whose quarantine is being recorded.
    Without cycle collections meanwhile: each would walk every actor built so far, for
    nothing, since building them makes no garbage to speak of."""
    factories = {kind: app.actor_factories(app, kind) for kind in {row.kind for row in rows}}
    held = []
    gc.disable()
    try:
        for row in rows:
            child = app.supervisor.spawn(row, factories[row.kind], defer=True)
            if child.failed is not None:
                held.append(child)
    finally:
        gc.enable()
    return held


def _ours(rows: list[Row], leases: Leases | None) -> list[Row]:
    """The rows whose leases this replica holds (all of them on a store without leases)."""
    return rows if leases is None else [r for r in rows if leases.holds(r.kind, r.id)]


async def _hand_back(leases: Leases | None) -> None:
    """At a clean stop, once no actor runs: every lease handed back, for another replica to
    take over at its next sweep rather than after the leases expire."""
    if leases is not None:
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            await leases.release_all()


async def _close_providers(app: App) -> None:
    with anyio.CancelScope(shield=True), anyio.move_on_after(5):
        for provider in app.providers.values():
            if isinstance(provider, Closes):  # the others hold nothing to close
                await provider.aclose()
        if app.stores is not None:
            await app.stores.aclose()


async def serve(
    home: Path, config: Config, end_process: Callable[[], NoReturn] | None = None
) -> None:
    """Run the daemon until it is asked to stop. With `end_process`, the stop calls it once
    the providers and the store are closed (see above); without, every task is unwound."""
    log, log_stream = make_logger(home / "stixd.log", config.daemon.log_level)
    sock = socket_path(home)
    try:
        pyz = await anyio.to_thread.run_sync(build_agent_zipapp, home / "agent")
        async with open_chosen(home, config.db, config.daemon.store_readers) as store:
            leases = store.leases = replicas.leases_for(config, home, store.backend)
            watch = RowWatch(store, poll=None if leases is None else replicas.WATCH_POLL)
            async with anyio.create_task_group() as tg:
                intensity = config.daemon.restart_intensity
                supervisor = Supervisor(
                    tg,
                    store,
                    log,
                    RestartPolicy(intensity.max_restarts, intensity.within_seconds),
                    clock=RealClock(),
                    leases=leases,
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
                    # they outlive the daemon's stop
                    balancers=Fleet(home / "serve", log, host=config.daemon.balancer_host),
                )
                try:
                    app.ssh_pool_sizes()  # read ssh_node_pools.yaml before reconciling
                except InvalidConfig as exc:
                    log.error("ssh_pools_invalid", error=exc.message)
                if leases is not None:  # the actors no other live replica runs are this one's
                    app.replica_secret = await replicas.deployment_secret(store.backend)
                    await leases.claim_free(own_too=True)
                held = [
                    c
                    async for page in store.live_rows_in_pages()
                    for c in _adopt(app, _ours(page, leases))
                ]
                for child in held:  # recorded before any client can list them
                    await child.finished.wait()
                serving = ApiServing(app, dispatch)  # the HTTP API beside the socket
                await tg.start(ControlServer(app, sock, serving.dispatch).serve)
                await tg.start(serving.run)
                tg.start_soon(supervisor.start_deferred)
                log.info(
                    "ready",
                    pid=os.getpid(),
                    actors=len(supervisor.children),
                    quarantined=len(held),
                    home=str(home),
                )
                tg.start_soon(_signals, app)
                tg.start_soon(leak_cmds.watch, app)
                tg.start_soon(check_health, app)
                tg.start_soon(keep_heap)  # admission stays linear in the jobs already held
                if leases is not None:
                    app.elsewhere = replicas.elsewhere(app, leases)
                    tg.start_soon(
                        replicas.keep_leases,
                        app,
                        leases,
                        str(sock),
                        lambda: serving.api.url if serving.api else None,  # when it serves
                    )
                await app.shutdown.wait()
                log.info("shutting_down")
                sock.unlink(missing_ok=True)  # no client gets in from here on
                if end_process is not None:
                    await _close_providers(app)
                    await _hand_back(leases)
                    await store.close()
                    log.info("stopped", actors=len(supervisor.children))
                    log_stream.close()
                    end_process()
                # Unwinding frees every actor at once, and the cycle collector would walk the
                # whole heap again and again for memory the process is about to give back
                # (9 of 19 s of a stop with 3,000 managed jobs).
                gc.disable()
                tg.cancel_scope.cancel()
            await _close_providers(app)
            await _hand_back(leases)
    except StoreUnavailable as exc:  # the database is unreachable, refuses stix, or is newer
        log.error("store_unavailable", error=str(exc))
        print(f"stixd: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    finally:
        gc.enable()
        sock.unlink(missing_ok=True)
        log.info("stopped")
        log_stream.close()
