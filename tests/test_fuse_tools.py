"""What a node gets for a bucket mount (stixd/providers/shared/fuse_tools.py), decided from what
the node lacks and who logs in: which install command would run, and when none does. The
install itself is not run in tests (a package install needs the network, which test hosts do
not have); the probe is run on real sshd hosts in tests/test_storage_ssh.py."""

from __future__ import annotations

import pytest

from stixd.providers.shared.fuse_tools import FuseFacts, install_command, parse_facts
from stixd.providers.ssh.pools import PoolError, parse_pools

APT = "env DEBIAN_FRONTEND=noninteractive apt-get"


def test_a_root_login_with_apt_installs_only_what_is_missing() -> None:
    facts = parse_facts("missing=rclone\nuid=0\nmanager=apt-get\n")
    assert facts == FuseFacts(missing=("rclone",), root=True, sudo=False, manager="apt-get")
    assert install_command(facts, allowed=True) == (
        f"{APT} install -y -q rclone || {{ {APT} update -q && {APT} install -y -q rclone; }}"
    )


def test_a_passwordless_sudoer_installs_through_sudo_without_a_prompt() -> None:
    facts = parse_facts("missing=rclone\nmissing=fusermount3\nuid=1000\nsudo=yes\nmanager=dnf\n")
    assert install_command(facts, allowed=True) == "sudo -n dnf install -y -q rclone fuse3"
    apt = parse_facts("missing=fusermount3\nuid=1000\nsudo=yes\nmanager=apt-get\n")
    command = install_command(apt, allowed=True)
    assert command is not None and command.startswith(f"sudo -n {APT} install -y -q fuse3 ||")
    assert "sudo -n env DEBIAN_FRONTEND=noninteractive apt-get update" in command


@pytest.mark.parametrize(
    ("probe", "allowed"),
    [
        ("", True),  # nothing missing: the probe prints nothing
        ("missing=rclone\nuid=1000\nmanager=apt-get\n", True),  # no sudo without a password
        ("missing=rclone\nuid=0\nmanager=apt-get\n", False),  # the pool says no
        ("missing=rclone\nuid=0\n", True),  # no package manager stix knows
        ("missing=rclone\nuid=0\nmanager=pacman\n", True),
        ("missing=/dev/fuse\nuid=0\nmanager=apt-get\n", True),  # a device is no package
    ],
)
def test_no_command_runs_when_the_node_cannot_or_may_not_install(probe: str, allowed: bool) -> None:
    assert install_command(parse_facts(probe), allowed=allowed) is None


def test_a_pool_may_forbid_installing_packages_and_says_so_in_one_line() -> None:
    pools = parse_pools({"a": {"hosts": ["h1"]}, "b": {"hosts": ["h2"], "install_packages": False}})
    assert pools["a"].install_packages and not pools["b"].install_packages
    with pytest.raises(PoolError) as caught:
        parse_pools({"c": {"hosts": ["h3"], "install_packages": "no"}})
    assert str(caught.value) == (
        "ssh_node_pools.yaml: pool c: install_packages: expected true or false, not 'no'"
    )
