"""Several stixd on one PostgreSQL database: this replica's name, its heartbeat in the
`replicas` table, and the task that keeps its leases and takes over the actors of a replica
that died (stixd/store/leases.py says how a lease works).

A replica that is killed stops renewing; within `lease_seconds` its leases expire by the
database's clock, and the next sweep of a live replica (every third of that) claims them and
starts their actors from their rows: a takeover within 4/3 of the lease time.
"""

from __future__ import annotations

import secrets
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

from stixd.app import App
from stixd.config import Config
from stixd.control import forward, handoff
from stixd.control.identity import PRINCIPAL
from stixd.store.backend import Backend
from stixd.store.leases import NOW, Leases
from stixproto import messages as m
from stixproto.errors import DaemonUnavailable

HEARTBEAT = (
    f"INSERT INTO replicas (name, address, api, seen_at) VALUES (?, ?, ?, {NOW}) "
    "ON CONFLICT (name) DO UPDATE SET address = EXCLUDED.address, api = EXCLUDED.api, "
    "seen_at = EXCLUDED.seen_at RETURNING 1"
)
SECRET_NAME = "replica_secret"


async def deployment_secret(backend: Backend) -> str:
    """The secret replicas of this database forward requests with: made by the first replica
    that starts (256 random bits), read by every later one. Never logged."""
    await backend.fetch(
        "INSERT INTO deployment (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING "
        "RETURNING 1",
        (SECRET_NAME, secrets.token_urlsafe(32)),
    )
    found = await backend.fetch("SELECT value FROM deployment WHERE name = ?", (SECRET_NAME,))
    return str(found[0][0])


def reachable(url: str | None) -> str | None:
    """The HTTP API's URL as another host reaches it: a wildcard address (all interfaces)
    becomes this host's name."""
    if url is None:
        return None
    scheme, _, rest = url.partition("://")
    host, _, port = rest.rpartition(":")
    if host in ("0.0.0.0", "[::]", "::", ""):
        return f"{scheme}://{socket.getfqdn()}:{port}"
    return url


def replica_name(home: Path, config: Config) -> str:
    """The name this replica's leases carry: the config's, else this host's name and home (a
    restarted daemon of the same home takes its own actors back at once)."""
    return config.daemon.replica_name or f"{socket.gethostname()}:{home}"


def leases_for(app_config: Config, home: Path, backend: Backend) -> Leases | None:
    """The leases of this replica, or None: SQLite (one daemon), or leases turned off."""
    seconds = app_config.daemon.lease_seconds
    if app_config.db is None or seconds <= 0:
        return None
    return Leases(backend, replica_name(home, app_config), seconds)


async def sweep(app: App, leases: Leases, address: str, api: str | None = None) -> int:
    """One round: the heartbeat (with where this replica is reached: its socket, and its HTTP
    API if it serves one), the renewal (standing down actors whose lease another replica
    took), and the claim of every expired lease of a live row; the actors started."""
    await app.store.backend.fetch(HEARTBEAT, (leases.owner, address, reachable(api)))
    lost = await leases.renew()
    if lost:
        app.supervisor.stand_down(lost)
    started = 0
    for kind, id_ in await leases.claim_free(own_too=False):
        if app.supervisor.get(kind, id_) is not None:
            continue  # still running here (this replica's own lease had lapsed): kept
        row = await app.store.get(kind, id_)
        if row is not None and not row.terminal:
            app.log.info("took_over", kind=kind, id=id_)
            app.spawn(row)
            started += 1
    return started


async def keep_leases(
    app: App, leases: Leases, address: str, api: Callable[[], str | None] = lambda: None
) -> None:
    """Sweep every third of the lease time, on a fixed beat (a slow round does not push the
    next ones later), for the daemon's life; a round that fails (the database away) is
    logged and tried again at the next. `api`: the HTTP API's URL now, if served."""
    period = leases.seconds / 3
    beat = anyio.current_time()
    while True:
        try:
            await sweep(app, leases, address, api())
        except Exception as exc:  # the database is away: the next round tries again
            app.log.warning("lease_sweep_failed", error=f"{type(exc).__name__}: {exc}")
        beat = max(beat + period, anyio.current_time())
        await anyio.sleep_until(beat)


WATCH_POLL = 0.5
"""How often a waiter reads a row again that another replica may write (`RowWatch`)."""

ADDRESS = f"SELECT address, api FROM replicas WHERE name = ? AND seen_at >= {NOW} - ?"
"""A replica's socket and HTTP API, if it was seen within a lease's time."""

Emit = Callable[[Any], Awaitable[None]]


async def _quiet(item: Any) -> None:
    """An upload's answer is its final reply alone."""


def elsewhere(
    app: App, leases: Leases
) -> Callable[[str, str, Any, Emit], Awaitable[tuple[bool, Any]]]:
    """`App.elsewhere`: (True, the owner's reply) for a request about an actor another live
    replica runs, (False, None) for one this replica runs or is to run."""

    async def ask(kind: str, id_: str, payload: Any, emit: Emit) -> tuple[bool, Any]:
        if leases.holds(kind, id_) or app.supervisor.get(kind, id_) is not None:
            return False, None
        owner = await leases.owner_of(kind, id_)
        if owner is None or owner == leases.owner:
            return False, None  # no live owner: this replica claims it
        if isinstance(payload, m.Status):
            return True, m.OkReply()  # a refresh: the owner's health checks keep it fresh
        request = forward.narrowed(payload, id_)
        if request is None:
            raise DaemonUnavailable(f"{kind} {id_} is run by replica {owner}: ask it there")
        found = await app.store.backend.fetch(ADDRESS, (owner, leases.seconds))
        if not found:
            raise DaemonUnavailable(
                f"{kind} {id_} is run by replica {owner}, which has not been seen for "
                f"{leases.seconds:g}s: try again once another replica took it over"
            )
        socket_path, api = found[0]
        if app.replica_secret is None:  # (read at the start of every replica with leases)
            raise DaemonUnavailable("this replica has not read the deployment's secret yet")
        hop = forward.Hop(app.replica_secret, PRINCIPAL.get(), app.config.api.certfile)
        address = str(api or socket_path)  # HTTP when served: the path between hosts

        async def send(asked: Any) -> Any:
            return await forward.call(address, asked, _quiet, hop)

        request = await handoff.hand_over(request, send)
        app.log.info("forwarded", kind=kind, id=id_, to=owner, via=address)
        return True, await forward.call(address, request, emit, hop)

    return ask
