"""The import rules of DESIGN.md (import-linter contracts in pyproject.toml, plus what they
cannot say), and lint and types."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STDLIB = set(sys.stdlib_module_names)
PYTHONPATH = os.environ.get("PYTHONPATH", "")
LINT_IMPORTS = "import sys; from importlinter.cli import lint_imports_command as c; sys.exit(c())"


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The module an import names, relative imports resolved against the importing module."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    base = base[: len(base) - node.level + (1 if is_package else 0)]
    return ".".join([*base, node.module] if node.module else base)


def imports_of(package: str) -> dict[Path, set[str]]:
    """Every module a package's files import, relative imports resolved."""
    out: dict[Path, set[str]] = {}
    for path in (REPO / package.replace(".", "/")).rglob("*.py"):
        module = ".".join(path.relative_to(REPO).with_suffix("").parts)
        is_package = path.name == "__init__.py"
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                names.add(_absolute(node, module.removesuffix(".__init__"), is_package))
        out[path] = names
    return out


def _bad(package: str, allowed: Callable[[str], bool]) -> list[str]:
    return [
        f"{path.relative_to(REPO)} imports {name}"
        for path, names in imports_of(package).items()
        for name in sorted(names)
        if not allowed(name)
    ]


def test_the_import_contracts_hold() -> None:
    """pyproject.toml's import-linter contracts (layers, forbidden imports, no cycles), checked
    transitively on this checkout's code."""
    pytest.importorskip("importlinter")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), PYTHONPATH]))}
    proc = subprocess.run(
        [sys.executable, "-c", LINT_IMPORTS, "--no-cache"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# What import-linter cannot say: a contract lists forbidden modules, and "only the standard
# library (and msgspec, yaml)" is an allow-list. These two rules are checked on the source.


def test_the_client_imports_only_stdlib_msgspec_and_yaml() -> None:
    allowed = STDLIB | {"stixctl", "stixproto", "msgspec", "yaml"}
    assert _bad("stixctl", lambda n: n.split(".")[0] in allowed) == []


def test_the_agent_is_standard_library_only() -> None:
    def stdlib_or_agent(name: str) -> bool:
        return (
            name.split(".")[0] in STDLIB or name == "stixd.agent" or name.startswith("stixd.agent.")
        )

    assert _bad("stixd.agent", stdlib_or_agent) == []
    bundle = imports_of("stixd")[REPO / "stixd" / "agent_bundle.py"]
    assert {n for n in bundle if not stdlib_or_agent(n)} == set()


def test_stixctl_status_imports_stay_thin() -> None:
    code = (
        "import sys, stixctl.main\n"
        "heavy = {'anyio', 'aiosqlite', 'structlog', 'yaml', 'stixd', 'asyncio'}\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff is a test dependency")
@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["lint", "format"])
def test_ruff_is_clean(command: list[str]) -> None:
    """Lint and format, over the packages, the tests and the benchmarks alike."""
    proc = subprocess.run(["ruff", *command, str(REPO)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_is_clean() -> None:
    """The packages strictly; the tests and benchmarks with their bodies checked (pyproject)."""
    pytest.importorskip("mypy")
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "stixproto", "stixd", "stixctl", "tests", "bench"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
