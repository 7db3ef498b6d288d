"""Installing stix takes no top-level name another distribution owns (issue 12, packaging).

`proto` belongs to proto-plus, a dependency of most `google-cloud-*` libraries; stix's shared
package is `stixproto`. These tests build the real wheel and install it beside proto-plus.
"""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OUR_TOP_LEVEL = {"stixd", "stixctl", "stixproto"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("hatchling")
    out = tmp_path_factory.mktemp("wheel")
    src = out / "src"
    # a copy, so the build never writes into the checkout under test
    shutil.copytree(
        REPO,
        src,
        ignore=shutil.ignore_patterns(".git", "__pycache__", "*.egg-info", ".mypy_cache"),
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-q",
            "-w",
            str(out),
            str(src),
        ],
        check=True,
        capture_output=True,
    )
    (found,) = out.glob("stix-*.whl")
    return found


def _top_level(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as zf:
        names = {n.split("/", 1)[0] for n in zf.namelist()}
    return {n for n in names if not n.endswith(".dist-info")}


def test_the_wheel_holds_only_stix_top_level_packages(wheel: Path) -> None:
    assert _top_level(wheel) == OUR_TOP_LEVEL


def test_no_other_installed_distribution_owns_a_stix_top_level_name() -> None:
    owners = importlib.metadata.packages_distributions()
    taken = {
        name: [d for d in owners.get(name, []) if d.lower() != "stix"] for name in OUR_TOP_LEVEL
    }
    assert {k: v for k, v in taken.items() if v} == {}


def test_proto_plus_keeps_working_beside_stix_and_after_uninstalling_it(
    wheel: Path, tmp_path: Path
) -> None:
    pytest.importorskip("proto")  # proto-plus, installed with the test dependencies
    venv = tmp_path / "venv"
    # the venv sees proto-plus (and stix's dependencies) from this interpreter's site-packages;
    # the stix wheel goes into the venv itself, as `pip install stix` would put it
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
        check=True,
        capture_output=True,
    )
    py = str(venv / "bin" / "python")
    pip = [py, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "install", "--no-deps", "--no-index", str(wheel)], check=True)
    probe = (
        "import proto, stixproto, stixctl.main; "
        "assert hasattr(proto, 'Message'), proto.__file__; "
        f"assert stixproto.__file__.startswith({str(venv)!r}), stixproto.__file__"
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    subprocess.run([py, "-c", probe], check=True, env=env, cwd=tmp_path)
    subprocess.run([*pip, "uninstall", "-y", "stix"], check=True, env=env)
    after = subprocess.run(
        [py, "-c", "import proto; print(proto.Message.__name__)"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert after.stdout.strip() == "Message", after.stderr
