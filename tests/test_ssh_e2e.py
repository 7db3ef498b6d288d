"""`launch --infra ssh/POOL` end to end: stixctl → stixd → agents on real sshd hosts."""

from __future__ import annotations

from tests.conftest import Stix, wait_until
from tests.sshbed import SshBed, bed_fixture

hosts = bed_fixture(3, scope="module")


def _pool(stix: Stix, bed: SshBed) -> None:
    ips = "".join(f"    - {h.ip}\n" for h in bed.hosts)
    (stix.home / "ssh_node_pools.yaml").write_text(
        f"bed:\n  user: root\n  identity_file: {bed.key}\n  hosts:\n{ips}"
    )


def test_three_node_job_on_an_ssh_pool(stix: Stix, hosts: SshBed, task_file) -> None:
    _pool(stix, hosts)
    path = task_file(
        "num_nodes: 3\n"
        "resources:\n  infra: ssh/bed\n"
        "setup: echo setup-on-$(hostname)\n"
        "run: |\n"
        '  echo "rank=$SKYPILOT_NODE_RANK host=$(hostname) '
        'head=$(echo "$SKYPILOT_NODE_IPS" | head -n1) n=$SKYPILOT_NUM_NODES"\n'
    )
    out = stix.run("launch", "-c", "pool", "-y", str(path), timeout=120)
    assert out.returncode == 0, out.stderr
    head_ip = hosts.hosts[0].ip
    for rank, host in enumerate(hosts.hosts):
        assert f"rank={rank} host={host.name} head={head_ip} n=3" in out.stdout
    cluster = stix.clusters()["pool"]
    assert cluster["status"] == "UP" and cluster["infra"] == "ssh/bed"
    assert cluster["head_ip"] == head_ip
    # exec reuses the agents over the same connections; a task that exceeds the pool is refused
    again = stix.run("exec", "pool", "echo again-$SKYPILOT_NODE_RANK", check=True)
    assert "again-0" in again.stdout
    other = stix.run("launch", "-c", "other", "--infra", "ssh/bed", "echo x")
    assert other.returncode != 0 and "free" in other.stderr  # all 3 hosts are taken
    stix.run("down", "pool", "-y", check=True, timeout=60)
    wait_until(lambda: "pool" not in stix.clusters())
    # the hosts went back to the pool: a new cluster can take one
    back = stix.run("launch", "-c", "other", "--infra", "ssh/bed", "-y", "hostname", timeout=60)
    assert back.returncode == 0 and hosts.hosts[0].name in back.stdout
    stix.run("down", "other", "-y", check=True, timeout=60)


def test_ssh_infra_errors_name_the_pool(stix: Stix, hosts: SshBed) -> None:
    _pool(stix, hosts)
    missing = stix.run("launch", "-c", "x", "--infra", "ssh/nope", "echo x")
    assert missing.returncode == 2 and "no ssh pool 'nope' (pools: bed)" in missing.stderr
    big = stix.run("launch", "-c", "x", "--infra", "ssh/bed", "--num-nodes", "4", "echo x")
    assert big.returncode == 2 and "has 3 host(s)" in big.stderr
    (stix.home / "ssh_node_pools.yaml").write_text("bed:\n  hosts: []\n")
    broken = stix.run("launch", "-c", "x", "--infra", "ssh/bed", "echo x")
    assert broken.returncode == 2 and "ssh_node_pools.yaml: pool bed: hosts" in broken.stderr


def test_ssh_up_status_down_report_per_host(stix: Stix, hosts: SshBed) -> None:
    _pool(stix, hosts)
    up = stix.run("ssh", "up", "bed", timeout=60)
    assert up.returncode == 0, up.stderr
    assert "Pool bed: 3/3 host(s) ready" in up.stdout
    stix.run("launch", "-c", "held", "--infra", "ssh/bed", "-y", "true", check=True, timeout=60)
    rows = stix.json("ssh", "status")
    assert [r["cluster"] for r in rows].count("held") == 1
    assert all(r["ok"] and r["python"] for r in rows)
    down = stix.run("ssh", "down", "bed", timeout=60)
    assert down.returncode == 0 and "Terminating held" in down.stderr
    assert "held" not in stix.clusters()
    assert all(r["cluster"] is None for r in stix.json("ssh", "status"))
    unknown = stix.run("ssh", "status", "nope")
    assert unknown.returncode == 2 and "no ssh pool 'nope'" in unknown.stderr


def test_ssh_up_names_the_host_that_is_down(stix: Stix, hosts: SshBed) -> None:
    from tests.sshbed import start_sshd

    _pool(stix, hosts)
    broken = hosts.hosts[2]
    broken.kill_sshd_listener()
    try:
        up = stix.run("ssh", "up", "bed", timeout=60)
        assert up.returncode == 1
        assert "Pool bed: 2/3 host(s) ready" in up.stdout
        [line] = [ln for ln in up.stdout.splitlines() if broken.ip in ln]
        assert "connection refused" in line
    finally:
        start_sshd(broken)


def test_ssh_into_a_pool_node(stix: Stix, hosts: SshBed) -> None:
    _pool(stix, hosts)
    stix.run("launch", "-c", "in", "--infra", "ssh/bed", "-y", "true", check=True, timeout=60)
    out = stix.run("ssh", "in", "hostname", check=True, timeout=30)
    assert out.stdout.strip() == hosts.hosts[0].name
    stix.run("down", "in", "-y", check=True, timeout=60)


