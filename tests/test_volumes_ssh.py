"""`stixctl volumes` on an SSH pool (real sshd hosts, tests/sshbed.py): the pool's unprivileged
login user writes to a volume in one job and reads it in the next; an ephemeral volume lives in
the node's own folder on its host and goes with it at down."""

from __future__ import annotations

from stixproto.volumes import ephemeral_name
from tests.conftest import Stix
from tests.sshbed import SshBed, bed_fixture
from tests.test_volumes import volumes, write

hosts = bed_fixture(1, scope="module")
WRITE = "resources:\n  infra: ssh/bed\nvolumes:\n  ~/data: notes\nrun: id -u > ~/data/who\n"
READ = """resources:\n  infra: ssh/bed
volumes:\n  ~/in: notes\n  ~/scratch: {size: 1Gi}
run: echo read-$(cat ~/in/who) && id -u > ~/scratch/who
"""


def test_a_non_root_job_writes_a_volume_on_an_ssh_host_and_the_next_job_reads_it(
    stix: Stix, hosts: SshBed
) -> None:
    from tests.sshbed import USER, USER_ID

    host = hosts.hosts[0]
    (stix.home / "ssh_node_pools.yaml").write_text(
        f"bed:\n  user: {USER}\n  identity_file: {hosts.key}\n  hosts: [{host.ip}]\n"
    )
    spec = "name: notes\ntype: k8s-hostpath\ninfra: ssh/bed\n"
    stix.run("volumes", "apply", write(stix, "v.yaml", spec), "-y", check=True, timeout=60)
    folder = host.dir / "homes" / USER / ".stix" / "volumes" / "notes"
    assert folder.is_dir() and folder.stat().st_uid == USER_ID
    assert volumes(stix)["notes"]["status"] == "READY"

    stix.run("launch", "-c", "w", "-y", write(stix, "w.yaml", WRITE), check=True, timeout=120)
    assert (folder / "who").read_text().strip() == str(USER_ID)
    refused = stix.run("volumes", "delete", "notes", "-y")
    assert refused.returncode == 2 and "in use by cluster(s) w" in refused.stderr
    stix.run("down", "w", "-y", check=True, timeout=60)

    read = stix.run("launch", "-c", "r", "-y", write(stix, "r.yaml", READ), timeout=120)
    assert read.returncode == 0, read.stderr
    assert f"read-{USER_ID}" in read.stdout
    scratch = ephemeral_name("r", "~/scratch")
    node = host.dir / "homes" / USER / ".stix" / "nodes" / "r-0"
    assert (node / "volumes" / scratch / "who").read_text().strip() == str(USER_ID)
    assert volumes(stix)[scratch]["used_by"] == ["r"]
    stix.run("down", "r", "-y", check=True, timeout=60)
    assert not node.exists() and scratch not in volumes(stix)
    stix.run("volumes", "delete", "notes", "-y", check=True, timeout=60)
    assert not folder.exists()
