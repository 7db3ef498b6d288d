"""The benchmarks' own SkyPilot venv (bench/skypilot_venv.py), without the network: venvs made
with `--without-pip` holding a fake `sky` package stand in for a real install, and the one real
install runs pip offline on a fake `skypilot` wheel built here."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from bench import skypilot_venv as sv


def fake_venv(path: Path, sky_version: str | None = sv.VERSION) -> Path:
    """A venv without pip at ``path``; with a fake `sky` package of ``sky_version`` unless None."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    if sky_version is not None:
        package = site_packages(path) / "sky"
        package.mkdir()
        (package / "__init__.py").write_text(f"__version__ = {sky_version!r}\n")
    return path


def site_packages(venv: Path) -> Path:
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    return venv / "lib" / version / "site-packages"


def mark_installed(venv: Path) -> None:
    (venv / sv.MARKER).write_text(sv.REQUIREMENT + "\n")


def fake_skypilot_wheel(into: Path) -> None:
    """A wheel named skypilot at the pinned version whose only content is `sky.__version__`."""
    dist = f"skypilot-{sv.VERSION}.dist-info"
    files = {
        "sky/__init__.py": f"__version__ = {sv.VERSION!r}\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: skypilot\nVersion: {sv.VERSION}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: fake\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    record = "".join(f"{name},,\n" for name in [*files, f"{dist}/RECORD"])
    with zipfile.ZipFile(into / f"skypilot-{sv.VERSION}-py3-none-any.whl", "w") as whl:
        for name, text in {**files, f"{dist}/RECORD": record}.items():
            whl.writestr(name, text)


@pytest.fixture
def offline_pip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """pip reads no config and no index, only the directory returned (empty until filled)."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    return wheels


def test_a_marked_venv_importing_the_pinned_sky_is_reused_untouched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    venv = fake_venv(tmp_path / "cache" / "skypilot")
    mark_installed(venv)
    keep = site_packages(venv) / "left-by-the-earlier-install"
    keep.write_text("")
    assert sv.ensure_venv(venv) == venv / "bin" / "python"
    assert keep.exists()
    assert "installing" not in capsys.readouterr().out


def test_a_marker_counts_only_beside_the_pinned_sky_and_requirement(tmp_path: Path) -> None:
    older = fake_venv(tmp_path / "older", sky_version="0.13.0")
    mark_installed(older)
    assert not sv.is_installed(older)
    unmarked = fake_venv(tmp_path / "unmarked")
    assert not sv.is_installed(unmarked)
    (unmarked / sv.MARKER).write_text("skypilot==0.13.0\n")
    assert not sv.is_installed(unmarked)
    mark_installed(unmarked)
    assert sv.is_installed(unmarked)


def test_an_install_cut_short_before_its_marker_is_done_again(
    tmp_path: Path, offline_pip: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    venv = fake_venv(tmp_path / "skypilot")  # sky imports, but the install never finished
    stale = site_packages(venv) / "half-installed"
    stale.write_text("")
    fake_skypilot_wheel(offline_pip)
    python = sv.ensure_venv(venv)
    out = capsys.readouterr().out
    assert f"installing {sv.REQUIREMENT} into {venv}" in out
    assert "done in" in out
    assert not stale.exists()  # a fresh venv, not the remains of the earlier one
    assert (venv / sv.MARKER).read_text().strip() == sv.REQUIREMENT
    assert sv.sky_version(python) == sv.VERSION
    assert sv.log_path(venv).is_file()


def test_a_failed_install_is_one_line_naming_pips_log_and_leaves_no_marker(
    tmp_path: Path, offline_pip: Path
) -> None:
    venv = tmp_path / "skypilot"  # offline_pip holds no skypilot wheel: pip fails
    with pytest.raises(SystemExit) as failed:
        sv.ensure_venv(venv)
    message = str(failed.value)
    assert "\n" not in message
    assert str(sv.log_path(venv)) in message
    assert sv.REQUIREMENT in sv.log_path(venv).read_text()  # pip's own complaint is in the log
    assert not (venv / sv.MARKER).exists()


def test_the_flag_wins_over_the_environment_which_wins_over_the_cache(tmp_path: Path) -> None:
    flag = fake_venv(tmp_path / "flag") / "bin" / "python"
    named = fake_venv(tmp_path / "named") / "bin" / "python"
    cache = tmp_path / "cache"
    cached = fake_venv(sv.default_venv({sv.CACHE_ENV: str(cache)}))
    mark_installed(cached)
    environ = {sv.OVERRIDE_ENV: str(named), sv.CACHE_ENV: str(cache)}
    assert sv.skypilot_python(str(flag), environ) == str(flag)
    assert sv.skypilot_python(None, environ) == str(named)
    assert sv.skypilot_python(None, {sv.CACHE_ENV: str(cache)}) == str(cached / "bin" / "python")


def test_an_override_without_sky_is_one_line_saying_how_to_install_instead(
    tmp_path: Path,
) -> None:
    bare = fake_venv(tmp_path / "bare", sky_version=None) / "bin" / "python"
    with pytest.raises(SystemExit) as failed:
        sv.skypilot_python(None, {sv.OVERRIDE_ENV: str(bare)})
    message = str(failed.value)
    assert "\n" not in message
    assert str(bare) in message
    assert sv.OVERRIDE_ENV in message