def test_a_host_that_stops_answering_turns_the_cluster_init_and_fails_the_job(
    stix: Stix, hosts: SshBed
) -> None:
    stix.env["STIX__DAEMON__HEALTH_CHECK_SECONDS"] = "1"
    stix.env["STIX__DAEMON__NODE_GRACE_SECONDS"] = "4"
    _pool(stix, hosts)
    stix.run(
        "launch",
        "-c",
        "flt",
        "--infra",
        "ssh/bed",
        "--num-nodes",
        "2",
        "-y",
        "true",
        check=True,
        timeout=60,
    )
    stix.run("exec", "flt", "-d", "--num-nodes", "2", "sleep 120", check=True)
    wait_until(lambda: stix.job_status("flt", 2) == "RUNNING", timeout=30)
    lost = hosts.hosts[1]
    lost.link_down()
    try:

        def init_naming_the_node() -> bool:
            c = {r["name"]: r for r in stix.json("status", "--refresh")}["flt"]
            return c["status"] == "INIT" and lost.ip in (c["last_error"] or "")

        wait_until(init_naming_the_node, timeout=30, interval=0.5)
        wait_until(lambda: stix.job_status("flt", 2) == "FAILED_DRIVER", timeout=60, interval=0.5)
        why = [e["why"] for e in stix.json("events", "flt") if e["to_state"] == "FAILED_DRIVER"]
        assert why and "unreachable" in why[-1]
    finally:
        lost.link_up()
    wait_until(
        lambda: stix.clusters()["flt"]["status"] == "UP", timeout=45, interval=0.5
    )  # the partition healed: the health check sees every node again
    assert stix.clusters()["flt"]["last_error"] is None
    stix.run("down", "flt", "-y", check=True, timeout=60)


def test_hosts_behind_a_jump_host_or_a_proxy_command(
    stix: Stix, hosts: SshBed, task_file, tmp_path
) -> None:
    from tests.sshbed import INNER_PORT

    # 127.0.0.1:INNER_PORT is each host's own loopback: only a hop through that host reaches it
    jump, proxied = hosts.hosts[1], hosts.hosts[2]
    hop = (
        f"ssh -i {hosts.key} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
        f"-o BatchMode=yes -W %h:%p root@{proxied.ip}"
    )
    (stix.home / "ssh_node_pools.yaml").write_text(
        "hidden:\n"
        "  user: root\n"
        f"  identity_file: {hosts.key}\n"
        f"  jump_host: root@{jump.ip}\n"
        "  hosts:\n"
        f"    - {{ip: 127.0.0.1, port: {INNER_PORT}}}\n"
        f"    - {{ip: 127.0.0.1, port: {INNER_PORT}, proxy_command: '{hop}'}}\n"
    )
    work = tmp_path / "work"
    work.mkdir()
    (work / "data.txt").write_text("through-the-bastion\n")
    path = task_file(
        "num_nodes: 2\n"
        "resources:\n  infra: ssh/hidden\n"
        f"workdir: {work}\n"
        'run: echo "rank=$SKYPILOT_NODE_RANK host=$(hostname) data=$(cat data.txt)"\n'
    )
    out = stix.run("launch", "-c", "hid", "-y", str(path), timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"rank=0 host={jump.name} data=through-the-bastion" in out.stdout
    assert f"rank=1 host={proxied.name} data=through-the-bastion" in out.stdout
    # the OpenSSH client takes the same routes
    head = stix.run("ssh", "hid", "hostname", check=True, timeout=30)
    assert head.stdout.strip() == jump.name
    other = stix.run("ssh", "hid", "--node", "1", "hostname", check=True, timeout=30)
    assert other.stdout.strip() == proxied.name
    stix.run("down", "hid", "-y", check=True, timeout=60)
    assert not (jump.home / "sky_workdir").exists()


def test_hosts_log_in_as_different_users_root_or_not(
    stix: Stix, hosts: SshBed, task_file, tmp_path
) -> None:
    from tests.sshbed import USER

    root_host, user_host = hosts.hosts[0], hosts.hosts[1]
    (stix.home / "ssh_node_pools.yaml").write_text(
        "mixed:\n"
        "  user: root\n"
        f"  identity_file: {hosts.key}\n"
        f"  hosts: [{root_host.ip}, {{ip: {user_host.ip}, user: {USER}}}]\n"
    )
    work = tmp_path / "w"
    work.mkdir()
    (work / "data.txt").write_text("synced\n")
    path = task_file(
        "num_nodes: 2\n"
        "resources:\n  infra: ssh/mixed\n"
        f"workdir: {work}\n"
        "run: |\n"
        '  echo "rank=$SKYPILOT_NODE_RANK user=$(id -un) home=$HOME pwd=$(pwd) $(cat data.txt)"\n'
    )
    out = stix.run("launch", "-c", "mix", "-y", str(path), timeout=120)
    assert out.returncode == 0, out.stderr
    assert "rank=0 user=root home=/root pwd=/root/sky_workdir synced" in out.stdout
    assert f"rank=1 user={USER} home=/home/{USER} pwd=/home/{USER}/sky_workdir synced" in out.stdout
    user_home = user_host.dir / "homes" / USER
    assert (user_home / "sky_workdir" / "data.txt").stat().st_uid != 0
    stix.run("down", "mix", "-y", check=True, timeout=60)
    assert not (user_home / "sky_workdir").exists()
    assert not list((user_home / ".stix" / "nodes").glob("mix-*"))
