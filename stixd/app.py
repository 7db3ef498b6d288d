"""The app context: built once at daemon start and handed down; tests build their own."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import structlog

import stixproto
from stixd.providers.abilities import HasPools, LookAbilities, NeedsCredentials, RefreshesCatalog
from stixd.providers.base import Provider
from stixd.runtime.metrics import Metrics
from stixd.runtime.supervisor import Child, Factory, Supervisor
from stixd.runtime.ticker import Ticker
from stixd.runtime.watch import RowWatch
from stixd.store.db import Row, Store
from stixd.store.views import ClusterSplit
from stixproto.errors import StixError

if TYPE_CHECKING:
    from stixd.config import Config
    from stixd.planner.catalog import Catalog
    from stixd.planner.infra_meta import Infras
    from stixd.planner.offers import OfferIndex
    from stixd.planner.pricing import Prices
    from stixd.planner.request import Blocked
    from stixd.serve.seams import Balancers
    from stixd.storage.stores import Stores
    from stixproto import messages as m
    from stixproto.task import Task

VERSION = stixproto.VERSION

ActorFactories = Callable[["App", str], Factory | None]
Elsewhere = Callable[[str, str, Any, Callable[[Any], Awaitable[None]]], Awaitable[tuple[bool, Any]]]
"""How to build the actor of a row of a kind (None: no stix writes that kind). The daemon hands
`stixd.actors.factory_for` in: the actors import the app, so the app never imports them."""


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
    actor_factories: ActorFactories
    infras: Infras
    """The planner's table of the registry's infras (which ones launch, their rules)."""
    catalog: Catalog | None = None  # opened on first use (stixd.control.catalog_cmds)
    started_at: float = field(default_factory=time.time)
    catalog_dirs: list[Path] = field(default_factory=list)
    """Generated catalogs the planner reads besides the fetched ones (the fake provider's)."""
    blocks: list[tuple[Blocked, float]] = field(default_factory=list)
    """Launch failures to avoid until a time (quota errors), for every cluster's next plan."""
    shutdown: anyio.Event = field(default_factory=anyio.Event)
    leak_report: m.LeakList | None = None
    """The last leak scan's findings (stixd.control.leak_cmds), for `status` to mention."""
    leak_lock: anyio.Lock = field(default_factory=anyio.Lock)
    bucket_seen: dict[str, float] = field(default_factory=dict)
    """When this daemon first saw each unowned bucket of this home's whose store did not say
    when it was made (the leak grace runs from the store's creation time when it does)."""
    looks: dict[str, LookAbilities] = field(default_factory=dict)
    """Each provider's look-up abilities, by name (`look_abilities`)."""
    health: Ticker = field(default_factory=Ticker)
    """The live clusters' health checks, by provider (stixd.actors.cluster_health)."""
    cluster_split: ClusterSplit | None = None  # made on first use (stixd.control.handlers)
    elsewhere: Elsewhere | None = None
    """With several replicas on one database: asks the replica that runs an actor (kind, id)
    a request about it; (True, its reply), or (False, None) when it is for this replica."""
    replica_secret: str | None = None
    """With several replicas: the deployment's secret a replica forwards requests with."""
    balancers: Balancers | None = None
    """Each service's load-balancer process (stixd.balancer); None where serving is off."""
    metrics: Metrics = field(default_factory=Metrics)
    """What `/metrics` shows besides the supervisor's actors (stixd.control.metrics)."""
    stores: Stores | None = None
    """The object stores' clients (stixd.storage.stores), opened on first use."""

    def config_for(self, layers: Sequence[Sequence[Any]] = ()) -> Config:
        """The daemon's config with a client's layers (project file, --config) merged in.

        Raises `ConfigError` naming the file and key of a bad layer.
        """
        if not layers:
            return self.config
        from stixd.config import load_config

        return load_config(self.home, overrides=[(str(src), values) for src, values in layers])

    def ssh_pool_sizes(self) -> dict[str, int]:
        """Hosts per SSH pool, re-reading ssh_node_pools.yaml when it changed since last time
        (none without a provider that has pools).

        A broken file is the user's error to see (InvalidConfig naming the file and key).
        """
        ssh = self.providers.get(self.infras.pools() or "")
        return ssh.pool_sizes() if isinstance(ssh, HasPools) else {}

    def look_abilities(self, name: str) -> LookAbilities:
        """The provider ``name``'s look-up abilities, found on first use."""
        found = self.looks.get(name)
        if found is None:
            found = self.looks[name] = LookAbilities.of(self.providers[name])
        return found

    def provider(self, name: str) -> Provider:
        return self.providers[name]

    @property
    def default_infra(self) -> str:
        """Where a cluster whose row names no provider runs: this machine."""
        return self.infras.machine()

    def machine_max_nodes(self) -> int | None:
        """The node cap of this machine's infra, from its config section."""
        from stixd.config import NodeCap

        section = self.config.sections().get(self.default_infra)
        return section.max_nodes if isinstance(section, NodeCap) else None

    def clouds(self) -> tuple[str, ...]:
        """The clouds launches can use: a provider here, allowed, with credentials."""
        problems = self.cloud_problems()
        return tuple(c for c in self._cloud_names() if c not in problems)

    def target(self, task: Task, *, say_why_not: bool = False) -> tuple[str, str | None]:
        """(provider, pool) ``task`` goes to with what this daemon has now: its pools, usable
        clouds and this machine's node cap (`choose_target`). ``say_why_not``: a refusal also
        says why each cloud that is not usable is not."""
        from stixd.planner.target import choose_target

        problems = self.cloud_problems()
        usable = tuple(c for c in self._cloud_names() if c not in problems)
        return choose_target(
            task,
            self.infras,
            self.ssh_pool_sizes(),
            usable,
            problems if say_why_not else None,
            local_max_nodes=self.machine_max_nodes(),
        )

    def _cloud_names(self) -> list[str]:
        return [c for c in self.infras.clouds() if c in self.providers]

    def cloud_problems(self) -> dict[str, str]:
        """Why each cloud with a provider here cannot be used, without any network call."""
        allowed = self.config.allowed_clouds
        problems = {}
        for name in self._cloud_names():
            provider = self.providers[name]
            problem = None  # without credentials to need, nothing is missing
            if isinstance(provider, NeedsCredentials):
                problem = provider.credentials_problem()
            if allowed is not None and name not in allowed:
                problem = "left out by allowed_clouds"
            if problem:
                problems[name] = problem
        return problems

    def remember_block(self, blocked: Blocked, seconds: float) -> None:
        if seconds > 0:
            self.blocks.append((blocked, time.time() + seconds))

    def remembered_blocks(self) -> list[Blocked]:
        now = time.time()
        self.blocks = [(b, until) for b, until in self.blocks if until > now]
        return [b for b, _ in self.blocks]

    async def refresh_catalogs(self, only: Collection[str | None] | None = None) -> None:
        """Bring the catalogs providers write from live state (Kubernetes' nodes) up to date
        before a plan; each is bounded, and one that fails leaves its catalog as it was.
        ``only``: the infras a task names (None among them: it names none, so any may be
        chosen), so a launch on one cloud never waits on another's API servers."""
        for name, provider in self.providers.items():
            if only is not None and None not in only and name not in only:
                continue
            if isinstance(provider, RefreshesCatalog):
                try:
                    await provider.refresh_catalog()
                except (StixError, OSError) as exc:
                    self.log.warning("catalog_refresh_failed", provider=name, error=str(exc))

    def planner_catalog(self) -> Catalog:
        """The catalog, opened on first use (a client request fetches what is missing)."""
        if self.catalog is None:
            import os

            from stixd.planner.catalog import open_catalog

            self.catalog = open_catalog(self.home, os.environ, self.catalog_dirs)
        return self.catalog

    def planner_index(self) -> OfferIndex:
        """The catalog's offers indexed for the planner, with the registry's rules (a new
        index each time, as the catalog may have changed on disk since the last plan)."""
        from stixd.planner.offers import OfferIndex

        return OfferIndex(self.planner_catalog(), self.infras)

    def prices(self, cloud: str) -> Prices:
        """The catalog's $/hour per (region, instance type) of ``cloud``; empty without a
        readable catalog (a price is then unknown, not an error)."""
        from stixd.planner.catalog import CatalogError
        from stixd.planner.pricing import price_table

        try:
            return price_table(self.planner_catalog(), cloud)
        except CatalogError:
            return {}

    def object_stores(self) -> Stores:
        """The object stores' clients, from config ``storage:`` and the environment."""
        if self.stores is None:
            import os

            from stixd.storage.stores import open_stores

            self.stores = open_stores(self.config.storage.stores(), os.environ, self.home_id())
        return self.stores

    def home_id(self) -> str:
        """This stix home's id, on every bucket it makes (the one Kubernetes pods carry)."""
        from stixd.storage.stores import home_id

        return home_id(self.home)

    def spawn(self, row: Row) -> Child:
        """Start (or find) the actor for a stored row; a row that cannot run is quarantined."""
        return self.supervisor.spawn(row, self.actor_factories(self, row.kind))
