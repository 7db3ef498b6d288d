"""What a sync of a workdir or file-mount directory leaves out: SkyPilot's rule, said once.

If the source directory has a ``.skyignore`` at its top, the ``.skyignore`` files decide (that
one and any in subdirectories); otherwise the ``.gitignore`` files do (top and nested), with
the repository's ``.git/info/exclude`` below them, as SkyPilot's rsync does. Patterns follow
git's rules: ``#`` comments, a leading or middle ``/`` anchors to the file's directory,
``*``/``?``/``[...]`` stay inside one path part, ``**`` spans parts, a trailing ``/`` matches
directories only, ``!`` re-includes, a deeper file overrides a shallower one and a later line an
earlier one, and nothing under an excluded directory comes back.

Every sync asks this module: the local copy and SFTP walk with `SyncFilter.keeps`, rsync gets
the same decisions as an explicit exclude list (`rsync_exclude_list`), so every infra sends the
same files. A destination path the rules exclude is left alone, never deleted (rsync's rule):
a job's outputs in an ignored folder survive the next sync.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

__all__ = [
    "GITIGNORE",
    "GIT_EXCLUDE",
    "SKYIGNORE",
    "RsyncPlan",
    "SyncFilter",
    "rsync_exclude_list",
    "rsync_plan",
]

SKYIGNORE = ".skyignore"
GITIGNORE = ".gitignore"
GIT_EXCLUDE = ".git/info/exclude"
_MAX_IGNORE_BYTES = 1 << 20  # an ignore file past 1 MiB is read up to here


class _Rule(NamedTuple):
    regex: re.Pattern[str]
    negate: bool
    dir_only: bool

    def matches(self, rel: str, is_dir: bool) -> bool:
        return (is_dir or not self.dir_only) and self.regex.fullmatch(rel) is not None


def _class(pattern: str, i: int) -> tuple[str, int] | None:
    """The regex of the ``[...]`` starting at ``pattern[i]`` and the index past it, or None
    when it never closes (the ``[`` is then a plain character, as in git)."""
    j = i + 1
    negate = j < len(pattern) and pattern[j] in "!^"
    if negate:
        j += 1
    start = j
    if j < len(pattern) and pattern[j] == "]":
        j += 1  # a ']' first is a member, not the end
    while j < len(pattern) and pattern[j] != "]":
        j += 2 if pattern[j] == "\\" else 1
    if j >= len(pattern):
        return None
    body = ""
    k = start
    while k < j:
        ch = pattern[k]
        if ch == "\\" and k + 1 < j:
            k += 1
            ch = pattern[k]
            body += re.escape(ch)
        elif ch == "-":
            body += "-"
        else:
            body += re.escape(ch) if ch in "\\[]^" else ch
        k += 1
    return f"(?!/)[{'^' if negate else ''}{body}]", j + 1


def _part(text: str) -> str:
    """The regex of one path part (no ``/``): ``*``, ``?``, classes and backslash escapes."""
    out = ""
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "*":
            while i + 1 < len(text) and text[i + 1] == "*":
                i += 1  # '**' inside a part is a plain '*'
            out += "[^/]*"
        elif ch == "?":
            out += "[^/]"
        elif ch == "[" and (cls := _class(text, i)) is not None:
            out += cls[0]
            i = cls[1]
            continue
        elif ch == "\\" and i + 1 < len(text):
            i += 1
            out += re.escape(text[i])
        else:
            out += re.escape(ch)
        i += 1
    return out


def compile_line(line: str) -> _Rule | None:
    """One line of an ignore file as a rule; None for blanks and comments."""
    if not line or line.startswith("#"):
        return None
    while line.endswith(" ") and not line.endswith("\\ "):
        line = line[:-1]  # trailing spaces go unless escaped
    negate = line.startswith("!")
    if negate:
        line = line[1:]
    dir_only = line.endswith("/")
    if dir_only:
        line = line[:-1]
    if not line:
        return None
    anchored = "/" in line
    parts = (line[1:] if line.startswith("/") else line).split("/")
    regex = ""
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if len(part) >= 2 and part.strip("*") == "":  # '**' (or more) as a whole part
            regex += ".*" if last else "(?:.*/)?"
        else:
            regex += _part(part) + ("" if last else "/")
    if not anchored:
        regex = "(?:.*/)?" + regex
    return _Rule(re.compile(regex, re.DOTALL), negate, dir_only)


def _read_rules(path: Path) -> list[_Rule]:
    try:
        with path.open("rb") as f:
            text = f.read(_MAX_IGNORE_BYTES).decode("utf-8", errors="replace")
    except OSError:  # absent, a directory, unreadable: no rules from it
        return []
    rules = (compile_line(line.rstrip("\r")) for line in text.split("\n"))
    return [r for r in rules if r is not None]


class SyncFilter:
    """The exclusion rules of one source directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ignore_file = SKYIGNORE if (root / SKYIGNORE).is_file() else GITIGNORE
        self._rules: dict[str, list[_Rule]] = {}
        self._base = _read_rules(root / GIT_EXCLUDE) if self.ignore_file == GITIGNORE else []

    def _rules_of(self, directory: str) -> list[_Rule]:
        """The rules of the ignore file in ``directory`` (relative, ``""`` for the top)."""
        if directory not in self._rules:
            self._rules[directory] = _read_rules(self.root / directory / self.ignore_file)
        return self._rules[directory]

    def _verdict(self, rel: str, is_dir: bool) -> bool:
        """Whether the rules exclude ``rel`` itself (its parent directories aside)."""
        parts = rel.split("/")
        for depth in range(len(parts) - 1, -1, -1):
            directory = "/".join(parts[:depth])
            below = "/".join(parts[depth:])
            for rule in reversed(self._rules_of(directory)):
                if rule.matches(below, is_dir):
                    return not rule.negate
        for rule in reversed(self._base):
            if rule.matches(rel, is_dir):
                return not rule.negate
        return False

    def keeps(self, rel: str, is_dir: bool) -> bool:
        """Whether ``rel`` is sent, given that its parent directory is (a walk from the top
        asks in that order and does not descend into what it drops)."""
        return not self._verdict(rel, is_dir)

    def excludes(self, rel: str, is_dir: bool) -> bool:
        """Whether ``rel`` (a path relative to the root, maybe only at the destination) is
        excluded, by its own rule or by an excluded parent directory."""
        parts = rel.split("/")
        for depth in range(1, len(parts)):
            if self._verdict("/".join(parts[:depth]), True):
                return True
        return self._verdict(rel, is_dir)

    def walk(self) -> Iterator[tuple[str, bool, bool]]:
        """``(relative path, is a real directory, kept)`` of every entry the sync looks at,
        top-down; a dropped directory is reported once and not entered."""
        for current, dirs, files in os.walk(self.root):
            rel_dir = os.path.relpath(current, self.root)
            prefix = "" if rel_dir == "." else rel_dir.replace(os.sep, "/") + "/"
            entered = []
            for name in sorted(dirs):
                real_dir = not os.path.islink(os.path.join(current, name))
                kept = self.keeps(prefix + name, real_dir)
                yield prefix + name, real_dir, kept
                if kept and real_dir:
                    entered.append(name)
            dirs[:] = entered
            for name in sorted(files):
                yield prefix + name, False, self.keeps(prefix + name, False)


def _rsync_literal(rel: str) -> str:
    """An rsync pattern matching exactly ``/rel``: rsync reads backslashes as escapes only in
    a pattern holding a wildcard, so a name with one gets every special character escaped. A
    line break cannot be in a pattern line: it becomes ``?`` (any one character)."""
    breaks = "\n" in rel or "\r" in rel
    if breaks or any(c in rel for c in "*?["):
        rel = re.sub(r"([*?\[\\])", r"\\\1", rel)
        rel = rel.replace("\n", "?").replace("\r", "?")
    return "/" + rel


class RsyncPlan(NamedTuple):
    """What one walk of a source tells an rsync of it."""

    exclude: bytes
    """The entries the rules drop, one anchored pattern a line (`rsync_exclude_list`)."""
    ignore_name: str
    """The name of the ignore files that decide (`SyncFilter.ignore_file`)."""
    ignore_files: dict[str, tuple[int, int]]
    """Each ignore file that is sent: relative path →
    (size, mtime in ns); (-1, -1) when it is not a regular file."""


def rsync_plan(root: Path) -> RsyncPlan:
    """The exclude list and the ignore files sent, in one walk of ``root``."""
    rules = SyncFilter(root)
    dropped: list[str] = []
    ignore_files: dict[str, tuple[int, int]] = {}
    for rel, _, kept in rules.walk():
        if not kept:
            dropped.append(_rsync_literal(rel))
        elif rel.rsplit("/", 1)[-1] == rules.ignore_file:
            st = (root / rel).lstat()
            regular = stat.S_ISREG(st.st_mode)
            ignore_files[rel] = (st.st_size, st.st_mtime_ns) if regular else (-1, -1)
    exclude = b"".join(p.encode("utf-8", "surrogateescape") + b"\n" for p in dropped)
    return RsyncPlan(exclude, rules.ignore_file, ignore_files)


def rsync_exclude_list(root: Path) -> bytes:
    """The entries of ``root`` the rules drop, one anchored rsync pattern a line (for
    ``--exclude-from``; not ``--from0``, which would also split the ignore files rsync reads
    for the receiving side at NULs), so rsync sends exactly what the local copy sends."""
    return rsync_plan(root).exclude
