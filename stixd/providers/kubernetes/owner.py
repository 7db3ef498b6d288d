"""The id of this stix home that every object it makes in Kubernetes carries, in its name and
in the ``stix-owner`` label: two users, two homes or two daemons that give a cluster the same
name in one namespace then make different pods, and each lists, deletes and counts as leaks
only its own (as SkyPilot's user hash in its names on the cloud).

Made once, at random, and kept in ``<stix home>/kubernetes/owner``: a retry after a crash,
or a restarted daemon, finds the same names.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

from stixproto.errors import ProvisionError

FILE = "kubernetes/owner"
LENGTH = 8
_VALID = re.compile(f"[0-9a-f]{{{LENGTH}}}")


def owner_of(home: Path) -> str:
    """The home's owner id, made on first use (two makers at once agree on the first)."""
    path = home / FILE
    try:
        return _checked(path, path.read_text().strip())
    except FileNotFoundError:
        pass
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    made = secrets.token_hex(LENGTH // 2)
    partial = path.with_name(f"owner.{os.getpid()}.{made}.part")
    partial.write_text(made + "\n")
    try:
        os.link(partial, path)  # never replaces an id another maker wrote first
    except FileExistsError:
        pass
    finally:
        partial.unlink()
    return _checked(path, path.read_text().strip())


def _checked(path: Path, text: str) -> str:
    if not _VALID.fullmatch(text):
        raise ProvisionError(
            f"{path} should hold this stix home's Kubernetes owner id ({LENGTH} hex digits); "
            "restore it, or delete it to make a new one (pods made under the old id are then "
            "no longer found)"
        )
    return text
