"""rclone and fuse3 on a node whose task mounts a bucket (MOUNT, MOUNT_CACHED), before its agent
is asked to mount (``stixd/agent/mount.py``).

A launch whose task mounts a bucket carries ``resources["fuse"]`` (``FUSE_RESOURCE``). A provider
that reaches its nodes with a shell (SSH, a pod's exec) then calls ``ensure_fuse_tools`` once the
agent is up: it reads what the node lacks (rclone; fusermount3 or fusermount; /dev/fuse) and
whether it can install packages (root, or ``sudo -n`` works, and apt-get or dnf is there), and
installs the missing packages when the provider allows it and the node can, as SkyPilot installs
its own dependencies on a node with passwordless sudo. Otherwise it changes nothing and the
agent's mount fails with its one sentence (``stixd.agent.mount.INSTALL``). /dev/fuse is no
package: a node without it (a container without the device) is reported, never fixed.

Who allows it: an SSH pool unless it says ``install_packages: false`` (the user's own machines);
an AWS instance always (stix made it, its ``ubuntu`` login has passwordless sudo).
"""

from __future__ import annotations

import dataclasses

from stixd.agent.mount import INSTALL
from stixd.providers.shared.bootstrap import AgentHost, BootstrapError
from stixd.providers.shared.ssh_transport import quote

FUSE_RESOURCE = "fuse"
"""Key of a provision request's resources: True when the task mounts a bucket."""
INSTALL_WITHIN_S = 600.0
"""A package install on a slow mirror; an ``apt-get update`` first when the lists are stale."""
PACKAGE_OF = {"rclone": "rclone", "fusermount3": "fuse3"}
"""What the node lacks → the package that brings it (the same name in Debian, Ubuntu, Fedora)."""
MANAGERS = ("apt-get", "dnf", "yum")

PROBE = """\
m=
command -v rclone >/dev/null 2>&1 || m="$m rclone"
command -v fusermount3 >/dev/null 2>&1 || command -v fusermount >/dev/null 2>&1 \
  || m="$m fusermount3"
[ -e /dev/fuse ] || m="$m /dev/fuse"
[ -n "$m" ] || exit 0
for x in $m; do echo "missing=$x"; done
printf 'uid=%s\\n' "$(id -u)"
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
  echo sudo=yes
fi
for x in apt-get dnf yum; do
  if command -v "$x" >/dev/null 2>&1; then echo "manager=$x"; break; fi
done
"""
"""Prints what is missing; only then whether the login may install (no sudo attempt, and no
line in the node's auth log, when nothing is missing)."""


@dataclasses.dataclass(frozen=True)
class FuseFacts:
    """What a node has for a FUSE mount, as ``PROBE`` prints it."""

    missing: tuple[str, ...]
    """Of ``rclone``, ``fusermount3``, ``/dev/fuse``."""
    root: bool
    sudo: bool
    """Not root, but ``sudo -n`` runs without a password."""
    manager: str | None
    """The first of ``MANAGERS`` on the node's PATH."""


def parse_facts(out: str) -> FuseFacts:
    lines = [line.split("=", 1) for line in out.splitlines() if "=" in line]
    missing = tuple(v.strip() for k, v in lines if k == "missing")
    facts = {k: v.strip() for k, v in lines if k != "missing"}
    manager = facts.get("manager")
    return FuseFacts(
        missing=missing,
        root=facts.get("uid") == "0",
        sudo=facts.get("sudo") == "yes",
        manager=manager if manager in MANAGERS else None,
    )


def install_command(facts: FuseFacts, *, allowed: bool) -> str | None:
    """The shell command that installs what ``facts`` lacks, or None when stix leaves the node
    as it is: nothing a package brings is missing, installing is not allowed, the login is
    neither root nor a passwordless sudoer, or no package manager stix knows is there."""
    packages = [PACKAGE_OF[m] for m in facts.missing if m in PACKAGE_OF]
    if not packages or not allowed or facts.manager is None:
        return None
    if not (facts.root or facts.sudo):
        return None
    sudo = "" if facts.root else "sudo -n "
    names = " ".join(quote(p) for p in packages)
    if facts.manager == "apt-get":
        apt = f"{sudo}env DEBIAN_FRONTEND=noninteractive apt-get install -y -q {names}"
        update = f"{sudo}env DEBIAN_FRONTEND=noninteractive apt-get update -q"
        return f"{apt} || {{ {update} && {apt}; }}"  # stale package lists: refresh once
    return f"{sudo}{facts.manager} install -y -q {names}"


async def ensure_fuse_tools(conn: AgentHost, *, allowed: bool) -> str | None:
    """Install rclone and fuse3 on the host of ``conn`` when it lacks them and may (see the
    module); the command that ran, or None when none did. An install that fails is a
    ``BootstrapError`` in one sentence."""
    status, out, err = await conn.run(PROBE, timeout=30)
    if status != 0:
        return None  # the agent's mount says what is missing, in its own words
    command = install_command(parse_facts(out), allowed=allowed)
    if command is None:
        return None
    status, out, err = await conn.run(command, timeout=INSTALL_WITHIN_S)
    if status != 0:
        lines = [line.strip() for line in (err or out).splitlines() if line.strip()]
        detail = (lines or [f"exit status {status}"])[-1][-200:]
        raise BootstrapError(
            conn.host,
            f"installing rclone and fuse3 for a bucket mount failed ({detail}); {INSTALL}",
            retryable=False,
        )
    return command
