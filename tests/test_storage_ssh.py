"""COPY on the SSH infra: a job on a real sshd host (tests/sshbed.py) reads a bucket through
the signed URLs its agent fetches, with no store credentials on the host. The S3 emulator
(moto) listens on the root side of the bed's bridge, the one address both the daemon and the
host's namespace reach."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Stix
from tests.sshbed import USER, SshBed, bed_fixture
from tests.stores_bed import Emulator, running
from tests.test_storage import buckets

hosts = bed_fixture(1, scope="module")


@pytest.fixture(scope="module")
def moto_bridge(hosts: SshBed) -> Iterator[Emulator]:
    emu = Emulator("moto-bridge")
    gateway = hosts.subnet.replace(".0/24", ".1")
    emu.url = f"http://{gateway}:{emu.port}"
    emu.env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    argv = [sys.executable, "-m", "moto.server", "-H", gateway, "-p", str(emu.port)]
    with running(emu, argv, "/moto-api/"):
        yield emu


def test_a_job_on_an_ssh_host_reads_a_bucket_it_has_no_credentials_for(
    stix: Stix, hosts: SshBed, moto_bridge: Emulator, tmp_path: Path
) -> None:
    host = hosts.hosts[0]
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_PROFILE"):
        stix.env.pop(name, None)
    stix.env.update(moto_bridge.env)
    config = f"storage:\n  s3: {{endpoint_url: '{moto_bridge.url}'}}\n"
    (stix.home / "config.yaml").write_text(config)
    (stix.home / "ssh_node_pools.yaml").write_text(
        f"bed:\n  user: {USER}\n  identity_file: {hosts.key}\n  hosts: [{host.ip}]\n"
    )
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "sub" / "word.txt").write_text("over-ssh\n")
    task = tmp_path / "t.yaml"
    task.write_text(
        f"""
resources:
  infra: ssh/bed
file_mounts:
  ~/in:
    name: stix-ssh-copy
    source: {data}
    store: s3
    mode: COPY
run: |
  echo read-$(cat ~/in/sub/word.txt)
  echo keys-$(env | grep -c '^AWS_' ; ls ~/.aws 2>/dev/null | wc -l)
"""
    )
    done = stix.run("launch", "-c", "sc", "-y", str(task), timeout=180)
    assert done.returncode == 0, done.stderr
    assert "read-over-ssh" in done.stdout
    assert "keys-0 0" in done.stdout  # the node was given no store credentials
    assert "stix-ssh-copy" in buckets(moto_bridge)
    stix.run("down", "sc", "-y", check=True, timeout=60)
    stix.run("storage", "delete", "stix-ssh-copy", "-y", check=True, timeout=60)
    assert "stix-ssh-copy" not in buckets(moto_bridge)
