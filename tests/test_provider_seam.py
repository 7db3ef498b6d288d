"""The seam between the core and its providers is typed: outside ``stixd/providers/`` no code
reads a provider (or a provider's error) by attribute name with ``getattr``, types a provider
as ``Any``, or silences the type checker on a line that touches one. Abilities are the
``runtime_checkable`` protocols of ``stixd/providers/abilities.py``, checked with isinstance.

The scan is proved on planted violations, so it cannot pass by finding nothing to look at.
"""

from __future__ import annotations

import ast
import inspect
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

import pytest

from stixd.providers import abilities, base
from stixd.providers.aws import errors as aws_errors
from stixd.providers.aws.provider import AwsProvider
from stixd.providers.fake.provider import FakeProvider
from stixd.providers.local.provider import LocalProvider
from stixd.providers.ssh import pools as ssh_pools
from stixd.providers.ssh.provider import SshLaunchError, SshProvider
from tests.conftest import REPO

STIXD = REPO / "stixd"
PROVIDERS = STIXD / "providers"
PROVIDER_CLASSES = (LocalProvider, SshProvider, AwsProvider, FakeProvider)
ERROR_MODULES = (aws_errors, ssh_pools)
SEAM_MODULES = (base, abilities)
"""What crosses the seam: its data types (``Block``...) and the ability protocols."""


class _NoMembers(Protocol):
    """What every protocol class has (``_is_protocol`` and the like), ability or not."""


def _members(cls: type) -> set[str]:
    """Public names a provider (or its error) has: class attributes and those set in
    ``__init__`` (``self.x = ...``)."""
    names = {n for n in dir(cls) if not n.startswith("_")}
    try:
        source = inspect.getsource(cls.__init__)  # type: ignore[misc]
    except (OSError, TypeError):
        return names
    return names | set(re.findall(r"self\.([a-z][a-z0-9_]*)\s*[:=]", source))


def provider_members() -> set[str]:
    """What a getattr on a provider or on a provider's error would ask for by name."""
    errors = [SshLaunchError] + [
        obj
        for mod in ERROR_MODULES
        for _, obj in inspect.getmembers(mod, inspect.isclass)
        if issubclass(obj, Exception) and obj.__module__ == mod.__name__
    ]
    seam = [
        obj
        for mod in SEAM_MODULES
        for _, obj in inspect.getmembers(mod, inspect.isclass)
        if obj.__module__ == mod.__name__
    ]
    found = set().union(*(_members(c) for c in (*PROVIDER_CLASSES, *errors, *seam)))
    # what every exception and protocol class has (args, with_traceback) says nothing
    return found - set(dir(Exception)) - set(dir(_NoMembers))


def _mentions_provider(text: str) -> bool:
    return "provider" in text.lower()


def seam_violations(files: Iterable[Path], members: set[str]) -> list[str]:
    """``path:line: what`` for every getattr, ``Any`` annotation or ``type: ignore`` on the
    provider seam in ``files``."""
    found: list[str] = []
    for path in files:
        source = path.read_text()
        lines = source.splitlines()
        for node in ast.walk(ast.parse(source)):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "hasattr")
                and len(node.args) >= 2
            ):
                target = ast.unparse(node.args[0])
                name = node.args[1]
                asked = name.value if isinstance(name, ast.Constant) else None
                if _mentions_provider(target) or asked in members:
                    found.append(f"{path}:{node.lineno}: {node.func.id}({target}, {asked!r})")
            annotated: list[tuple[str, ast.expr | None]] = []
            if isinstance(node, ast.arg):
                annotated.append((node.arg, node.annotation))
            elif isinstance(node, ast.AnnAssign):
                annotated.append((ast.unparse(node.target), node.annotation))
            for name_, annotation in annotated:
                if (
                    annotation is not None
                    and _mentions_provider(name_)
                    and "Any" in ast.unparse(annotation)
                ):
                    found.append(f"{path}:{annotation.lineno}: {name_} typed Any")
        for number, line in enumerate(lines, 1):
            code, _, comment = line.partition("#")
            if "type: ignore" not in comment or code.lstrip().startswith(("from ", "import ")):
                continue  # an untyped library's import names no provider's member
            called = set(re.findall(r"\.([a-z_][a-z0-9_]*)", code))
            if _mentions_provider(code) or called & members:
                found.append(f"{path}:{number}: type: ignore on {code.strip()}")
    return found


def core_files() -> list[Path]:
    return [p for p in STIXD.rglob("*.py") if PROVIDERS not in p.parents]


def test_the_member_list_knows_the_abilities_read_by_name_before() -> None:
    members = provider_members()
    assert {"last_error", "shell_command", "pools", "credentials_problem", "aclose"} <= members
    assert {"regions", "aws_code", "remember_s", "block"} <= members
    assert "getpeereid" not in members and "orig_argv" not in members


def test_no_getattr_any_or_type_ignore_on_a_provider_outside_the_providers() -> None:
    files = core_files()
    assert len(files) > 50 and STIXD / "actors" / "cluster_launch.py" in files
    assert seam_violations(files, provider_members()) == []


PLANTED = {
    'reasons = getattr(cluster.provider, "last_error", {})': "getattr(cluster.provider",
    'code = getattr(exc, "aws_code", "")': "getattr(exc, 'aws_code')",
    'keep = float(getattr(exc, "remember_s", 0.0))': "getattr(exc, 'remember_s')",
    'ok = hasattr(p, "shell_command")': "hasattr(p, 'shell_command')",
    'await app.providers["ssh"].aclose()  # type: ignore[attr-defined]': "type: ignore",
    "sizes = {n: 1 for n in ssh.pools}  # type: ignore[attr-defined]": "type: ignore",
    'provider: Any = app.provider("x")': "provider typed Any",
    "def f(provider: Any) -> None: ...": "provider typed Any",
}


@pytest.mark.parametrize("line", sorted(PLANTED))
def test_the_scan_finds_a_planted_violation(tmp_path: Path, line: str) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(f"from typing import Any\n\n{line}\n")
    [found] = seam_violations([bad], provider_members())
    assert found.startswith(f"{bad}:3: ") and PLANTED[line] in found


def test_the_scan_leaves_getattr_on_modules_and_other_ignores_alone(tmp_path: Path) -> None:
    fine = tmp_path / "fine.py"
    fine.write_text(
        "import os, sys\n"
        'peer = getattr(os, "getpeereid", None)\n'
        'argv = getattr(sys, "orig_argv", [])\n'
        "import botocore  # type: ignore[import-untyped]\n"
        "def f(row: object) -> None: ...\n"
        "from typing import Any\n"
        "payload: Any = None\n"
    )
    assert seam_violations([fine], provider_members()) == []
