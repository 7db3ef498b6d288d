"""Put local files on an SSH node: rsync when both sides have it, else incremental SFTP.

Both paths send only what changed (size and mtime), delete what is gone from the source, and
skip what the source's ``.skyignore`` / ``.gitignore`` files exclude, decided for both by
`stixd.providers.shared.syncfilter` (rsync gets its decisions as an exclude list), so SSH nodes get
the same files as local ones.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NamedTuple

import anyio

from stixd.providers.base import Mount, NodeInfo
from stixd.providers.shared.dests import resolve_dest
from stixd.providers.shared.lazy import lazy_module
from stixd.providers.shared.ssh_hosts import PoolHost
from stixd.providers.shared.ssh_transport import SshConnection, SshError, SshTimeout, quote
from stixd.providers.shared.syncfilter import RsyncPlan, SyncFilter, rsync_plan

if TYPE_CHECKING:
    import asyncssh
else:  # loaded by the first connection (stixd.providers.shared.ssh_transport)
    asyncssh = lazy_module("asyncssh")

Method = Literal["auto", "rsync", "sftp"]
SYNC_TIMEOUT_S = 600.0
_TRANSFERRED = re.compile(r"Number of (?:regular )?files transferred: ([\d,.]+)")


class Walks:
    """One walk of a source for every node syncing it at the same time. A launch syncs all its
    nodes at once, and each would walk the same tree for its exclude list (some 0.2 s per
    10,000 files, holding the GIL: a fifth of a no-change rsync to three nodes, per node); a
    sync that starts while a walk of its source runs takes that walk's plan. Nothing is kept
    once a walk ends, so the next sync walks the tree as it is then."""

    def __init__(self) -> None:
        self._running: dict[Path, tuple[anyio.Event, list[RsyncPlan]]] = {}

    async def plan(self, src: Path) -> RsyncPlan:
        running = self._running.get(src)
        if running is not None:
            done, result = running
            await done.wait()
            if result:
                return result[0]
            return await anyio.to_thread.run_sync(rsync_plan, src)  # that walk failed
        done, result = anyio.Event(), []
        self._running[src] = (done, result)
        try:
            result.append(await anyio.to_thread.run_sync(rsync_plan, src))
        finally:
            del self._running[src]
            done.set()
        return result[0]


async def sync(
    conn: SshConnection,
    host: PoolHost,
    node: NodeInfo,
    mounts: list[Mount],
    method: Method = "auto",
    walks: Walks | None = None,
) -> int:
    """Make each mount's destination a copy of its source; the number of files transferred.
    ``walks``: shared by the syncs of one provider, so concurrent ones walk a tree once."""
    if method == "auto":
        method = "rsync" if await _rsync_usable(conn, host) else "sftp"
    copied = 0
    for mount in mounts:
        src = Path(os.path.expanduser(mount.source))
        if not src.exists():
            raise FileNotFoundError(f"{mount.source} does not exist")
        dest = resolve_dest(node, mount.dest)
        parent = dest.rstrip("/").rsplit("/", 1)[0] or "/"
        made = await conn.run(f"mkdir -p {quote(parent)}", timeout=30)
        if made.exit_status != 0:
            raise SshError(conn.host, f"cannot create {parent}: {made.stderr.strip()[-200:]}")
        if method == "rsync":
            copied += await _rsync(conn, host, src, dest, walks or Walks())
        else:
            copied += await _sftp(conn, src, dest)
    return copied


async def _rsync_usable(conn: SshConnection, host: PoolHost) -> bool:
    if shutil.which("rsync") is None or not host.identity_file:
        return False  # a password cannot be handed to ssh without a helper such as sshpass
    result = await conn.run("command -v rsync", timeout=30)
    return result.exit_status == 0


def ssh_client_args(host: PoolHost) -> list[str]:
    """Options for the OpenSSH client to log in to a pool host with its key (rsync, shells),
    through the host's jump host or proxy command if it has one."""
    assert host.identity_file is not None
    trust = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
    route: list[str] = []
    if host.jump is not None:
        # ProxyJump would log in to the bastion with the default keys, not this one
        hop = quote(
            "ssh", "-i", host.identity_file, "-p", str(host.jump.port), *trust,
            "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
            "-W", "%h:%p", f"{host.jump.user}@{host.jump.host}",
        )  # fmt: skip
        route = ["-o", f"ProxyCommand={hop}"]
    elif host.proxy_command is not None:
        route = ["-o", f"ProxyCommand={host.proxy_command}"]
    return [
        "-i",
        host.identity_file,
        "-p",
        str(host.port),
        *trust,
        "-o",
        "LogLevel=ERROR",
        *route,
    ]


