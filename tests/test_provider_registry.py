"""The provider registry is the one place infras are named, and adding an entry is enough.

The scan reads string constants and imports with `ast`: a string constant that *is* an infra's
name (``"aws"``), or an import of a provider folder (``stixd.providers.aws...``), outside
`stixd/providers/` and the composition root (`stixd/providers/all.py`, `stixd/daemon.py`) is a
concrete provider reference. Prose that mentions an infra (a docstring, an f-string's words)
is not. stixctl is scanned too: the thin client must never special-case an infra either (the
daemon says what each one can do), so its few uses of these words need a reason below.
"""

from __future__ import annotations

import ast
import functools
import tomllib
from collections.abc import Iterator
from pathlib import Path

import anyio
import msgspec
import pytest
import structlog

from stixd.actors import factory_for
from stixd.app import App
from stixd.config import config_schema, load_config
from stixd.control import handlers
from stixd.planner.catalog import CatalogSources
from stixd.planner.catalog.catalog import Catalog
from stixd.planner.infra_meta import Egress, InfraMeta
from stixd.planner.offers import OfferIndex
from stixd.planner.optimizer import plan
from stixd.planner.plan_table import render_plan
from stixd.providers.all import ENTRIES, PLANNED
from stixd.providers.fake.provider import FakeProvider
from stixd.providers.registry import (
    BuildContext,
    Built,
    InfraEntry,
    build_providers,
    planner_table,
)
from stixd.runtime.supervisor import RestartPolicy, Supervisor
from stixd.runtime.watch import RowWatch
from stixd.store.db import open_store
from stixproto import messages as m
from tests.optimizer_support import AWS_HEADER, task, write_cloud

REPO = Path(__file__).resolve().parents[1]
SCANNED = ("stixd", "stixctl", "stixproto")
COMPOSITION_ROOT = {"stixd/providers/all.py", "stixd/daemon.py"}
PROVIDERS = "stixd/providers/"

ALLOWED: dict[tuple[str, str], str] = {
    ("stixd/actors/specs.py", "local"): (
        "a stored fact: cluster rows from before the provider field were all local"
    ),
    ("stixproto/task/parsing.py", "*"): "the task language's list of accepted infra names",
    ("stixproto/task/storage.py", "*"): "object-store URL schemes (azure://), not infras",
    ("stixd/planner/catalog/names.py", "*"): (
        "SkyPilot's catalog schema v8: its cloud directories and their aliases, a data format"
    ),
    ("stixd/planner/catalog/layouts.py", "gcp"): (
        "GCP's vms.csv has a column layout of its own: a catalog format, read by name"
    ),
    ("stixd/planner/from_task.py", "*"): (
        "which cloud hosts an input's object store (s3:// is AWS), a fact of the URL"
    ),
    ("stixd/storage/plan.py", "*"): (
        "SkyPilot's store names and which store a task's cloud prefers: facts of its storage"
    ),
    ("stixd/storage/stores/base.py", "*"): "SkyPilot's store names (azure is a store here)",
    ("stixd/storage/stores/s3.py", "aws"): (
        "S3's credentials are AWS's: the AWS provider's resolver, reused rather than copied"
    ),
    ("stixd/storage/stores/__init__.py", "kubernetes"): (
        "the home's id that labels buckets is the one kept by the kubernetes provider's owner file"
    ),
    ("stixd/storage/stores/__init__.py", "aws"): (
        "whether S3 is set up is whether AWS's credential files resolve: the AWS provider's list"
        " of them, reused rather than copied (as s3.py reuses its resolver)"
    ),
    ("stixproto/volumes.py", "*"): (
        "SkyPilot's volume types name their infra (k8s-pvc on kubernetes, host paths on local/ssh)"
    ),
    ("stixctl/main.py", "ssh"): "the `stixctl ssh` command (SkyPilot's verb), not the provider",
    ("stixctl/main.py", "fake"): "the test-only `stixctl fake` command's name",
}
"""(file, name or * for every name) -> why it is not a provider reference."""


