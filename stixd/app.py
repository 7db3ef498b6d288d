"""The app context: built once at daemon start and handed down; tests build their own."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import structlog

from stixd.providers.base import Provider
from stixd.runtime.supervisor import Supervisor
from stixd.runtime.watch import RowWatch
from stixd.store.db import Row, Store

if TYPE_CHECKING:
    from stixd.config import Config
    from stixd.planner.catalog import Catalog

VERSION = "0.1.0"


@dataclass
class App:
    home: Path
    config: Config
    store: Store
    watch: RowWatch
    supervisor: Supervisor
    providers: dict[str, Provider]
    agent_pyz: Path
    agent_build: str
    log: structlog.stdlib.BoundLogger
    catalog: Catalog | None = None  # opened on first use (stixd.control.catalog_cmds)
    started_at: float = field(default_factory=time.time)
    shutdown: anyio.Event = field(default_factory=anyio.Event)

    def config_for(self, layers: Sequence[Sequence[Any]] = ()) -> Config:
        """The daemon's config with a client's layers (project file, --config) merged in.

        Raises `ConfigError` naming the file and key of a bad layer.
        """
        if not layers:
            return self.config
        from stixd.config import load_config

        return load_config(self.home, overrides=[(str(src), values) for src, values in layers])

    def provider(self, name: str) -> Provider:
        return self.providers[name]

    def spawn(self, row: Row) -> None:
        """Start (or find) the actor for a stored row."""
        from stixd.actors import factory_for  # actors import app; resolve at call time

        self.supervisor.spawn(row, factory_for(self, row.kind))
