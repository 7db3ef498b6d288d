"""The pod's half of a tree sync. Runs on the pod's python3 (3.7+), standard library only.

``list PATH`` prints, as one JSON object, what is at PATH: every entry below it (relative path,
kind ``f``/``d``/``l``, size, mtime in ns, a link's target), so the daemon sends only what
differs. ``apply ROOT`` reads from stdin one line with a byte count, that many bytes of a JSON
header (``remove``: paths to delete first; ``size``: the tar's byte count; ``times``: the mtime
in ns each sent path gets), then exactly ``size`` bytes of tar, unpacked below ROOT by the pod's
GNU tar when it has one (fed exactly those bytes, then its input closed), by ``tarfile``
otherwise. It never waits for an end of its own input: it reads what the header announced.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
from typing import Any, BinaryIO

MAX_HEADER = 64 * 1024 * 1024


def _kind(st: os.stat_result) -> str:
    if stat.S_ISLNK(st.st_mode):
        return "l"
    return "d" if stat.S_ISDIR(st.st_mode) else "f"


def _entry(rel: str, path: str, st: os.stat_result) -> list[Any]:
    kind = _kind(st)
    target = os.readlink(path) if kind == "l" else ""
    return [rel, kind, st.st_size, st.st_mtime_ns, target]


def listing(path: str) -> dict[str, Any]:
    try:
        top = os.lstat(path)
    except FileNotFoundError:
        return {"kind": "none", "entries": []}
    entries = [_entry("", path, top)]
    if entries[0][1] == "d":
        stack = [("", path)]
        while stack:
            rel_dir, real_dir = stack.pop()
            with os.scandir(real_dir) as found:
                for item in found:
                    rel = rel_dir + "/" + item.name if rel_dir else item.name
                    st = item.stat(follow_symlinks=False)
                    entries.append(_entry(rel, item.path, st))
                    if entries[-1][1] == "d":
                        stack.append((rel, item.path))
    return {"kind": entries[0][1], "entries": entries}


class Exactly:
    """At most ``size`` bytes of ``source``: the tar reader's end of input."""

    def __init__(self, source: BinaryIO, size: int) -> None:
        self.source = source
        self.left = size

    def read(self, size: int = -1) -> bytes:
        if size < 0 or size > self.left:
            size = self.left
        data = self.source.read(size) if size else b""
        if len(data) < size:
            raise EOFError("the tar stream ended early")
        self.left -= len(data)
        return data

    def drain(self) -> None:
        while self.left:
            self.read(min(self.left, 1 << 20))


def _inside(root: str, rel: str) -> str:
    parts = rel.split("/")
    if not rel or rel.startswith("/") or ".." in parts or "" in parts:
        raise ValueError(f"refusing path {rel!r}")
    return os.path.join(root, *parts)


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def _write(path: str, mode: int, data: BinaryIO | None) -> None:
    """A new file is written in place; one that exists is replaced whole (written beside, then
    renamed over it), so a reader never sees it half old, half new."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        partial = None
    except FileExistsError:
        partial = path + ".stix-part"
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "wb") as out:
        if data is not None:
            shutil.copyfileobj(data, out)
        os.fchmod(out.fileno(), mode)
    if partial is not None:
        try:
            os.replace(partial, path)
        except IsADirectoryError:
            _remove(path)
            os.replace(partial, path)


def gnu_tar() -> str | None:
    """The pod's GNU tar, which unpacks many small files several times faster than tarfile."""
    found = shutil.which("tar")
    if found is None:
        return None
    try:
        version = subprocess.run([found, "--version"], stdout=subprocess.PIPE, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return found if b"GNU tar" in version else None


def unpack_with(tar: str, root: str, body: Exactly) -> None:
    """Exactly the announced bytes into ``tar x``, whose own input then ends."""
    with tempfile.TemporaryFile() as errors:
        command = [tar, "-x", "-f", "-", "-C", root, "--no-same-owner"]
        proc = subprocess.Popen(command, stdin=subprocess.PIPE, stderr=errors)
        assert proc.stdin is not None
        try:
            while body.left:
                proc.stdin.write(body.read(min(body.left, 1 << 20)))
        except BrokenPipeError:
            pass  # tar stopped early: its status and message say why
        finally:
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.close()
        if proc.wait() != 0:
            errors.seek(0)
            lines = errors.read().decode(errors="replace").strip().splitlines()
            raise OSError(lines[-1] if lines else f"tar exited with status {proc.returncode}")


def apply(root: str, source: BinaryIO) -> int:
    header = json.loads(Exactly(source, min(int(source.readline()), MAX_HEADER)).read())
    if header.get("reset"):
        _remove(root)
    for rel in header.get("remove", []):
        _remove(_inside(root, rel))
    os.makedirs(root, exist_ok=True)
    times = header.get("times", {})
    body = Exactly(source, int(header["size"]))
    tar = gnu_tar()
    if tar is not None:
        unpack_with(tar, root, body)
        written = len(times)  # every file and link sent has its time
    else:
        written = unpack(root, body)
    for name, mtime in times.items():
        os.utime(_inside(root, name), ns=(mtime, mtime), follow_symlinks=False)
    body.drain()
    return written


def unpack(root: str, body: Exactly) -> int:
    """The tar unpacked by ``tarfile`` (no GNU tar in the pod); a file that exists is replaced
    whole."""
    written = 0
    folders = {root}
    with tarfile.open(fileobj=body, mode="r|") as tar:  # type: ignore[call-overload]
        for member in tar:
            path = _inside(root, member.name)
            if member.isdir():
                if not os.path.isdir(path) or os.path.islink(path):
                    _remove(path)
                    os.makedirs(path)
                os.chmod(path, member.mode & 0o7777)
                folders.add(path)
                continue
            folder = os.path.dirname(path)
            if folder not in folders:
                os.makedirs(folder, exist_ok=True)
                folders.add(folder)
            if member.issym():
                _remove(path)
                os.symlink(member.linkname, path)
            elif member.isfile():
                _write(path, member.mode & 0o7777, tar.extractfile(member))
            else:
                continue
            written += 1
    return written


def main() -> None:
    mode, path = sys.argv[2], os.path.expanduser(sys.argv[3])  # after the program's name
    if mode == "list":
        json.dump(listing(path), sys.stdout)
    elif mode == "apply":
        json.dump({"written": apply(path, sys.stdin.buffer)}, sys.stdout)
    else:
        sys.exit("usage: tarsync list|apply PATH")


if __name__ == "__main__":
    main()
