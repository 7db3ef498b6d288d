"""A `local` volume under a daemon that is not root: stixctl and the stixd it starts run as an
unprivileged uid (tests/as_user.py), so its jobs do too, and what one writes the next reads."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.as_user import UID, stix_as
from tests.conftest import Stix

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="only root can run stix as another uid")

WRITE = "volumes:\n  /data: mine\nrun: id -u > ~/data/uid\n"
READ = "volumes:\n  /in: mine\nrun: cat ~/in/uid\n"


@pytest.fixture(scope="module")
def stix() -> Iterator[Stix]:
    with stix_as(UID) as s:
        yield s


def put(stix: Stix, name: str, text: str) -> str:
    """A file of the user's in their stix home."""
    path = stix.home / name
    path.write_text(text)
    os.chown(path, UID, UID)
    return str(path)


def volume(stix: Stix, name: str, extra: str = "") -> str:
    return put(stix, f"{name}.yaml", f"name: {name}\ntype: k8s-hostpath\ninfra: local\n{extra}")


def test_a_non_root_daemons_job_writes_a_volume_the_next_job_reads(stix: Stix) -> None:
    stix.run("volumes", "apply", volume(stix, "mine"), "-y", check=True)
    folder = stix.home / "volumes" / "mine"
    assert folder.stat().st_uid == UID
    stix.run("launch", "-c", "writer", "-y", put(stix, "w.yaml", WRITE), check=True)
    written = folder / "uid"
    assert written.stat().st_uid == UID and written.read_text() == f"{UID}\n"
    read = stix.run("launch", "-c", "reader", "-y", put(stix, "r.yaml", READ), check=True)
    assert f"{UID}\n" in read.stdout
    stix.run("down", "writer", "reader", "-y", check=True)
    stix.run("volumes", "delete", "mine", "-y", check=True)
    assert not folder.exists()


def test_a_folder_the_non_root_daemon_cannot_make_or_write_is_refused_in_one_line(
    stix: Stix,
) -> None:
    """root's folders where the volumes would be: one in the way of a new volume, and one
    adopted with ``use_existing`` that the jobs could not write. Each ``apply`` says so in one
    line (the volume is NOT_READY with why), not a crash or a READY volume no job can use."""
    root = stix.home / "volumes"
    root.mkdir(mode=0o700, exist_ok=True)
    os.chown(root, UID, UID)
    for name in ("taken", "adopted"):
        (root / name).mkdir(mode=0o700)  # root's
    says = {
        "taken": f"volume taken: cannot make its folder {root / 'taken'} as uid {UID}",
        "adopted": f"its folder {root / 'adopted'} is not readable and writable by uid {UID}",
    }
    for name, extra in (("taken", ""), ("adopted", "use_existing: true\n")):
        refused = stix.run("volumes", "apply", volume(stix, name, extra), "-y")
        *_, said = refused.stderr.strip().splitlines()  # after stixctl's progress line
        assert refused.returncode != 0 and said.startswith("stixctl: volume "), refused.stderr
        assert says[name] in said and "internal error" not in said
    shown = {v["name"]: v for v in stix.json("volumes", "ls")}
    assert [shown[n]["status"] for n in says] == ["NOT_READY", "NOT_READY"]
    assert says["adopted"] in str(shown["adopted"]["error"])
    stix.run("volumes", "delete", "taken", "adopted", "-y", check=True)
    assert (root / "adopted").is_dir()  # adopted: never deleted
