"""Volumes on local nodes: a folder under ``<home>/volumes`` named by the volume (one path
component, `child_path`), linked into each node's sandbox at the task's mount path.

Every local node is a sandbox of this machine, so one folder serves every node and every
cluster: what one job writes, the next reads. An ephemeral volume (made for one cluster) is a
folder under that cluster's own, ``<home>/clusters/<cluster>/volumes``, gone with it. The
folder belongs to the daemon's user, who runs the nodes' jobs, and is made writable by them
whatever the daemon's umask. That user need not be root: a folder it cannot make, or an adopted
(``use_existing``) one it cannot read and write, is refused in one line at ``apply``, not left
to a job that fails on it.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Sequence
from pathlib import Path

from stixd.providers.abilities import VolumeMount
from stixproto.errors import ProvisionError
from stixproto.paths import PathOutsideParent, child_path, path_under
from stixproto.volumes import VolumeConfig

FOLDER_MODE = 0o770
"""The job's user (the daemon's) reads and writes; the folder is under stix's private home."""


def folder(root: Path, volume: VolumeConfig) -> Path:
    return child_path(root, volume.name)


def make(root: Path, volume: VolumeConfig) -> str:
    """The volume's folder, made if missing (``use_existing``: it must be there). One line
    when the daemon's user cannot make it, or cannot read and write it."""
    d = folder(root, volume)
    if d.is_symlink():
        raise ProvisionError(f"volume {volume.name}: {d} is a symlink; stix will not follow it")
    if volume.use_existing:
        if not d.is_dir():
            raise ProvisionError(f"volume {volume.name} does not exist at {d} (use_existing)")
    else:
        try:
            root.mkdir(mode=0o700, parents=True, exist_ok=True)
            d.mkdir(mode=FOLDER_MODE, exist_ok=True)
            os.chmod(d, FOLDER_MODE)  # the umask must not leave the job's user unable to write
        except OSError as exc:
            raise ProvisionError(
                f"volume {volume.name}: cannot make its folder {d} as uid {os.getuid()}: "
                f"{exc.strerror or exc}"
            ) from None
    if not os.access(d, os.R_OK | os.W_OK | os.X_OK):
        raise ProvisionError(
            f"volume {volume.name}: its folder {d} is not readable and writable by uid "
            f"{os.getuid()}, who runs the jobs"
        )
    return str(d)


def remove(root: Path, volume: VolumeConfig) -> None:
    d = folder(root, volume)
    if volume.use_existing or d.is_symlink():
        return  # adopted, or not ours to follow
    shutil.rmtree(d, ignore_errors=True)


def mount(root: Path, dest: Path, m: VolumeMount) -> None:
    """Link ``dest`` (in a node's sandbox) to the volume's folder (or its ``sub_path``); an
    ephemeral volume's folder is made again if a failed launch's cleanup took it."""
    if m.cluster is not None:
        make(root, m.volume)
    source = folder(root, m.volume)
    if not source.is_dir() or source.is_symlink():
        raise ProvisionError(f"volume {m.volume.name} has no folder at {source}; apply it again")
    if m.sub_path:
        try:
            source = path_under(source, m.sub_path)
        except PathOutsideParent:
            raise ProvisionError(
                f"volumes: sub_path {m.sub_path[:40]!r} of volume {m.volume.name} leaves it"
            ) from None
        source.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        st = dest.lstat()
    except FileNotFoundError:
        st = None
    if st is not None:
        if stat.S_ISLNK(st.st_mode):
            dest.unlink()  # a relaunch: linked again (perhaps to another volume)
        elif stat.S_ISDIR(st.st_mode) and not any(dest.iterdir()):
            dest.rmdir()
        else:
            raise ProvisionError(
                f"volumes: {m.dest} already holds files on the node; mount the volume elsewhere"
            )
    os.symlink(source, dest, target_is_directory=True)


def mount_all(dests: Sequence[tuple[Path, Path, VolumeMount]]) -> None:
    """Each (volumes' root, dest, mount); one line for a folder or link the daemon's user
    cannot make."""
    for root, dest, m in dests:
        try:
            mount(root, dest, m)
        except OSError as exc:
            raise ProvisionError(
                f"volumes: cannot link volume {m.volume.name} at {m.dest} as uid "
                f"{os.getuid()}: {exc.strerror or exc}"
            ) from None