def rsync_filters(src: Path, exclude_from: Path) -> list[str]:
    """What is sent: exactly the filter's decisions (``exclude_from``, `rsync_exclude_list`).
    What the delete spares on the node: paths the same ignore files match there (``-r``:
    receiver-side rules), so a job's outputs in an ignored folder the source lacks survive, as
    on the local infra."""
    spared = SyncFilter(src).ignore_file
    return [f"--exclude-from={exclude_from}", f"--filter=dir-merge,-r {spared}"]


def rsync_argv(
    host: PoolHost,
    src: Path,
    dest: str,
    exclude_from: Path | None = None,
    *,
    delete_after: bool = True,
) -> list[str]:
    """``exclude_from``: a file of patterns (`rsync_exclude_list`). ``delete_after``: delete in
    a pass after the transfer, so the node's ignore files are the new ones when it runs; without
    it, rsync deletes as it goes (`_ignore_files_sent` says when that is the same)."""
    no_prompts = ["-o", "BatchMode=yes", "-o", "ConnectTimeout=10"]
    ssh = quote("ssh", *ssh_client_args(host), *no_prompts)
    filters = [] if exclude_from is None else rsync_filters(src, exclude_from)
    source = f"{src}/" if src.is_dir() else str(src)
    target = f"{dest.rstrip('/')}/" if src.is_dir() else dest
    return [
        "rsync",
        "-a",
        "--delete-after" if delete_after else "--delete",
        "--stats",
        *filters,
        "-e",
        ssh,
        source,
        f"{host.user}@{host.ip}:{target}",
    ]


async def _rsync(conn: SshConnection, host: PoolHost, src: Path, dest: str, walks: Walks) -> int:
    with tempfile.TemporaryDirectory(prefix="stix-rsync-") as tmp:
        exclude_from = None
        delete_after = False
        if src.is_dir():
            plan = await walks.plan(src)
            exclude_from = Path(tmp) / "exclude"
            exclude_from.write_bytes(plan.exclude)
            delete_after = await _ignore_files_sent(conn, dest, plan)
        argv = rsync_argv(host, src, dest, exclude_from, delete_after=delete_after)
        done = await _run_rsync(host, src, argv)
    out = done.stdout.decode(errors="replace")
    if done.returncode != 0:
        err = done.stderr.decode(errors="replace").strip()[-300:]
        raise SshError(host.key, f"rsync of {src} to {dest} failed ({done.returncode}): {err}")
    found = _TRANSFERRED.search(out)
    return int(re.sub(r"[,.]", "", found.group(1))) if found else 0


async def _ignore_files_sent(conn: SshConnection, dest: str, plan: RsyncPlan) -> bool:
    """Whether this rsync may send an ignore file the node's delete must already obey: one the
    node lacks, or has with another size or mtime (what rsync's quick check compares, here to
    the nanosecond). Only then is ``--delete-after`` needed, whose extra pass over the node's
    tree reading its per-directory ignore files costs rsync 3.4+ a path walk per file (about
    three times a no-change sync of 10,000 files); otherwise deleting as it goes sees the same
    ignore files. A node that cannot be asked gets the safe answer: yes."""
    if not plan.ignore_files:
        return False  # no ignore file arrives; the node's own ones stay as they are
    name = quote(plan.ignore_name)
    command = (
        f"test -d {quote(dest)} || exit 3; "
        f"find -H {quote(dest)} -type f -name {name} -printf '%s\\t%T@\\t%P\\0'"
    )
    try:
        result = await conn.run(command, timeout=60)
    except SshError:
        return True
    if result.exit_status == 3:
        return False  # nothing on the node to delete
    if result.exit_status != 0:
        return True
    there: dict[str, tuple[int, int]] = {}
    for record in result.stdout.split("\0"):
        fields = record.split("\t", 2)
        if len(fields) == 3 and (ns := _ns(fields[1])) is not None and fields[0].isdigit():
            there[fields[2]] = (int(fields[0]), ns)
    return any(there.get(rel) != seen for rel, seen in plan.ignore_files.items())


def _ns(stamp: str) -> int | None:
    """``find``'s ``%T@`` (seconds, a fraction of up to 10 digits) in nanoseconds; None for
    what it is not (or a time before 1970: compared as different)."""
    whole, _, frac = stamp.partition(".")
    if not whole.isdigit() or (frac and not frac.isdigit()):
        return None
    return int(whole) * 1_000_000_000 + int((frac + "000000000")[:9])


