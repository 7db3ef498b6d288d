"""Buckets on the SSH infra, on a real sshd host (tests/sshbed.py) whose jobs run as the pool's
unprivileged login: COPY reads a bucket through the signed URLs its agent fetches, with no store
credentials on the host; MOUNT and MOUNT_CACHED put the distro's rclone on FUSE inside the
host's own namespaces, and the job reads and writes through both. The S3 emulator (moto)
listens on the root side of the bed's bridge, the one address both the daemon and the host's
namespace reach."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from stixd.providers.shared.fuse_tools import PROBE, install_command, parse_facts
from stixd.providers.shared.ssh_transport import SshConnection, SshTarget
from tests.conftest import Stix, wait_until
from tests.sshbed import USER, USER_ID, SshBed, bed_fixture
from tests.stores_bed import Emulator, running
from tests.test_storage import buckets, s3

hosts = bed_fixture(2, hide={2: ("rclone",)}, scope="module")
"""Host 1 has the machine's rclone and fuse3; host 2 has fuse3 but no rclone."""


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


def on_the_bed(stix: Stix, hosts: SshBed, moto_bridge: Emulator) -> None:
    """Point the daemon at the bridge's moto and at a pool of the bed's host, logged in to as
    its unprivileged user."""
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_PROFILE"):
        stix.env.pop(name, None)
    stix.env.update(moto_bridge.env)
    config = f"storage:\n  s3: {{endpoint_url: '{moto_bridge.url}'}}\n"
    (stix.home / "config.yaml").write_text(config)
    (stix.home / "ssh_node_pools.yaml").write_text(
        f"bed:\n  user: {USER}\n  identity_file: {hosts.key}\n  hosts: [{hosts.hosts[0].ip}]\n"
    )


def test_a_job_on_an_ssh_host_reads_a_bucket_it_has_no_credentials_for(
    stix: Stix, hosts: SshBed, moto_bridge: Emulator, tmp_path: Path
) -> None:
    on_the_bed(stix, hosts, moto_bridge)
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


def keys(emu: Emulator, bucket: str) -> set[str]:
    listing = s3(emu).list_objects_v2(Bucket=bucket).get("Contents") or []
    return {str(o["Key"]) for o in listing}


@pytest.mark.slow
def test_a_non_root_job_on_an_ssh_host_reads_and_writes_through_mount_and_mount_cached(
    stix: Stix, hosts: SshBed, moto_bridge: Emulator, tmp_path: Path
) -> None:
    on_the_bed(stix, hosts, moto_bridge)
    host = hosts.hosts[0]
    data = tmp_path / "data"
    data.mkdir()
    (data / "in.txt").write_text("from-the-bucket\n")
    task = tmp_path / "m.yaml"
    task.write_text(
        f"""
resources:
  infra: ssh/bed
file_mounts:
  ~/m:
    name: stix-ssh-mount
    source: {data}
    store: s3
    mode: MOUNT
  ~/c:
    name: stix-ssh-cached
    source: {data}
    store: s3
    mode: MOUNT_CACHED
    config:
      mount_cached:
        vfs_write_back: 3s
run: |
  set -e
  echo uid-$(id -u) $(cat ~/m/in.txt) $(cat ~/c/in.txt)
  echo via-mount > ~/m/out-m.txt
  echo via-cache > ~/c/out-c.txt
"""
    )
    done = stix.run("launch", "-c", "sm", "-y", "-d", str(task), timeout=180)
    assert done.returncode == 0, done.stderr
    assert "Mounted s3://stix-ssh-cached" in done.stdout + done.stderr
    # the mounts live in the host's own mount namespace, made by its unprivileged user
    mounts = host.exec("sh", "-c", f"cat /proc/$(cat {host.dir}/sshd.pid)/mounts").stdout
    points = _rclone_mounts_of_the_host(mounts)
    assert sorted(points) == [f"/home/{USER}/c", f"/home/{USER}/m"], mounts

    # SUCCEEDED only once the write-back cache (3 s) reached the bucket
    wait_until(lambda: stix.job_status("sm", 1) not in (None, "PENDING", "RUNNING"), timeout=90)
    assert stix.job_status("sm", 1) == "SUCCEEDED"
    assert "out-c.txt" in keys(moto_bridge, "stix-ssh-cached")
    assert "out-m.txt" in keys(moto_bridge, "stix-ssh-mount")
    logs = stix.run("logs", "sm", "1", "--no-follow", timeout=30).stdout
    assert f"uid-{USER_ID} from-the-bucket from-the-bucket" in logs

    stix.run("down", "sm", "-y", check=True, timeout=90)
    mounts = host.exec("sh", "-c", f"cat /proc/$(cat {host.dir}/sshd.pid)/mounts").stdout
    assert _rclone_mounts_of_the_host(mounts) == []  # down unmounted both
    assert not [pid for pid in host.pids() if "rclone" in _cmdline(pid)]
    assert "out-c.txt" in keys(moto_bridge, "stix-ssh-cached")  # the bucket outlives the node
    stix.run("storage", "delete", "stix-ssh-mount", "stix-ssh-cached", "-y", check=True)
    assert not {"stix-ssh-mount", "stix-ssh-cached"} & buckets(moto_bridge)


