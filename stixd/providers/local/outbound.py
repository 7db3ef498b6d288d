"""Local nodes in namespaces reach beyond this machine: IPv4 forwarding and a masquerade rule.

As Docker does for its bridge: the nodes' traffic leaves with the machine's address. The rule
lives in stix's own nftables table (``ip stix-<gateway link>``), or, with only `iptables` on the
machine, in rules that name the gateway link; both go with the last node. Forwarding stays on
once turned on (other software may have come to rely on it). Best effort: a machine with
neither tool still gets nodes that reach each other and this machine, only not beyond.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from pathlib import Path

_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


def _run(argv: list[str], stdin: str | None = None) -> bool:
    try:
        done = subprocess.run(
            argv, input=stdin, capture_output=True, text=True, check=False, timeout=30
        )
    except OSError:
        return False
    return done.returncode == 0


def _iptables_rules(subnet: str, link: str, *, nat: bool) -> list[list[str]]:
    """The rules for `iptables`: the masquerade (unless nftables has it), and the forwarding
    accepts a FORWARD DROP policy (Docker's) would otherwise refuse."""
    masquerade = ["-t nat", "POSTROUTING", "-s", subnet, "!", "-o", link, "-j", "MASQUERADE"]
    return [
        *([masquerade] if nat else []),
        ["-t filter", "FORWARD", "-i", link, "-j", "ACCEPT"],
        ["-t filter", "FORWARD", "-o", link, "-m", "conntrack", "--ctstate",
         "RELATED,ESTABLISHED", "-j", "ACCEPT"],
    ]  # fmt: skip


def _iptables(action: str, rule: list[str]) -> list[str]:
    table, chain, *match = rule
    return ["iptables", *table.split(), action, chain, *match]


def allow_outbound(subnet: str, link: str) -> bool:
    """Let the subnet's nodes out through this machine; False when no tool here could."""
    with contextlib.suppress(OSError):
        if _FORWARD.read_text().strip() != "1":
            _FORWARD.write_text("1\n")
    nft = shutil.which("nft") is not None
    done = False
    if nft:
        table = f"stix-{link}"
        script = (
            f"add table ip {table}\ndelete table ip {table}\n"
            f"table ip {table} {{\n chain postrouting {{\n"
            "  type nat hook postrouting priority srcnat; policy accept;\n"
            f'  ip saddr {subnet} oifname != "{link}" masquerade\n }}\n}}\n'
        )
        done = _run(["nft", "-f", "-"], script)
    if shutil.which("iptables"):
        rules = _iptables_rules(subnet, link, nat=not done)
        ok = [_run(_iptables("-C", r)) or _run(_iptables("-I", r)) for r in rules]
        done = done or all(ok)
    return done


def forbid_outbound(subnet: str, link: str) -> None:
    """Remove what `allow_outbound` added (idempotent)."""
    if shutil.which("nft"):
        _run(["nft", "delete", "table", "ip", f"stix-{link}"])
    if shutil.which("iptables"):
        for rule in _iptables_rules(subnet, link, nat=True):
            for _ in range(8):  # a rule added twice by racing daemons goes on the next pass
                if not _run(_iptables("-D", rule)):
                    break
