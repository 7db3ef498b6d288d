"""The registry's entry type: one infra, what the daemon, config and planner need of it.

This module names no infra. The entries themselves are listed in `stixd.providers.all`, which
with `stixd.daemon` is the composition root: the only code that names concrete providers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from stixd.planner.infra_meta import InfraMeta, Infras

if TYPE_CHECKING:  # the registry is read at config load: it stays light
    import structlog

    from stixd.providers.base import Provider

__all__ = ["BuildContext", "Built", "Factory", "InfraEntry", "build_providers", "planner_table"]


@dataclass(frozen=True)
class BuildContext:
    """What a factory may build its provider from."""

    home: Path
    section: msgspec.Struct | None
    """The entry's config section as the user set it (None for an entry without one)."""
    log: structlog.stdlib.BoundLogger
    agent_build: str


@dataclass(frozen=True)
class Built:
    """A provider as the daemon keeps it, and catalogs it generates for the planner."""

    provider: Provider
    catalog_dirs: Sequence[Path] = ()


Factory = Callable[[BuildContext], Built | None]
"""Builds the entry's provider; None when its config leaves it off (``enabled: false``)."""


@dataclass(frozen=True)
class InfraEntry:
    """One infra of the registry.

    ``factory`` None: planned, not launchable — the planner prices it from its catalog and
    `check` lists it, but no provider exists in this build yet."""

    meta: InfraMeta
    config: type[msgspec.Struct] | None = None
    """Its section of the config file (``<name>:``), None when it has no settings."""
    factory: Factory | None = None
    note: str = field(default="", compare=False)

    @property
    def name(self) -> str:
        return self.meta.name

    @property
    def launchable(self) -> bool:
        return self.factory is not None


def planner_table(entries: Iterable[InfraEntry]) -> Infras:
    """The planner's view of ``entries``: their metadata, and which ones can launch."""
    listed = list(entries)
    return Infras.of((e.meta for e in listed), (e.name for e in listed if e.launchable))


def build_providers(
    entries: Iterable[InfraEntry],
    sections: Mapping[str, msgspec.Struct],
    *,
    home: Path,
    log: structlog.stdlib.BoundLogger,
    agent_build: str,
) -> dict[str, Built]:
    """Every launchable entry's provider that its config section leaves on, in registry order."""
    built: dict[str, Built] = {}
    for entry in entries:
        if entry.factory is None:
            continue
        made = entry.factory(BuildContext(home, sections.get(entry.name), log, agent_build))
        if made is not None:
            built[entry.name] = made
    return built
