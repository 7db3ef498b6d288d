"""A task file's bytes and text, read with the same limit and refused in the same words whoever
reads it: `load_task_file` in one process, or `stixctl` (which reads the bytes where the user
typed the path) and the daemon (which reads the task from them, `stixproto.messages.ReadTask`).

Light on purpose: the client imports it with every `launch`, `exec` and `jobs launch`.
"""

from __future__ import annotations

from pathlib import Path

from stixproto.bounds import MAX_YAML_CHARS
from stixproto.errors import InvalidTask


def read_bytes(path: str | Path) -> bytes:
    """The first `MAX_YAML_CHARS` + 1 bytes of the file: enough to tell one that is too long
    (`/dev/zero` is refused, not read forever)."""
    try:
        with open(path, "rb") as f:
            return f.read(MAX_YAML_CHARS + 1)
    except OSError as exc:
        raise unreadable(path, exc) from None


def text_of(data: bytes, source: str) -> str:
    """The text of a task file's bytes (`read_bytes`), or `InvalidTask` naming `source`."""
    from stixproto import user_yaml

    try:
        return user_yaml.text_of(data)
    except UnicodeDecodeError as exc:
        raise unreadable(source, exc) from None
    except user_yaml.YamlError as exc:
        raise InvalidTask(f"{source}: {exc}") from None


def unreadable(path: str | Path, exc: OSError | UnicodeDecodeError) -> InvalidTask:
    reason = getattr(exc, "strerror", None) or str(exc)
    return InvalidTask(f"{path}: cannot read the task file: {reason}")
