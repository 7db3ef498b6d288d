"""The names a user gives to what stix makes, checked once for the CLI, the SDK and the socket.

A NEW cluster, managed job, pool, service or storage follows SkyPilot's rule
``[a-zA-Z]([-_.a-zA-Z0-9]*[a-zA-Z0-9])?`` (``sky/skylet/constants.py``,
``CLUSTER_NAME_VALID_REGEX``), with a length limit SkyPilot does not have:

- 63 characters: a Kubernetes label value holds at most 63 characters from exactly this
  alphabet (a letter or digit at each end), and so does a GCP label value or a DNS label; a
  name that fits there can be a tag or label on every cloud unchanged. AWS allows more (a tag
  value 256 characters, a security group name 255, stix's is ``stix-<name>``), and so does a
  file name (255 bytes, stix's node directories are ``<name>-<rank>``). SkyPilot instead
  truncates and hashes a name per cloud; stix keeps the name the user typed everywhere.
- 56 for pools and services: their workers and replicas are clusters named
  ``<name>-<index>``, which must fit in the 63 above (room for an index up to 999999).

A name that only REFERS to something that exists (``down``, ``status``, ``logs``, ``events``,
``jobs cancel -n`` ...) is checked more loosely (non-empty, at most 1024 characters, no NUL
byte), so that records made by earlier versions, which took any name, can still be listed and
removed.

Refusals are `InvalidRequest` (exit code 2), one line that states the rule. Raised from a
message's ``__post_init__``, msgspec lets it through decoding unchanged, so the daemon answers a
raw socket request with the same sentence as the CLI prints.
"""

from __future__ import annotations

import re

from stixproto.errors import InvalidRequest

NAME_PATTERN = r"[a-zA-Z]([-_.a-zA-Z0-9]*[a-zA-Z0-9])?"
MAX_NAME_LENGTH = 63
MAX_PARENT_NAME_LENGTH = 56
"""Pools and services: their members are clusters named ``<name>-<index>``."""
MAX_REFERENCE_LENGTH = 1024

_VALID = re.compile(NAME_PATTERN)
_LIMITS = {"pool": MAX_PARENT_NAME_LENGTH, "service": MAX_PARENT_NAME_LENGTH}
_SHOWN = 40


def rule(kind: str = "cluster") -> str:
    """The rule in words, for error messages and the README."""
    return (
        f"a {kind} name starts with a letter, ends with a letter or digit, has only letters, "
        f"digits, '-', '_' and '.' in between, and is at most {max_length(kind)} characters"
    )


def max_length(kind: str) -> int:
    return _LIMITS.get(kind, MAX_NAME_LENGTH)


def shown(name: str) -> str:
    """The name as an error message quotes it: escaped (one line whatever it holds), cut short."""
    text = repr(name if len(name) <= _SHOWN else name[:_SHOWN])
    return text if len(name) <= _SHOWN else f"{text}... ({len(name)} characters)"


def is_valid(name: str, kind: str = "cluster") -> bool:
    return len(name) <= max_length(kind) and _VALID.fullmatch(name) is not None


def check_new(name: str, kind: str = "cluster") -> str:
    """``name`` if a new ``kind`` may take it; else `InvalidRequest` stating the rule."""
    if not is_valid(name, kind):
        raise InvalidRequest(f"{kind} name {shown(name)} is not valid: {rule(kind)}")
    return name


def check_reference(name: str, kind: str = "cluster") -> str:
    """``name`` if it can name an existing ``kind``, even one an earlier version made."""
    if not name or len(name) > MAX_REFERENCE_LENGTH or "\0" in name:
        raise InvalidRequest(
            f"{kind} name {shown(name)} cannot name anything: a name is non-empty, at most "
            f"{MAX_REFERENCE_LENGTH} characters, with no NUL byte"
        )
    return name


ENV_NAME_RULE = "letters, digits and _, not starting with a digit"


def is_env_name(name: object) -> bool:
    """An environment variable name a shell can export: the rule for envs, secrets and --env."""
    if not isinstance(name, str) or not name or not name.isascii():
        return False
    return (name[0].isalpha() or name[0] == "_") and name.replace("_", "a").isalnum()


def command(*argv: object) -> str:
    """A ``stixctl`` command line to print as a hint, every argument shell-quoted, so a hint
    that carries a name can be pasted into a shell and does only what it says."""
    import shlex  # only hints need it; every command imports this module

    return shlex.join(["stixctl", *map(str, argv)])
