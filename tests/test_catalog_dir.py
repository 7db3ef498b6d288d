"""STIX_CATALOG_DIR is easy to point at: either form, one catalog per daemon (a client naming
another is told how to switch), errors that name every place looked, and a service that carries
the variables the daemon reads."""

from __future__ import annotations

import os
import plistlib
import subprocess
import sys
from pathlib import Path

import pytest

from stixd.planner.catalog import CatalogError, CatalogMissing, open_catalog
from stixd.units import render_systemd_unit
from tests.conftest import REPO, Stix
from tests.shared_data import needs
from tests.test_units import needs_systemd_analyze, real_executable, systemd_verify

SHARED = Path(os.environ.get("STIX_CATALOG_DIR") or REPO.parent / "shared" / "catalogs")
pytestmark = needs(SHARED / "v8", "shared catalogs")


def one_cloud_catalog(root: Path) -> Path:
    """A folder holding v8/ with the shared gcp catalog only."""
    (root / "v8" / "gcp").mkdir(parents=True)
    (root / "v8" / "gcp" / "vms.csv").write_bytes((SHARED / "v8" / "gcp" / "vms.csv").read_bytes())
    return root


@pytest.mark.parametrize("form", ["holding v8", "v8 itself", "v8 itself, trailing slash"])
def test_catalog_dir_may_name_the_folder_holding_v8_or_v8_itself(tmp_path: Path, form: str) -> None:
    value = {
        "holding v8": str(SHARED),
        "v8 itself": str(SHARED / "v8"),
        "v8 itself, trailing slash": f"{SHARED / 'v8'}/",
    }[form]
    catalog = open_catalog(tmp_path / "home", {"STIX_CATALOG_DIR": value})
    assert catalog.sources.override_dir == SHARED.absolute()
    assert {"aws", "gcp"} <= set(catalog.clouds())
    assert any(o.accelerator == "A100" for o in catalog.offers("aws"))


def test_a_catalog_dir_that_is_not_a_directory_is_told(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match=r"STIX_CATALOG_DIR='.*nowhere' is not a directory"):
        open_catalog(tmp_path / "home", {"STIX_CATALOG_DIR": str(tmp_path / "nowhere")})


def test_a_missing_cloud_names_every_place_looked(tmp_path: Path) -> None:
    mine = one_cloud_catalog(tmp_path / "mine")
    catalog = open_catalog(tmp_path / "home", {"STIX_CATALOG_DIR": str(mine / "v8")})
    with pytest.raises(CatalogMissing) as missing:
        catalog.offers("aws")
    message = str(missing.value)
    assert f"{mine}/v8/aws/vms.csv (STIX_CATALOG_DIR)" in message
    assert f"{tmp_path}/home/catalogs/v8/aws/vms.csv (the cache)" in message
    assert "stixctl catalog update aws" in message


def test_a_failed_fetch_names_every_directory_and_url_tried(stix: Stix, tmp_path: Path) -> None:
    mine = one_cloud_catalog(tmp_path / "mine")
    stix.env["STIX_CATALOG_DIR"] = str(mine)
    stix.env["STIX_CATALOG_URL"] = "http://127.0.0.1:9"  # discard port: nothing listens
    out = stix.run("show-gpus", "A100", "--infra", "aws")
    assert out.returncode == 2, out.stderr
    assert f"{mine}/v8/aws/vms.csv (STIX_CATALOG_DIR)" in out.stderr
    assert f"{stix.home}/catalogs/v8/aws/vms.csv (the cache)" in out.stderr
    assert "http://127.0.0.1:9/v8/aws/vms.csv" in out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("stixctl:")]
    assert len(errors) == 1 and "Traceback" not in out.stderr


def test_a_client_with_another_catalog_dir_is_told_how_to_switch(
    stix: Stix, tmp_path: Path
) -> None:
    mine = one_cloud_catalog(tmp_path / "mine")
    stix.env["STIX_CATALOG_DIR"] = str(SHARED)  # the first command starts the daemon with it
    assert "aws" in stix.run("show-gpus", "A100", check=True).stdout

    stix.env["STIX_CATALOG_DIR"] = str(mine)
    told = stix.run("show-gpus", "A100")
    assert told.returncode == 2
    assert f"names {mine}/v8 but the running stixd reads {SHARED.resolve()}/v8" in told.stderr
    assert "stixctl daemon stop" in told.stderr and "unset STIX_CATALOG_DIR" in told.stderr
    planned = stix.run("launch", "--dryrun", "-y", "echo hi")
    assert planned.returncode == 2 and "running stixd reads" in planned.stderr
    assert stix.run("status").returncode == 0  # what does not read the catalog goes on

    # the same catalog named the other way, or relative to where the client runs, is the same
    stix.env["STIX_CATALOG_DIR"] = "v8"
    assert stix.run("show-gpus", "A100", cwd=SHARED, check=True).returncode == 0
    del stix.env["STIX_CATALOG_DIR"]  # a client without one takes the daemon's
    assert "aws" in stix.run("show-gpus", "A100", check=True).stdout

    stix.run("daemon", "stop", check=True)
    stix.env["STIX_CATALOG_DIR"] = str(mine / "v8")
    switched = stix.run("show-gpus", "--all", check=True).stdout  # restarted with mine
    assert "gcp" in switched and "aws" not in switched


