"""The SSH transport against real sshd hosts in network namespaces (tests/sshbed.py)."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
import pytest

from stixd.agent_client import AgentUnreachable
from stixd.providers.shared.ssh_transport import (
    SESSION_CHANNELS,
    SshAuthError,
    SshConnection,
    SshConnectionLost,
    SshSettings,
    SshTarget,
    SshUnreachable,
)
from tests.sshbed import Host, SshBed, bed_fixture, ssh_hosts

pytestmark = pytest.mark.anyio

hosts = bed_fixture(3, scope="module")

FAST = SshSettings(
    connect_timeout=3.0,
    keepalive_interval=1.0,
    keepalive_count_max=3,
    backoff_initial=0.2,
    backoff_max=2.0,
)
DETECT_WITHIN_S = 15.0
"""Generous bound on noticing a dead link (keepalives say ~4 s, connect timeout 3 s)."""


def target(bed: SshBed, host: Host, key: Path | None = None) -> SshTarget:
    return SshTarget(host.ip, 22, "root", str(key or bed.key))


@pytest.fixture
async def connect() -> AsyncIterator[Callable[[SshTarget], SshConnection]]:
    """Makes connection managers and closes them all after the test."""
    made: list[SshConnection] = []

    def make(t: SshTarget) -> SshConnection:
        made.append(SshConnection(t, FAST))
        return made[-1]

    yield make
    for conn in made:
        await conn.close()


async def test_run_returns_the_exit_status_and_output_of_each_host(
    hosts: SshBed, connect: Callable[[SshTarget], SshConnection]
) -> None:
    for host in hosts.hosts:
        conn = connect(target(hosts, host))
        status, out, err = await conn.run("hostname; echo $HOME", timeout=10)
        assert (status, out, err) == (0, f"{host.name}\n/root\n", "")
        failed = await conn.run("echo oops >&2; exit 3", timeout=10)
        assert (failed.exit_status, failed.stderr) == (3, "oops\n")


async def test_many_calls_share_one_multiplexed_connection(
    hosts: SshBed, connect: Callable[[SshTarget], SshConnection], tmp_path: Path
) -> None:
    host = hosts.host(1)
    conn = connect(target(hosts, host))
    results: list[str] = []

    async def one(i: int) -> None:
        results.append((await conn.run(f"echo {i}", timeout=20)).stdout.strip())

    async with anyio.create_task_group() as tg:  # more at once than sshd's MaxSessions
        for i in range(3 * SESSION_CHANNELS):
            tg.start_soon(one, i)
    for i in range(10):
        assert (await conn.run(f"echo {i}", timeout=10)).stdout == f"{i}\n"
    local = tmp_path / "blob"
    local.write_bytes(b"x" * 1000)
    await conn.sftp_put(local, "/root/blob")
    agent = conn.agent_client("/root/nothing-here.sock")
    with pytest.raises(AgentUnreachable):
        await agent.call("hello", deadline=5)

    assert sorted(results, key=int) == [str(i) for i in range(3 * SESSION_CHANNELS)]
    assert conn.connects == 1
    assert host.established_ssh_connections() == 1  # counted by the server's kernel


async def test_sftp_put_replaces_the_file_atomically_and_leaves_no_partial(
    hosts: SshBed, connect: Callable[[SshTarget], SshConnection], tmp_path: Path
) -> None:
    host = hosts.host(2)
    conn = connect(target(hosts, host))
    local = tmp_path / "tool.pyz"
    for content in (b"first version", b"second version, longer"):
        local.write_bytes(content)
        await conn.sftp_put(local, "/root/deep/dir/tool.pyz", mode=0o755)
        landed = host.home / "deep" / "dir" / "tool.pyz"
        assert landed.read_bytes() == content
    assert os.stat(landed).st_mode & 0o777 == 0o755
    assert sorted(p.name for p in landed.parent.iterdir()) == ["tool.pyz"]


async def test_agent_stream_to_a_socket_nobody_listens_on_is_agent_unreachable(
    hosts: SshBed, connect: Callable[[SshTarget], SshConnection]
) -> None:
    host = hosts.host(3)
    agent = connect(target(hosts, host)).agent_client("/root/.stix/none.sock", "n0")
    with pytest.raises(AgentUnreachable, match=rf"host {host.ip}: nothing listens on"):
        await agent.call("hello", deadline=5)


async def test_failed_connects_are_spaced_by_an_exponential_backoff(hosts: SshBed) -> None:
    """After a failure no new attempt is made before the backoff is over; a call meanwhile
    fails at once (saying when the next try is) when the backoff is longer than a caller
    should wait for, and waits it out when it is short."""
    refused = r"connection refused on port 2222 \(is sshd running\?\)"
    target = SshTarget(hosts.host(1).ip, 2222, "root", str(hosts.key))
    settings = SshSettings(
        connect_timeout=3.0, backoff_initial=0.3, backoff_max=0.6, backoff_wait_max=0.0
    )
    conn = SshConnection(target, settings)
    try:
        for attempt, backoff in enumerate((0.3, 0.6, 0.6), start=1):
            with pytest.raises(SshUnreachable, match=refused):
                await conn.run("true", timeout=10)
            assert conn.failed_connects == attempt
            started = time.monotonic()
            with pytest.raises(SshUnreachable, match=rf"{refused} \(next try in 0\.\d s\)$"):
                await conn.run("true", timeout=10)
            assert time.monotonic() - started < 0.1  # no waiting for the backoff
            assert conn.failed_connects == attempt  # ... and no attempt during it
            await anyio.sleep(backoff)
    finally:
        await conn.close()

    patient = SshConnection(target, dataclasses.replace(settings, backoff_wait_max=1.0))
    try:
        with pytest.raises(SshUnreachable, match=f"{refused}$"):
            await patient.run("true", timeout=10)
        started = time.monotonic()
        with pytest.raises(SshUnreachable, match=f"{refused}$"):  # a new attempt, after 0.3 s
            await patient.run("true", timeout=10)
        assert time.monotonic() - started >= 0.25
        assert patient.failed_connects == 2
    finally:
        await patient.close()


async def test_a_wrong_key_is_a_clear_authentication_error(
    hosts: SshBed, connect: Callable[[SshTarget], SshConnection], tmp_path: Path
) -> None:
    wrong = tmp_path / "id_wrong"
    await anyio.run_process(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(wrong)])
    host = hosts.host(1)
    conn = connect(target(hosts, host, wrong))
    with pytest.raises(SshAuthError) as caught:
        await conn.run("true", timeout=10)
    assert str(caught.value) == (
        f"host {host.ip}: authentication failed for user root with key {wrong}"
    )
    assert caught.value.retryable is False


async def test_a_cut_link_fails_in_bounded_time_and_the_next_call_after_up_reconnects(
    connect: Callable[[SshTarget], SshConnection],
) -> None:
    with ssh_hosts(1) as bed:
        host = bed.host(1)
        conn = connect(target(bed, host))
        assert (await conn.run("true", timeout=10)).exit_status == 0
        host.link_down()

        started = time.monotonic()
        with pytest.raises(SshConnectionLost, match=rf"^host {host.ip}: the SSH connection"):
            await conn.run("true", timeout=60)  # in flight when keepalives give up
        lost_after = time.monotonic() - started
        started = time.monotonic()
        # silence until the connect timeout, or at once "no route" when the kernel knows
        no_way = rf"^host {host.ip}: (no answer within 3 s|no route to it)$"
        with pytest.raises(SshUnreachable, match=no_way) as caught:
            await conn.run("true", timeout=60)
        unreachable_after = time.monotonic() - started
        print(
            f"link down: lost after {lost_after:.2f}s; "
            f"then {caught.value!s} after {unreachable_after:.2f}s"
        )
        assert lost_after < DETECT_WITHIN_S
        assert unreachable_after < DETECT_WITHIN_S

        host.link_up()
        assert (await conn.run("hostname", timeout=30)).stdout == f"{host.name}\n"
        assert conn.connects == 2


async def test_a_blackholed_host_is_no_answer_within_the_connect_timeout(
    hosts: SshBed, connect: Callable[[SshTarget], SshConnection]
) -> None:
    host = hosts.host(3)
    drop_all = (
        "add table inet fault; "
        "add chain inet fault in { type filter hook input priority 0; policy drop; }"
    )
    host.exec("nft", drop_all)
    try:
        conn = connect(target(hosts, host))
        started = time.monotonic()
        with pytest.raises(SshUnreachable) as caught:
            await conn.run("true", timeout=60)
        took = time.monotonic() - started
    finally:
        host.exec("nft", "delete table inet fault")
    assert str(caught.value) == f"host {host.ip}: no answer within 3 s"
    assert 3.0 <= took < DETECT_WITHIN_S
    assert (await conn.run("hostname", timeout=30)).stdout == f"{host.name}\n"


async def test_a_killed_sshd_spares_the_open_session_and_refuses_new_ones(
    connect: Callable[[SshTarget], SshConnection],
) -> None:
    with ssh_hosts(1) as bed:
        host = bed.host(1)
        open_conn = connect(target(bed, host))
        assert (await open_conn.run("true", timeout=10)).exit_status == 0
        host.kill_sshd_listener()

        assert (await open_conn.run("hostname", timeout=10)).stdout == f"{host.name}\n"
        fresh = connect(target(bed, host))
        with pytest.raises(SshUnreachable) as caught:
            await fresh.run("true", timeout=10)
        assert str(caught.value) == (
            f"host {host.ip}: connection refused on port 22 (is sshd running?)"
        )
        await open_conn.close()  # sessions end before the bed goes, as on a real host


async def test_hosts_behind_one_jump_host_share_its_connection_and_a_dead_jump_is_named(
    hosts: SshBed,
) -> None:
    from tests.sshbed import INNER_PORT

    bastion = hosts.hosts[0]
    jump = SshConnection(target(hosts, bastion), FAST)
    behind = SshTarget("127.0.0.1", INNER_PORT, "root", str(hosts.key), jump=target(hosts, bastion))
    first = SshConnection(behind, FAST, via=jump)
    second = SshConnection(behind, FAST, via=jump)
    try:
        for conn in (first, second):
            assert (await conn.run("hostname")).stdout.strip() == bastion.name
        assert jump.connects == 1
        assert bastion.established_ssh_connections() == 1  # both tunnels ride the one connection
        await first.close()
        await second.close()
        bastion.link_down()
        try:
            lone = SshConnection(behind, FAST)  # a private jump connection, closed with it
            with pytest.raises(SshUnreachable, match=rf"jump host {bastion.ip} is unusable"):
                await lone.run("true", timeout=10)
            await lone.close()
        finally:
            bastion.link_up()
    finally:
        await jump.close()
