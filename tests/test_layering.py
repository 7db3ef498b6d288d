"""The import rules of DESIGN.md, checked on the source, plus lint and types."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OURS = {"stixproto", "stixd", "stixctl"}
STDLIB = set(sys.stdlib_module_names)


def imports_of(package: str) -> dict[Path, set[str]]:
    """Every absolute module a package's files import (relative imports stay inside it)."""
    out: dict[Path, set[str]] = {}
    for path in (REPO / package.replace(".", "/")).rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module)
        out[path] = names
    return out


def _bad(package: str, allowed) -> list[str]:
    return [
        f"{path.relative_to(REPO)} imports {name}"
        for path, names in imports_of(package).items()
        for name in sorted(names)
        if not allowed(name)
    ]


def test_proto_imports_nothing_of_ours_but_itself() -> None:
    assert _bad("stixproto", lambda n: n.split(".")[0] not in OURS - {"stixproto"}) == []


def test_the_client_never_imports_the_daemon() -> None:
    assert _bad("stixctl", lambda n: n.split(".")[0] != "stixd") == []
    allowed_third_party = {"msgspec", "yaml"}
    assert (
        _bad(
            "stixctl",
            lambda n: n.split(".")[0] in STDLIB | OURS | allowed_third_party,
        )
        == []
    )


def test_providers_never_import_actors_and_planner_does_no_network_io() -> None:
    assert _bad("stixd.providers", lambda n: not n.startswith("stixd.actors")) == []
    network = {"socket", "aiohttp", "asyncssh", "aiobotocore", "urllib", "http", "anyio"}
    assert _bad("stixd.planner", lambda n: n.split(".")[0] not in network) == []


def test_the_agent_is_standard_library_only() -> None:
    assert _bad("stixd.agent", lambda n: n.split(".")[0] in STDLIB) == []
    bundle = imports_of("stixd")[REPO / "stixd" / "agent_bundle.py"]
    assert {
        n for n in bundle if n.split(".")[0] not in STDLIB and not n.startswith("stixd.agent")
    } == set()


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
