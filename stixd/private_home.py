"""The stix home is private: folders 0700, files open to their owner only, whatever the umask the
daemon was started with or the mode the home had before.

`keep_private` runs first thing in every `stixd` process: it sets the umask so that everything the
daemon and the processes it starts create (SQLite's -wal/-shm, logs, the socket, catalogs, the
agent zipapp, local node sandboxes) is 0600/0700, and it tightens what an earlier run or an
earlier version left wider. A home that belongs to another user is refused, not tightened.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

PRIVATE_UMASK = 0o077
JOB_UMASK_ENV = "STIX_JOB_UMASK"
"""The umask stixd was started with, in octal: what jobs on `local` run with (a job's own files
keep the user's habits; stix's files do not)."""


class HomeNotPrivate(Exception):
    """The home cannot be made private; the message says why and what to do."""


def keep_private(home: Path) -> None:
    """Set this process's umask to 077, then create or tighten `home` (see the module doc)."""
    started_with = os.umask(PRIVATE_UMASK)
    os.environ.setdefault(JOB_UMASK_ENV, f"{started_with:03o}")
    try:
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        info = home.stat()
    except OSError as exc:
        raise HomeNotPrivate(f"cannot create the stix home {home}: {exc.strerror}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise HomeNotPrivate(f"the stix home {home} is not a directory; set STIX_HOME to one")
    if info.st_uid != os.getuid():
        raise HomeNotPrivate(
            f"the stix home {home} belongs to uid {info.st_uid}, not to you (uid {os.getuid()}); "
            "stix keeps secrets there, so set STIX_HOME to a directory of your own"
        )
    if stat.S_IMODE(info.st_mode) & 0o077:
        tighten(home)  # an earlier version's home, or one made by hand: everything under it
    else:
        # already private: nothing below can be reached by others, so only stix's own files
        # at the top are looked at (every start walking a big synced workdir would be slow)
        for entry in [str(home), *(str(p) for p in home.iterdir())]:
            _tighten_one(entry)


def tighten(home: Path) -> None:
    """Take group and other bits off the home and everything under it that this user owns.

    Owner bits stay as they are, so a synced script in a local node's workdir keeps its `x`.
    """
    _tighten_one(str(home))
    for folder, dirs, files in os.walk(home, onerror=None):
        for name in dirs + files:
            _tighten_one(os.path.join(folder, name))


def _tighten_one(path: str) -> None:
    try:
        info = os.lstat(path)
    except OSError:
        return  # gone meanwhile (a job's file)
    if stat.S_ISLNK(info.st_mode) or info.st_uid != os.getuid():
        return  # a link's mode means nothing; another user's file (inside a 0700 home) is theirs
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        try:
            os.chmod(path, mode & 0o700)
        except OSError as exc:
            raise HomeNotPrivate(f"cannot make {path} private: {exc.strerror}") from None
