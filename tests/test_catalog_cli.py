"""show-gpus and the catalog commands through stixctl and a real daemon."""

from __future__ import annotations

import functools
import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, Stix
from tests.shared_data import needs

SHARED = Path(os.environ.get("STIX_CATALOG_DIR") or REPO.parent / "shared" / "catalogs")
pytestmark = needs(SHARED / "v8", "shared catalogs")


@pytest.fixture
def mirror() -> Iterator[str]:
    """A catalog mirror on 127.0.0.1 serving the shared files, as the public URL would."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(SHARED))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_show_gpus_from_a_catalog_dir(stix: Stix) -> None:
    stix.env["STIX_CATALOG_DIR"] = str(SHARED)
    common = stix.run("show-gpus", check=True).stdout
    assert "COMMON_GPU" in common and "A100-80GB" in common
    rows = stix.json("show-gpus", "A100:8")
    aws = [r for r in rows if r.get("cloud") == "aws" and r.get("accelerator") == "A100"]
    assert aws and aws[0]["instance_type"] == "p4d.24xlarge"
    bad = stix.run("show-gpus", "A100:many")
    assert bad.returncode == 2 and "must be a number" in bad.stderr
    unknown = stix.run("show-gpus", "T4", "--infra", "awz")
    assert unknown.returncode == 2 and "awz" in unknown.stderr


def test_missing_catalog_is_fetched_on_demand_then_cached(stix: Stix, mirror: str) -> None:
    stix.env["STIX_CATALOG_URL"] = mirror
    out = stix.run("show-gpus", "H100", "--infra", "nebius", check=True)
    assert "Fetching" in out.stderr and "nebius" in out.stdout
    assert (stix.home / "catalogs" / "v8" / "nebius" / "vms.csv").exists()
    status = stix.run("catalog", "status", check=True).stdout
    assert "nebius" in status and "hours old" in status
    update = stix.run("catalog", "update", "hyperbolic", check=True).stdout
    assert "hyperbolic/vms.csv" in update


def test_unreachable_catalog_is_one_clear_sentence(stix: Stix) -> None:
    stix.env["STIX_CATALOG_URL"] = "http://127.0.0.1:9"  # discard port: nothing listens
    out = stix.run("show-gpus")
    assert out.returncode == 2
    assert "could not be fetched" in out.stderr and "STIX_CATALOG_DIR" in out.stderr
    assert "Traceback" not in out.stderr
