"""A test that needs ../shared is skipped without it on a developer's machine, failed under CI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.shared_data import require


def test_missing_data_fails_the_test_when_ci_is_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"no shared catalogs at .*nowhere.*CI is set"):
        require(tmp_path / "nowhere", "shared catalogs")


@pytest.mark.parametrize("ci", [None, "", "0", "false"])
def test_missing_data_skips_the_test_without_ci(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ci: str | None
) -> None:
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.skip.Exception, match=r"no compat corpus at .*nowhere"):
        require(tmp_path / "nowhere", "compat corpus")


def test_data_that_is_there_is_handed_back_under_ci_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI", "1")
    assert require(tmp_path, "shared catalogs") == tmp_path


@pytest.mark.parametrize(("ci", "outcome"), [(None, "1 skipped"), ("1", "1 error")])
def test_the_needs_mark_skips_or_fails_a_real_test_run(
    tmp_path: Path, ci: str | None, outcome: str
) -> None:
    """The mark is checked by tests/conftest.py's setup hook, in a pytest run of its own."""
    (tmp_path / "conftest.py").write_text(
        "from tests.conftest import pytest_runtest_setup  # noqa: F401\n"
    )
    (tmp_path / "test_marked.py").write_text(
        "from pathlib import Path\n"
        "from tests.shared_data import needs\n\n"
        f"@needs(Path({str(tmp_path / 'nowhere')!r}), 'shared catalogs')\n"
        "def test_reads_the_catalogs():\n"
        "    raise AssertionError('never run without its data')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    if ci is not None:
        env["CI"] = ci
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore", "-rs"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert outcome in run.stdout, run.stdout + run.stderr
    assert "no shared catalogs at" in run.stdout
    assert run.returncode == (0 if ci is None else 1)


def test_the_ci_script_sets_ci_and_runs_readme_command_2_exactly() -> None:
    script = (REPO / ".ci" / "run").read_text().splitlines()
    readme = (REPO / "README.md").read_text()
    command_2 = readme.split("**2.", 1)[1].split("```bash\n", 1)[1].split("\n```", 1)[0]
    assert script[-1] == command_2
    assert 'export CI="${CI:-1}"' in script[:-1]