def provider_folders() -> set[str]:
    root = REPO / PROVIDERS
    return {p.parent.name for p in root.glob("*/__init__.py")} - {"shared"}


def infra_of(folder: str) -> str:
    """``lambda_cloud`` holds ``lambda`` (a Python keyword cannot name a package)."""
    return folder.removesuffix("_cloud")


def references(tree: ast.AST, names: set[str], folders: set[str]) -> Iterator[tuple[int, str]]:
    """(line, name) of each string constant that is an infra name and each provider import."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names:
            yield node.lineno, node.value
        if isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        named = {
            parts[2]
            for parts in (module.split(".") for module in modules)
            if parts[:2] == ["stixd", "providers"] and len(parts) > 2 and parts[2] in folders
        }
        for folder in sorted(named):
            yield node.lineno, infra_of(folder)


@functools.cache
def scan() -> dict[tuple[str, str], list[int]]:
    names = {e.name for e in ENTRIES}
    folders = provider_folders()
    found: dict[tuple[str, str], list[int]] = {}
    for package in SCANNED:
        for path in sorted((REPO / package).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            if rel.startswith(PROVIDERS) or rel in COMPOSITION_ROOT:
                continue
            for line, name in references(ast.parse(path.read_text()), names, folders):
                found.setdefault((rel, name), []).append(line)
    return found


def _excused(key: tuple[str, str]) -> bool:
    rel, _ = key
    return key in ALLOWED or (rel, "*") in ALLOWED


def test_no_provider_is_named_outside_the_providers_and_the_composition_root() -> None:
    unexcused = [
        f"{rel}:{','.join(map(str, lines))} names {name!r}"
        for (rel, name), lines in scan().items()
        if not _excused((rel, name))
    ]
    assert not unexcused, "concrete provider names outside the registry:\n" + "\n".join(unexcused)


def test_every_allowlisted_exception_is_still_needed() -> None:
    found = scan()
    stale = [
        f"{rel} {name!r}: {why}"
        for (rel, name), why in ALLOWED.items()
        if not any(r == rel and (name in ("*", n)) for r, n in found)
    ]
    assert not stale, "allowlist entries that match nothing any more:\n" + "\n".join(stale)


def test_the_scan_sees_a_literal_and_an_import_it_must_refuse() -> None:
    names, folders = {e.name for e in ENTRIES}, provider_folders()
    code = 'from stixd.providers.aws.provider import AwsProvider\nx = spec.get("p", "local")\n'
    assert sorted(references(ast.parse(code), names, folders)) == [(1, "aws"), (2, "local")]
    prose = '"""Runs on local or aws."""\nx = f"{cloud} is not aws-like"\n'
    assert list(references(ast.parse(prose), names, folders)) == []


def test_each_provider_folder_has_its_entry_and_planned_ones_say_so() -> None:
    for entry in ENTRIES:
        assert entry.meta.name == entry.name and entry.meta.shown()
        assert entry.launchable or entry.note == PLANNED
    assert len({e.name for e in ENTRIES}) == len(ENTRIES)
    folders = {infra_of(f) for f in provider_folders()}
    assert folders == {e.name for e in ENTRIES}


# -- adding an entry is enough ---------------------------------------------------------------


class AcmeConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    regions: tuple[str, ...] = ("acme-east",)


def _build_acme(ctx: BuildContext) -> Built:
    cfg = ctx.section if isinstance(ctx.section, AcmeConfig) else AcmeConfig()
    return Built(FakeProvider(cfg.regions, build=ctx.agent_build))


ACME = InfraEntry(
    InfraMeta(
        name="acme",
        display="ACME Cloud",
        unsupported=frozenset({"spot"}),
        egress=Egress(((float("inf"), 0.5),), whole=True),
    ),
    AcmeConfig,
    _build_acme,
)
WITH_ACME = (*ENTRIES, ACME)


def test_a_new_entry_gets_a_config_section_from_files_and_the_environment(
    tmp_path: Path,
) -> None:
    schema = config_schema((e.name, e.config) for e in WITH_ACME if e.config is not None)
    (tmp_path / "config.yaml").write_text("acme:\n  regions: [acme-west]\n")
    cfg = load_config(tmp_path, env={"STIX__ACME__REGIONS": "[acme-north]"}, schema=schema)
    assert cfg.section("acme", AcmeConfig).regions == ("acme-north",)
    (tmp_path / "config.yaml").write_text("acme:\n  region: [acme-west]\n")
    with pytest.raises(ValueError, match=r"acme\.region: unknown key \(did you mean 'regions'"):
        load_config(tmp_path, env={}, schema=schema)


def test_a_new_entry_is_built_priced_and_shown_by_the_planner(tmp_path: Path) -> None:
    schema = config_schema((e.name, e.config) for e in WITH_ACME if e.config is not None)
    built = build_providers(
        WITH_ACME,
        schema().sections(),
        home=tmp_path,
        log=structlog.get_logger(),
        agent_build="b",
    )
    assert "acme" in built and isinstance(built["acme"].provider, FakeProvider)
    infras = planner_table(WITH_ACME)
    assert "acme" in infras.clouds()
    write_cloud(tmp_path / "cat", "acme", AWS_HEADER, ["a.big,,,8,32,,1.0,0.3,acme-east,,x86_64"])
    cache = tmp_path / "catalogs"
    sources = CatalogSources(
        cache_dir=cache, index_dir=cache / "index" / "v8", override_dir=tmp_path / "cat"
    )
    index = OfferIndex(Catalog(sources), infras)
    p = plan(task(), index, enabled_clouds=["acme"])
    assert p.chosen is not None and p.chosen.instance_type == "a.big"
    assert "ACME Cloud" in render_plan(p, infras)
    spot = plan(task(use_spot=True), index, enabled_clouds=["acme"])
    assert spot.chosen is None and "acme does not support spot instances" in str(spot.no_fit_reason)
    assert infras.egress_cost("acme", 10) == pytest.approx(5.0)


@pytest.mark.anyio
async def test_a_new_entry_is_listed_by_check_with_the_planned_ones(tmp_path: Path) -> None:
    schema = config_schema((e.name, e.config) for e in WITH_ACME if e.config is not None)
    log = structlog.get_logger()
    built = build_providers(WITH_ACME, schema().sections(), home=tmp_path, log=log, agent_build="b")
    async with open_store(tmp_path / "state.db") as store, anyio.create_task_group() as tg:
        app = App(
            home=tmp_path,
            config=schema(),
            store=store,
            watch=RowWatch(store),
            supervisor=Supervisor(tg, store, log, RestartPolicy(5, 60.0)),
            providers={name: b.provider for name, b in built.items()},
            agent_pyz=tmp_path / "agent.pyz",
            agent_build="b",
            log=log,
            infras=planner_table(WITH_ACME),
            actor_factories=factory_for,
        )

        async def emit(_: object) -> None:
            return None

        reply = await handlers.check(app, m.Check(), emit)
        tg.cancel_scope.cancel()
    by_name = {c.infra: c for c in reply.infras}
    assert by_name["acme"].enabled
    assert not by_name["gcp"].enabled and by_name["gcp"].reason == m.NOT_SUPPORTED
    assert "fake" not in by_name  # launchable, but its config section leaves it off


def test_the_import_contract_forbids_every_provider_folder() -> None:
    """A new folder is forbidden to the rest of stixd as soon as it exists (pyproject.toml)."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    [contract] = [
        c
        for c in config["tool"]["importlinter"]["contracts"]
        if c["name"] == "only the composition root names a concrete provider"
    ]
    listed = {m.removeprefix("stixd.providers.") for m in contract["forbidden_modules"]}
    assert listed == provider_folders()