async def _run_rsync(
    host: PoolHost, src: Path, argv: list[str]
) -> subprocess.CompletedProcess[bytes]:
    try:
        with anyio.fail_after(SYNC_TIMEOUT_S):
            return await anyio.run_process(argv, check=False)
    except TimeoutError:
        raise SshTimeout(host.key, f"rsync of {src} took over {SYNC_TIMEOUT_S:g} s") from None


# -- SFTP --------------------------------------------------------------------------------


class _Entry(NamedTuple):
    kind: str
    """``f`` file, ``d`` directory, ``l`` symlink (as ``find -printf %y`` says)."""
    size: int
    mtime: int
    link: str = ""


def local_tree(src: Path) -> dict[str, _Entry]:
    """Relative path → entry of everything under ``src`` that is not ignored."""
    tree: dict[str, _Entry] = {}
    for rel, real_dir, kept in SyncFilter(src).walk():
        if not kept:
            continue
        path = src / rel
        if path.is_symlink():
            tree[rel] = _Entry("l", 0, 0, os.readlink(path))
        elif real_dir:
            tree[rel] = _Entry("d", 0, 0)
        else:
            tree[rel] = _Entry("f", path.lstat().st_size, int(path.lstat().st_mtime))
    return tree


async def remote_tree(conn: SshConnection, dest: str) -> dict[str, _Entry] | None:
    """The same listing of ``dest`` on the host; None when it is not a directory."""
    command = (
        f"test -d {quote(dest)} || exit 3; "
        f"find {quote(dest)} -mindepth 1 -printf '%y\\t%s\\t%T@\\t%l\\t%P\\0'"
    )
    result = await conn.run(command, timeout=120)
    if result.exit_status == 3:
        return None
    if result.exit_status != 0:
        raise SshError(conn.host, f"cannot list {dest}: {result.stderr.strip()[-200:]}")
    tree: dict[str, _Entry] = {}
    for record in result.stdout.split("\0"):
        if not record:
            continue
        kind, size, mtime, link, rel = record.split("\t", 4)
        tree[rel] = _Entry(kind, int(size), int(float(mtime)), link)
    return tree


def _same(a: _Entry, b: _Entry) -> bool:
    if a.kind != b.kind:
        return False
    if a.kind == "f":
        return a.size == b.size and a.mtime == b.mtime
    return a.link == b.link


def _stale(here: _Entry | None, there: _Entry) -> bool:
    """Whether the remote entry must go (a directory kept as a directory stays)."""
    if here is None:
        return True
    if here.kind == "d" and there.kind == "d":
        return False
    return not _same(here, there)


async def _sftp(conn: SshConnection, src: Path, dest: str) -> int:
    try:
        ssh = await conn.connection()
        async with ssh.start_sftp_client() as sftp:
            if not src.is_dir():
                st = src.stat()
                try:
                    attrs = await sftp.stat(dest)
                    if attrs.size == st.st_size and attrs.mtime == int(st.st_mtime):
                        return 0
                except asyncssh.SFTPNoSuchFile:
                    pass
                await sftp.put(str(src), dest, preserve=True)
                return 1
            ours = local_tree(src)
            rules = SyncFilter(src)
            theirs = await remote_tree(conn, dest)
            if theirs is None:
                await conn.run(f"rm -f {quote(dest)}", timeout=30)
                await sftp.makedirs(dest, exist_ok=True)
                theirs = {}
            gone = {
                rel
                for rel, there in theirs.items()
                if _stale(ours.get(rel), there) and not rules.excludes(rel, there.kind == "d")
            }
            if gone:
                paths = [f"{dest}/{rel}" for rel in sorted(gone)]
                await conn.run(f"rm -rf -- {quote(*paths)}", timeout=120)
            copied = 0
            for rel, entry in ours.items():  # os.walk order: a directory before its contents
                there = theirs.get(rel)
                if there is not None and rel not in gone:
                    continue
                target = f"{dest}/{rel}"
                if entry.kind == "d":
                    await sftp.makedirs(target, exist_ok=True)
                elif entry.kind == "l":
                    await sftp.symlink(entry.link, target)
                    copied += 1
                else:
                    await sftp.put(str(src / rel), target, preserve=True)
                    copied += 1
            return copied
    except asyncssh.SFTPError as exc:
        raise SshError(conn.host, f"cannot copy {src} to {dest}: {exc.reason}") from None
    except (asyncssh.Error, BrokenPipeError, ConnectionResetError) as exc:
        raise SshError(conn.host, f"the SSH connection broke while copying {src}: {exc}") from None
