"""The daemon's app context on a real store in a stopped daemon's home, with no providers: for
tests that call handlers or build actors without a running daemon."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import structlog

from stixd.actors import factory_for
from stixd.app import App
from stixd.config import load_config
from stixd.providers.all import infras
from stixd.providers.base import Provider
from stixd.runtime.clock import Clock
from stixd.runtime.supervisor import RestartPolicy, Supervisor
from stixd.runtime.ticker import Ticker
from stixd.runtime.watch import RowWatch
from stixd.store.db import Store, open_store

LOG: Any = structlog.wrap_logger(structlog.ReturnLogger())


@asynccontextmanager
async def app_on_store(
    home: Path,
    *,
    providers: dict[str, Provider] | None = None,
    clock: Clock | None = None,
    opener: Callable[[], AbstractAsyncContextManager[Store]] | None = None,
) -> AsyncIterator[App]:
    """The app on ``home``'s store (no actor runs unless a test starts one), with `providers`
    (none unless given), its supervisor's timers and health rounds on `clock` (real time unless
    given); `opener` opens another store instead (a PostgreSQL database: `open_any`)."""
    opened = opener() if opener is not None else open_store(home / "state.db")
    async with opened as store, anyio.create_task_group() as tg:
        yield App(
            home=home,
            config=load_config(home, env={}),
            store=store,
            watch=RowWatch(store),
            supervisor=Supervisor(tg, store, LOG, RestartPolicy(), clock=clock),
            providers=providers or {},
            agent_pyz=home / "agent.pyz",
            agent_build="test",
            log=LOG,
            actor_factories=factory_for,
            infras=infras(),
            health=Ticker(clock),
        )
        tg.cancel_scope.cancel()
