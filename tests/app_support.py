"""The daemon's app context on a real store in a stopped daemon's home, with no providers: for
tests that call handlers or build actors without a running daemon."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import structlog

from stixd.actors import factory_for
from stixd.app import App
from stixd.config import load_config
from stixd.providers.all import infras
from stixd.runtime.supervisor import RestartPolicy, Supervisor
from stixd.runtime.watch import RowWatch
from stixd.store.db import open_store

LOG: Any = structlog.wrap_logger(structlog.ReturnLogger())


@asynccontextmanager
async def app_on_store(home: Path) -> AsyncIterator[App]:
    """The app on ``home``'s store (no actor runs unless a test starts one)."""
    async with open_store(home / "state.db") as store, anyio.create_task_group() as tg:
        yield App(
            home=home,
            config=load_config(home, env={}),
            store=store,
            watch=RowWatch(store),
            supervisor=Supervisor(tg, store, LOG, RestartPolicy()),
            providers={},
            agent_pyz=home / "agent.pyz",
            agent_build="test",
            log=LOG,
            actor_factories=factory_for,
            infras=infras(),
        )
        tg.cancel_scope.cancel()
