"""stix as an unprivileged user: stixctl (and so the daemon it starts, and the daemon's nodes
and jobs) run as uid ``UID`` with a stix home of that user's, as a user who is not root runs it.

The tests run as root, and this interpreter may live under ``/root`` (0700), which another uid
cannot traverse. Each stixctl therefore runs in a mount namespace of its own where ``/root``
is an empty tmpfs (0755) holding only the folders under it that Python and stix are read from
(bound from the real ones), then drops to ``UID`` (``setpriv``). The daemon stixctl starts
lives in that namespace; the namespace goes when its last process does, so nothing stays
mounted. Every process of the home is killed and every folder removed at the end.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import REPO, Stix, kill_everything_under, processes_mentioning, wait_until
from tests.sshbed import USER, USER_ID

UID = USER_ID
PRIVATE = Path("/root")


def _tops() -> list[str]:
    """The folders right under ``/root`` that this interpreter and stix are read from."""
    needed = [Path(sys.executable).resolve(), REPO, *(Path(p) for p in sys.path if p)]
    tops = set()
    for path in needed:
        if path.is_relative_to(PRIVATE) and path != PRIVATE:
            tops.add(path.relative_to(PRIVATE).parts[0])
    return sorted(tops)


def wrapper(mounts: Path, uid: int) -> list[str]:
    """The argv prefix running the rest of a command as ``uid`` (see the module's doc)."""
    drop = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
    tops = _tops()
    if not tops:
        return drop
    lines = ["set -e"]
    for i, top in enumerate(tops):
        real, spot = shlex.quote(str(PRIVATE / top)), shlex.quote(str(mounts / str(i)))
        lines.append(f"mkdir -p {spot} && mount --bind {real} {spot}")
    lines.append(f"mount -t tmpfs -o mode=0755 tmpfs {PRIVATE}")
    for i, top in enumerate(tops):
        real, spot = shlex.quote(str(PRIVATE / top)), shlex.quote(str(mounts / str(i)))
        lines.append(f"mkdir {real} && mount --bind {spot} {real}")
    lines.append('exec "$@"')
    script = "\n".join(lines)
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", *drop]


@contextlib.contextmanager
def stix_as(uid: int = UID) -> Iterator[Stix]:
    """A `Stix` whose stixctl (and daemon) run as ``uid``, its home a fresh folder of that
    user's under /tmp; at the end the daemon is stopped, every process of the home killed and
    every folder removed."""
    base = Path(tempfile.mkdtemp(prefix="stxu", dir="/tmp"))
    base.chmod(0o755)
    home, user_home = base / "stix", base / "home"
    for d in (home, user_home):
        d.mkdir(mode=0o700)
        os.chown(d, uid, uid)
    s = Stix(home)
    s.env |= {"HOME": str(user_home), "USER": USER, "LOGNAME": USER}
    s.argv = [*wrapper(base / "mnt", uid), sys.executable, "-m", "stixctl"]
    try:
        yield s
    finally:
        with contextlib.suppress(subprocess.TimeoutExpired):
            subprocess.run([*s.argv, "daemon", "stop"], env=s.env, capture_output=True, timeout=30)
        kill_everything_under(home)
        left = processes_mentioning(str(home))
        try:  # the namespaces went with their last processes: nothing of theirs is mounted
            wait_until(lambda: not _mounts_under(base), timeout=10)
        finally:
            shutil.rmtree(base, ignore_errors=True)
        assert left == [], f"processes of {home} outlived it: {left}"


def _mounts_under(base: Path) -> list[str]:
    """Processes whose mount namespace still mounts something under ``base``."""
    found = []
    for info in Path("/proc").glob("[0-9]*/mountinfo"):
        with contextlib.suppress(OSError):
            if f" {base}/" in info.read_text():
                found.append(info.parent.name)
    return found