def _rclone_mounts_of_the_host(mounts: str) -> list[str]:
    """The rclone mounts under the host user's home: the host's namespace also sees mounts
    other tests running beside this one make on this machine (propagated from the root's)."""
    points = [line.split()[1] for line in mounts.splitlines() if " fuse.rclone " in line]
    return [p for p in points if p.startswith(f"/home/{USER}/")]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def test_a_mount_on_a_host_without_rclone_is_refused_in_one_sentence_when_it_cannot_install(
    stix: Stix, hosts: SshBed, moto_bridge: Emulator, tmp_path: Path
) -> None:
    on_the_bed(stix, hosts, moto_bridge)
    bare = hosts.hosts[1]  # its login is no sudoer (the machine has no sudo): nothing installs
    pools = f"bare:\n  user: {USER}\n  identity_file: {hosts.key}\n  hosts: [{bare.ip}]\n"
    (stix.home / "ssh_node_pools.yaml").write_text(pools)
    data = tmp_path / "d"
    data.mkdir()
    (data / "x.txt").write_text("x\n")
    task = tmp_path / "bare.yaml"
    task.write_text(
        f"""
resources:
  infra: ssh/bare
file_mounts:
  ~/x:
    name: stix-ssh-norclone
    source: {data}
    store: s3
    persistent: false
    mode: MOUNT
run: echo never
"""
    )
    done = stix.run("launch", "-c", "nr", "-y", str(task), timeout=180)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert "no rclone" in last and "apt-get install -y rclone fuse3" in last, done.stderr
    assert "stix-ssh-norclone" not in buckets(moto_bridge)  # released with the launch
    stix.run("down", "nr", "-y", check=True, timeout=60)


def test_the_install_decision_on_real_hosts_follows_the_login_and_what_is_missing(
    hosts: SshBed,
) -> None:
    """The probe run on the bed's hosts; what would be installed is decided, never run (an
    install needs the network, which the hosts lack)."""

    async def facts(index: int, user: str) -> str:
        host = hosts.hosts[index]
        target = SshTarget(host=host.ip, user=user, identity_file=str(hosts.key))
        conn = SshConnection(target)
        try:
            status, out, _ = await conn.run(PROBE, timeout=30)
        finally:
            await conn.close()
        assert status == 0
        return out

    full, bare_root, bare_user = (
        anyio.run(facts, 0, "root"),
        anyio.run(facts, 1, "root"),
        anyio.run(facts, 1, USER),
    )
    assert parse_facts(full).missing == ()
    assert install_command(parse_facts(full), allowed=True) is None
    root = parse_facts(bare_root)
    assert (root.missing, root.root, root.manager) == (("rclone",), True, "apt-get")
    command = install_command(root, allowed=True)
    assert command is not None and "apt-get install -y -q rclone" in command
    assert "sudo" not in command and "fuse3" not in command  # root; fusermount3 is there
    assert install_command(root, allowed=False) is None  # a pool with install_packages: false
    user = parse_facts(bare_user)
    assert (user.missing, user.root, user.sudo) == (("rclone",), False, False)
    assert install_command(user, allowed=True) is None