def test_a_daemon_without_catalog_dir_names_its_cache_to_a_client_with_one(
    stix: Stix, tmp_path: Path
) -> None:
    stix.run("status", check=True)
    stix.env["STIX_CATALOG_DIR"] = str(one_cloud_catalog(tmp_path / "mine"))
    told = stix.run("show-gpus")
    assert told.returncode == 2
    assert f"was started without it and reads {stix.home}/catalogs/v8" in told.stderr


def stixd_install_print(home: Path, env: dict[str, str], *args: str) -> str:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("STIX", "AWS_"))}
    return subprocess.run(
        [sys.executable, "-m", "stixd", "--home", str(home), "install", "--print", *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=home.parent,
    ).stdout


DAEMON_ENV = {
    "STIX_CATALOG_DIR": "cats",
    "STIX_CATALOG_URL": "https://mirror.example/catalogs",
    "STIX_CATALOG_STALE_DAYS": "30",
    "STIX__AUTOSTOP__GRACE_MINUTES": "5",
    "AWS_PROFILE": "team",
    "AWS_REGION": "eu-west-1",
    "AWS_SECRET_ACCESS_KEY": "never-in-a-file",
    "AWS_ACCESS_KEY_ID": "AKIA-never-in-a-file",
    "PATH": "/opt/tools/bin:/usr/bin:/bin",
    "STIX_PROFILE": "/tmp/profile.out",
}


def test_the_systemd_unit_carries_what_the_daemon_reads(tmp_path: Path) -> None:
    home = tmp_path / "stixhome"
    unit = stixd_install_print(home, DAEMON_ENV, "--platform", "linux")
    lines = {line for line in unit.splitlines() if line.startswith("Environment=")}
    assert lines == {
        f'Environment="STIX_HOME={home}"',
        f'Environment="STIX_CATALOG_DIR={tmp_path}/cats"',  # absolute: the service runs in /
        'Environment="STIX_CATALOG_URL=https://mirror.example/catalogs"',
        'Environment="STIX_CATALOG_STALE_DAYS=30"',
        'Environment="STIX__AUTOSTOP__GRACE_MINUTES=5"',
        'Environment="AWS_PROFILE=team"',
        'Environment="AWS_REGION=eu-west-1"',
        'Environment="PATH=/opt/tools/bin:/usr/bin:/bin"',
    }
    assert "never-in-a-file" not in unit


def test_the_launchd_plist_carries_what_the_daemon_reads(tmp_path: Path) -> None:
    home = tmp_path / "stixhome"
    plist = plistlib.loads(stixd_install_print(home, DAEMON_ENV, "--platform", "darwin").encode())
    env = plist["EnvironmentVariables"]
    assert env["STIX_HOME"] == str(home)
    assert env["STIX_CATALOG_DIR"] == f"{tmp_path}/cats"
    assert env["STIX_CATALOG_URL"] == "https://mirror.example/catalogs"
    assert env["AWS_PROFILE"] == "team" and env["PATH"] == "/opt/tools/bin:/usr/bin:/bin"
    assert not {"AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "STIX_PROFILE"} & set(env)


@needs_systemd_analyze
def test_odd_variable_values_make_a_unit_systemd_accepts(tmp_path: Path) -> None:
    env = {"STIX_CATALOG_URL": 'http://m/%h "q" back\\slash $USER', "PATH": "/a b:/c"}
    unit = tmp_path / "stixd.service"
    unit.write_text(render_systemd_unit(real_executable(), tmp_path / "home", env))
    result = systemd_verify(unit, tmp_path)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")
    assert 'Environment="STIX_CATALOG_URL=http://m/%%h \\"q\\" back\\\\slash $USER"' in (
        unit.read_text()
    )


def test_a_variable_a_unit_cannot_hold_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"value of STIX_CATALOG_URL .* control character"):
        render_systemd_unit(real_executable(), tmp_path, {"STIX_CATALOG_URL": "a\nb"})
    home = tmp_path / "stixhome"
    refused = subprocess.run(
        [sys.executable, "-m", "stixd", "--home", str(home), "install", "--print"],
        env={**os.environ, "STIX_CATALOG_URL": "a\nb"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "unset STIX_CATALOG_URL or change it" in refused.stderr
