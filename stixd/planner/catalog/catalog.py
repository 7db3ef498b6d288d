"""The catalog: where each cloud's CSV comes from, loading it lazily through its index, its age.

Sources, first found wins, per file: ``$STIX_CATALOG_DIR/v8/<cloud>/vms.csv`` (a directory the
user points at: the folder holding ``v8/`` or ``v8/`` itself, see `catalog_root`), then the
cache ``<stix home>/catalogs/v8/<cloud>/vms.csv`` that ``stixctl catalog update`` fills (see
``stixd/catalog_fetch.py``; the planner itself never touches the network). A cloud is loaded
only when asked for, once per `Catalog`, and again when its file changes (a provider's
generated catalog, such as Kubernetes' node list, is rewritten while the daemon runs).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import msgspec

from stixd.planner.catalog.index import (
    CsvKey,
    IndexFile,
    build_index,
    index_path,
    load_index,
    write_index,
)
from stixd.planner.catalog.layouts import read_vms
from stixd.planner.catalog.model import AcceleratorSummary, CatalogError, CatalogMissing, Offer
from stixd.planner.catalog.names import KNOWN_CLOUDS, AcceleratorNames, normalize_cloud
from stixd.planner.catalog.readers import read_accelerator_names

__all__ = [
    "DEFAULT_STALE_DAYS",
    "SCHEMA",
    "Catalog",
    "CatalogSources",
    "cache_dir",
    "catalog_root",
    "open_catalog",
]

SCHEMA = "v8"
DEFAULT_STALE_DAYS = 7.0
ENV_DIR = "STIX_CATALOG_DIR"
ENV_STALE_DAYS = "STIX_CATALOG_STALE_DAYS"
_ACCELERATORS_FILE = "common/accelerators.csv"
_DAY = 86400.0


def cache_dir(home: Path) -> Path:
    """Where fetched catalogs live: ``<home>/catalogs`` (holding ``v8/<cloud>/vms.csv``)."""
    return home / "catalogs"


def catalog_root(value: str) -> Path:
    """The folder holding ``v8/`` that a ``STIX_CATALOG_DIR`` value means: the folder itself,
    or the parent of a ``v8`` folder it names directly. CatalogError if it is not a directory,
    so a typo is told rather than silently planned around."""
    path = Path(value).expanduser().absolute()
    if not path.is_dir():
        raise CatalogError(
            f"{ENV_DIR}={value!r} is not a directory; point it at a folder holding "
            f"{SCHEMA}/<cloud>/vms.csv, or at {SCHEMA}/ itself."
        )
    if path.name == SCHEMA and not (path / SCHEMA).is_dir():
        return path.parent
    return path


class CatalogSources(msgspec.Struct, frozen=True, kw_only=True):
    """Where to look. Each directory holds ``v8/<cloud>/vms.csv``; ``override_dir`` wins."""

    cache_dir: Path
    index_dir: Path
    override_dir: Path | None = None
    stale_after_days: float = DEFAULT_STALE_DAYS
    extra_dirs: tuple[Path, ...] = ()
    """Generated catalogs (the ``fake`` provider's), looked in last."""

    def dirs(self) -> list[Path]:
        roots = [self.override_dir] if self.override_dir is not None else []
        return [*roots, self.cache_dir, *self.extra_dirs]

    def looked_in(self, relative: str) -> str:
        """Every place a file is looked for, each with where that place comes from."""

        def origin(root: Path) -> str:
            if root == self.override_dir:
                return ENV_DIR
            return "the cache" if root == self.cache_dir else "generated"

        return ", ".join(f"{root / SCHEMA / relative} ({origin(root)})" for root in self.dirs())


def open_catalog(home: Path, env: Mapping[str, str], extra_dirs: Sequence[Path] = ()) -> Catalog:
    """The catalog of a stix home; honours ``STIX_CATALOG_DIR``, ``STIX_CATALOG_STALE_DAYS``."""
    stale_text = env.get(ENV_STALE_DAYS)
    stale = DEFAULT_STALE_DAYS
    if stale_text:
        try:
            stale = float(stale_text)
        except ValueError:
            stale = -1.0
        if not stale > 0:
            raise CatalogError(f"{ENV_STALE_DAYS}={stale_text!r} is not a positive number of days.")
    override = env.get(ENV_DIR)
    return Catalog(
        CatalogSources(
            cache_dir=cache_dir(home),
            index_dir=cache_dir(home) / "index" / SCHEMA,
            override_dir=catalog_root(override) if override else None,
            stale_after_days=stale,
            extra_dirs=tuple(extra_dirs),
        )
    )


class Catalog:
    """Instance offers of every cloud with a catalog, loaded lazily one cloud at a time."""

    def __init__(self, sources: CatalogSources, clock: Callable[[], float] = time.time) -> None:
        self.sources = sources
        self._clock = clock
        self._index: dict[str, IndexFile] = {}
        self._offers: dict[str, list[Offer]] = {}
        self._names: AcceleratorNames | None = None
        self._problems: dict[str, str] = {}

    # -- where files are -------------------------------------------------------------------

    def _find(self, relative: str) -> tuple[Path, bool] | None:
        """(path, is_cache) of the first source holding ``v8/<relative>``."""
        for root in self.sources.dirs():
            path = root / SCHEMA / relative
            if path.is_file():
                return path, root == self.sources.cache_dir
        return None

    def clouds(self) -> list[str]:
        """Clouds with a catalog file in some source, in SkyPilot's order."""
        found: set[str] = set()
        for root in self.sources.dirs():
            base = root / SCHEMA
            if base.is_dir():
                found |= {p.parent.name for p in base.glob("*/vms.csv") if p.is_file()}
        known = [c for c in KNOWN_CLOUDS if c in found]
        return known + sorted(found - set(known))

    def _cloud(self, cloud: str) -> str:
        if cloud in self._index:
            return cloud
        try:
            return normalize_cloud(cloud)
        except CatalogError:  # maybe a cloud stix does not know yet, with a catalog of its own
            return normalize_cloud(cloud, self.clouds())

    def _csv(self, cloud: str) -> Path:
        found = self._find(f"{cloud}/vms.csv")
        if found is None:
            raise CatalogMissing(
                cloud,
                f"No catalog for {cloud}: run `stixctl catalog update {cloud}` to fetch it "
                f"(looked for {self.sources.looked_in(f'{cloud}/vms.csv')}).",
            )
        return found[0]

    # -- loading ---------------------------------------------------------------------------

    def _load(self, cloud: str) -> IndexFile:
        csv_path = self._csv(cloud)
        key = CsvKey.of(csv_path)
        loaded = self._index.get(cloud)
        if loaded is not None and loaded.key == key:
            return loaded
        self._offers.pop(cloud, None)  # a generated catalog was rewritten: read it again
        ipath = index_path(self.sources.index_dir, cloud)
        index = load_index(ipath, key)
        if index is None:

            def read() -> list[Offer]:
                text = csv_path.read_bytes().decode("utf-8", errors="replace")
                return read_vms(cloud, text, str(csv_path))

            try:
                index, offers = build_index(key, read, self._clock)
            except CatalogError as e:
                self._problems[cloud] = str(e)
                raise
            self._offers[cloud] = offers
            try:
                write_index(ipath, index)
            except OSError as e:
                self._problems[f"index:{cloud}"] = (
                    f"Could not save the {cloud} catalog index in {ipath.parent} ({e.strerror}); "
                    "it is rebuilt on every load until that directory is writable."
                )
        self._problems.pop(cloud, None)
        self._index[cloud] = index
        return index

    def offers(self, cloud: str) -> Sequence[Offer]:
        """Every offer of ``cloud``; GCP accelerator offers come combined with their host."""
        cloud = self._cloud(cloud)
        index = self._load(cloud)
        if cloud not in self._offers:
            self._offers[cloud] = index.offers()
        return self._offers[cloud]

    def summaries(self, cloud: str) -> Sequence[AcceleratorSummary]:
        """Per accelerator of ``cloud``: counts, cheapest prices, number of offers."""
        return self._load(self._cloud(cloud)).summaries

    def loaded(self) -> list[str]:
        """Clouds loaded so far by this catalog (summaries or offers)."""
        return sorted(self._index)

    def index_built_at(self, cloud: str) -> float:
        """When the index in use for ``cloud`` was built (tells a rebuild from a reuse)."""
        return self._load(self._cloud(cloud)).built_at

    # -- names -----------------------------------------------------------------------------

    def _accelerator_names(self) -> AcceleratorNames:
        if self._names is None:
            names = AcceleratorNames()
            found = self._find(_ACCELERATORS_FILE)
            if found is not None:
                try:
                    text = found[0].read_bytes().decode("utf-8", errors="replace")
                    names.add(read_accelerator_names(text, str(found[0])))
                except CatalogError as e:
                    self._problems[_ACCELERATORS_FILE] = str(e)
            self._names = names
        for cloud in self._index:
            self._names.add(s.name for s in self._index[cloud].summaries)
        return self._names

    def canonical_accelerator(self, name: str) -> str | None:
        """The canonical name of an accelerator (``a100-80gb`` -> ``A100-80GB``), or None.

        A name that ``common/accelerators.csv`` lacks is looked up in every cloud's summaries
        (a newer catalog may carry parts the name list does not have yet).
        """
        found = self._accelerator_names().canonical(name)
        if found is None and len(self._index) < len(self.clouds()):
            for cloud in self.clouds():
                try:
                    self._load(cloud)
                except CatalogError:
                    continue  # recorded in problems()
            found = self._accelerator_names().canonical(name)
        return found

    def accelerator_names(self) -> list[str]:
        """Every canonical accelerator name known (accelerators.csv and loaded clouds)."""
        return self._accelerator_names().names()

    # -- age -------------------------------------------------------------------------------

    def age(self, cloud: str) -> float | None:
        """Seconds since the catalog file in use for ``cloud`` was written, None if missing."""
        found = self._find(f"{self._cloud(cloud)}/vms.csv")
        if found is None:
            return None
        return max(0.0, self._clock() - found[0].stat().st_mtime)

    def problems(self) -> list[str]:
        """One sentence per problem worth telling the user; empty when all is well.

        Staleness is judged for fetched catalogs only: a ``STIX_CATALOG_DIR`` is the user's own
        pinned choice.
        """
        out: list[str] = []
        clouds = self.clouds()
        if not clouds:
            out.append(
                "No instance catalogs found; run `stixctl catalog update` to fetch them into "
                f"{self.sources.cache_dir / SCHEMA} (looked for "
                f"{self.sources.looked_in('<cloud>/vms.csv')})."
            )
        limit = self.sources.stale_after_days
        for cloud in clouds:
            found = self._find(f"{cloud}/vms.csv")
            if found is None or not found[1]:
                continue
            age = self._clock() - found[0].stat().st_mtime
            if age > limit * _DAY:
                out.append(
                    f"The {cloud} catalog is {age / _DAY:.0f} days old (older than {limit:g}); "
                    f"run `stixctl catalog update {cloud}` to refresh it."
                )
        if clouds and self._find(_ACCELERATORS_FILE) is None:
            out.append(
                f"The accelerator name list ({_ACCELERATORS_FILE}) is missing; "
                "run `stixctl catalog update` to fetch it."
            )
        return out + list(self._problems.values())
