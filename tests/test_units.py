"""The systemd unit and launchd agent that keep stixd running.

systemd is not PID 1 on the test machines, so the unit is checked with `systemd-analyze
verify` (which parses it as systemd would and checks that ExecStart exists) and can never be
started here. launchd does not exist on Linux: the plist is checked structurally.
"""

from __future__ import annotations

import configparser
import os
import plistlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from stixd.units import (
    LAUNCHD_LABEL,
    install_unit,
    next_steps,
    render_launchd_plist,
    render_systemd_unit,
    template_path,
)

REPO = Path(__file__).resolve().parents[1]
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed"
)


def real_executable() -> str:
    return os.path.realpath(sys.executable)


def systemd_verify(unit: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    assert SYSTEMD_ANALYZE is not None
    # short: the user units it reads (gpg-agent's) put sockets under it, at most 108 bytes
    with tempfile.TemporaryDirectory(prefix="xdg-") as runtime_dir:
        return subprocess.run(
            [SYSTEMD_ANALYZE, "verify", "--user", "--man=no", str(unit)],
            env={**os.environ, "XDG_RUNTIME_DIR": runtime_dir},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


def parse_unit(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    return parser


def test_templates_come_from_the_repo_in_a_source_checkout() -> None:
    assert template_path("stixd.service") == REPO / "systemd" / "stixd.service"
    assert template_path("sh.stix.stixd.plist") == REPO / "systemd" / "sh.stix.stixd.plist"


@needs_systemd_analyze
def test_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    unit = tmp_path / "stixd.service"
    unit.write_text(render_systemd_unit(real_executable(), tmp_path / ".stix"), encoding="utf-8")
    result = systemd_verify(unit, tmp_path)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@needs_systemd_analyze
def test_systemd_verify_catches_a_missing_executable(tmp_path: Path) -> None:
    # The check above can fail: a unit whose ExecStart does not exist is rejected.
    unit = tmp_path / "stixd.service"
    unit.write_text(
        render_systemd_unit(str(tmp_path / "not-installed" / "stixd"), tmp_path / ".stix"),
        encoding="utf-8",
    )
    result = systemd_verify(unit, tmp_path)
    assert result.returncode != 0
    assert "not-installed/stixd" in result.stdout + result.stderr


@needs_systemd_analyze
def test_systemd_unit_survives_spaces_percent_and_dollar_in_paths(tmp_path: Path) -> None:
    odd_dir = tmp_path / "my apps 100% $HOME"
    odd_dir.mkdir()
    stixd = odd_dir / "stixd"
    stixd.symlink_to(real_executable())
    odd_home = tmp_path / 'stix home %h "quoted" back\\slash $USER'
    unit = tmp_path / "stixd.service"
    unit.write_text(render_systemd_unit(str(stixd), odd_home), encoding="utf-8")
    result = systemd_verify(unit, tmp_path)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")
    service = parse_unit(unit.read_text(encoding="utf-8"))["Service"]
    assert service["ExecStart"] == f'"{tmp_path}/my apps 100%% $HOME/stixd" --foreground'
    assert service["Environment"] == (
        f'"STIX_HOME={tmp_path}/stix home %%h \\"quoted\\" back\\\\slash $USER"'
    )


def test_systemd_unit_stops_only_the_daemon_and_restarts_it_on_failure(tmp_path: Path) -> None:
    home = tmp_path / ".stix"
    unit = parse_unit(render_systemd_unit("/usr/local/bin/stixd", home))
    service = unit["Service"]
    assert service["ExecStart"] == '"/usr/local/bin/stixd" --foreground'
    assert service["Environment"] == f'"STIX_HOME={home}"'
    assert service["KillMode"] == "process"
    assert service["Restart"] == "on-failure"
    assert int(service["RestartSec"]) > 0
    assert int(service["TimeoutStopSec"]) > 0
    assert unit["Install"]["WantedBy"] == "default.target"


def test_systemd_unit_makes_a_relative_home_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    service = parse_unit(render_systemd_unit("/usr/local/bin/stixd", Path("state")))["Service"]
    assert service["Environment"] == f'"STIX_HOME={tmp_path}/state"'


@pytest.mark.parametrize(
    ("stixd_path", "message"),
    [
        ("stixd", "must be absolute"),
        ('/opt/"stix"/stixd', "quotes or backslashes"),
        ("/opt/back\\slash/stixd", "quotes or backslashes"),
        ("/opt/new\nline/stixd", "control character"),
    ],
)
def test_systemd_unit_refuses_paths_systemd_cannot_run(stixd_path: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        render_systemd_unit(stixd_path, Path("/home/me/.stix"))


def test_launchd_plist_runs_stixd_and_abandons_its_children(tmp_path: Path) -> None:
    home = tmp_path / ".stix"
    plist = plistlib.loads(render_launchd_plist("/usr/local/bin/stixd", home).encode())
    assert plist == {
        "Label": LAUNCHD_LABEL,
        "ProgramArguments": ["/usr/local/bin/stixd", "--foreground"],
        "EnvironmentVariables": {"STIX_HOME": str(home)},
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},
        "ThrottleInterval": 5,
        "ExitTimeOut": 30,
        "AbandonProcessGroup": True,
        "StandardOutPath": f"{home}/stixd.out.log",
        "StandardErrorPath": f"{home}/stixd.err.log",
    }


def test_launchd_plist_escapes_xml_in_paths(tmp_path: Path) -> None:
    stixd = "/Users/a&b/<apps>/stix ${stixd}/stixd"
    home = Path("/Users/a&b/.stix <'\">")
    text = render_launchd_plist(stixd, home)
    assert "<apps>" not in text
    plist = plistlib.loads(text.encode())
    assert plist["ProgramArguments"] == [stixd, "--foreground"]
    assert plist["EnvironmentVariables"] == {"STIX_HOME": str(home)}
    assert plist["StandardErrorPath"] == f"{home}/stixd.err.log"


def test_launchd_plist_refuses_control_characters() -> None:
    with pytest.raises(ValueError, match="control character"):
        render_launchd_plist("/usr/local/bin/stixd", Path("/Users/me/\x07stix"))


@needs_systemd_analyze
def test_install_unit_writes_a_verifiable_systemd_unit(tmp_path: Path) -> None:
    target = tmp_path / "systemd" / "user"
    path = install_unit("linux", real_executable(), tmp_path / ".stix", target_dir=target)
    assert path == target / "stixd.service"
    assert path.read_text(encoding="utf-8") == render_systemd_unit(
        real_executable(), tmp_path / ".stix"
    )
    assert path.stat().st_mode & 0o777 == 0o644
    result = systemd_verify(path, tmp_path)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_install_unit_writes_the_launchd_plist_on_macos(tmp_path: Path) -> None:
    path = install_unit("darwin", "/usr/local/bin/stixd", tmp_path / ".stix", tmp_path)
    assert path == tmp_path / "sh.stix.stixd.plist"
    assert plistlib.loads(path.read_bytes())["Label"] == LAUNCHD_LABEL
    assert path.stat().st_mode & 0o777 == 0o644


def test_reinstalling_replaces_the_unit_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    target = tmp_path / "units"
    install_unit("linux", "/old/bin/stixd", tmp_path / ".stix", target)
    path = install_unit("linux", "/new/bin/stixd", tmp_path / ".stix", target)
    assert '"/new/bin/stixd" --foreground' in path.read_text(encoding="utf-8")
    assert sorted(p.name for p in target.iterdir()) == ["stixd.service"]


def test_install_unit_defaults_to_the_user_service_directories(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    linux = install_unit("linux", "/usr/local/bin/stixd", tmp_path / ".stix")
    darwin = install_unit("darwin", "/usr/local/bin/stixd", tmp_path / ".stix")
    assert linux == tmp_path / ".config" / "systemd" / "user" / "stixd.service"
    assert darwin == tmp_path / "Library" / "LaunchAgents" / "sh.stix.stixd.plist"
    assert linux.is_file()
    assert darwin.is_file()


def test_install_unit_on_an_unsupported_platform_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"run `stixd --foreground` under your own"):
        install_unit("win32", "C:/stix/stixd.exe", tmp_path, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_next_steps_enable_the_service_and_keep_it_running_unattended(tmp_path: Path) -> None:
    linux = next_steps("linux")
    assert "systemctl --user daemon-reload && systemctl --user enable --now stixd" in linux
    assert "loginctl enable-linger $USER" in linux
    assert "systemctl --user link" not in linux
    darwin = next_steps("darwin")
    assert "launchctl bootstrap gui/$(id -u) ~/Library/LaunchAgents/sh.stix.stixd.plist" in darwin


def test_next_steps_link_a_unit_installed_outside_the_search_path(tmp_path: Path) -> None:
    unit = tmp_path / "my units" / "stixd.service"
    assert f"systemctl --user link '{unit}'" in next_steps("linux", unit)
    plist = tmp_path / "agents" / "sh.stix.stixd.plist"
    assert f"launchctl bootstrap gui/$(id -u) {plist}" in next_steps("darwin", plist)
