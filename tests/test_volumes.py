"""`stixctl volumes` on the local infra: a real daemon, real agents and jobs, through stixctl."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from stixd.providers.abilities import VolumeMount
from stixd.providers.ssh.volumes import mount_script
from stixproto.errors import InvalidRequest, InvalidTask
from stixproto.task.envs import apply_env_overrides
from stixproto.task.load import task_of_text
from stixproto.volumes import VolumeConfig
from tests.conftest import Stix, kill_everything_under, wait_until

VOLUME = "name: {name}\ntype: k8s-hostpath\ninfra: local\n"
WRITE = """
volumes:
  /data: shared
run: |
  echo "written by $(id -u)" > ~/data/note
  mkdir -p ~/data/sub && echo deep > ~/data/sub/file
"""
READ = """
volumes:
  /in: shared
  /part:
    name: shared
    sub_path: sub
run: |
  cat ~/in/note ~/part/file
"""


@pytest.fixture(scope="module")
def stix() -> Iterator[Stix]:
    """One daemon for the module: each test uses names of its own."""
    home = Path(tempfile.mkdtemp(prefix="stxv", dir="/tmp"))
    s = Stix(home)
    s.env["STIX__DAEMON__HEALTH_CHECK_SECONDS"] = "1"  # a lost node is seen at once
    try:
        yield s
    finally:
        with contextlib.suppress(subprocess.TimeoutExpired):
            subprocess.run(
                [sys.executable, "-m", "stixctl", "daemon", "stop"],
                env=s.env,
                capture_output=True,
                timeout=30,
            )
        kill_everything_under(home)
        shutil.rmtree(home, ignore_errors=True)


def write(stix: Stix, name: str, text: str) -> str:
    path = stix.home / name
    path.write_text(text)
    return str(path)


def volumes(stix: Stix) -> dict[str, dict[str, object]]:
    return {v["name"]: v for v in stix.json("volumes", "ls")}


def test_a_volume_written_by_one_job_is_read_by_the_next_and_kept_while_in_use(
    stix: Stix,
) -> None:
    made = stix.run("volumes", "apply", write(stix, "v.yaml", VOLUME.format(name="shared")), "-y")
    assert made.returncode == 0, made.stderr
    folder = stix.home / "volumes" / "shared"
    assert folder.is_dir()
    assert volumes(stix)["shared"]["status"] == "READY"
    again = stix.run("volumes", "apply", str(stix.home / "v.yaml"), "-y", check=True)
    assert "already exists" in again.stdout

    stix.run("launch", "-c", "writer", "-y", write(stix, "w.yaml", WRITE), check=True)
    assert (folder / "note").read_text().startswith("written by ")
    shown = volumes(stix)["shared"]
    assert shown["status"] == "IN_USE" and shown["used_by"] == ["writer"]

    refused = stix.run("volumes", "delete", "shared", "-y")
    assert refused.returncode == 2
    assert "in use by cluster(s) writer" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert folder.is_dir()

    read = stix.run("launch", "-c", "reader", "-y", write(stix, "r.yaml", READ), check=True)
    assert "written by " in read.stdout and "deep" in read.stdout
    assert volumes(stix)["shared"]["used_by"] == ["writer", "reader"]

    stix.run("down", "writer", "reader", "-y", check=True)
    assert volumes(stix)["shared"]["status"] == "READY"
    stix.run("volumes", "delete", "shared", "-y", check=True)
    assert not folder.exists()
    assert "shared" not in volumes(stix)


def test_a_task_naming_a_volume_elsewhere_or_missing_fails_before_launching(stix: Stix) -> None:
    task = write(stix, "t.yaml", "volumes:\n  /data: ghost\nrun: echo never\n")
    missing = stix.run("launch", "-c", "nowhere", "-y", task)
    assert missing.returncode == 2
    assert "volume 'ghost' does not exist" in missing.stderr
    pvc = "name: claim\ntype: k8s-pvc\ninfra: k8s\nsize: 10Gi\n"
    stix.run("volumes", "apply", write(stix, "pvc.yaml", pvc), "-y")  # no Kubernetes here
    shown = volumes(stix)["claim"]
    assert shown["status"] == "NOT_READY" and shown["error"]
    Path(task).write_text("volumes:\n  /data: claim\nrun: echo never\n")
    elsewhere = stix.run("launch", "-c", "nowhere", "-y", task)
    assert elsewhere.returncode == 2
    assert "volume claim is on k8s but the task runs on local" in elsewhere.stderr
    assert "nowhere" not in stix.clusters()
    stix.run("volumes", "delete", "claim", "-y", check=True)


def test_the_sdk_applies_lists_and_deletes_volumes(stix: Stix) -> None:
    from stixctl.sdk import Client

    client = Client(stix.home)
    said = client.volumes_apply({"name": "bysdk", "type": "k8s-hostpath", "infra": "local"})
    assert "READY" in said
    assert [v.status for v in client.volumes_ls() if v.name == "bysdk"] == ["READY"]
    with pytest.raises(InvalidRequest, match=r"volume name '\.\./x' is not valid"):
        client.volumes_apply({"name": "../x", "type": "k8s-hostpath", "infra": "local"})
    assert "Deleted 1 volume(s)" in client.volumes_delete("bysdk")
    assert not (stix.home / "volumes" / "bysdk").exists()


def test_a_damaged_volume_row_is_listed_with_why_and_can_be_deleted(stix: Stix) -> None:
    import json
    import sqlite3

    stix.run(
        "volumes", "apply", write(stix, "d.yaml", VOLUME.format(name="hurt")), "-y", check=True
    )
    stix.run("daemon", "stop", check=True)
    bad = {"volume": {"name": "../../etc", "type": "k8s-hostpath", "infra": "local"}}
    with sqlite3.connect(stix.home / "state.db") as db:
        db.execute("UPDATE actors SET spec=? WHERE kind='volume' AND id='hurt'", (json.dumps(bad),))
    shown = volumes(stix)["hurt"]  # the daemon starts again
    assert shown["status"] == "NOT_READY" and "not valid" in str(shown["error"])
    gone = stix.run("volumes", "delete", "hurt", "-y", check=True)
    assert "quarantined" in gone.stderr + gone.stdout
    assert "hurt" not in volumes(stix)
    assert (stix.home / "volumes" / "hurt").is_dir()  # nothing was removed by the hostile spec
    shutil.rmtree(stix.home / "volumes" / "hurt")


RECOVERED = """
volumes:
  /data: kept
run: |
  echo "run of $SKYPILOT_TASK_ID" >> ~/data/runs
  if [ "$(wc -l < ~/data/runs)" -eq 1 ]; then sleep 300; fi
  echo "runs seen: $(wc -l < ~/data/runs)"
"""


def test_a_recovered_managed_job_sees_what_it_wrote_to_its_volume_before(stix: Stix) -> None:
    from tests.test_managed_jobs import kill_node

    stix.run(
        "volumes", "apply", write(stix, "k.yaml", VOLUME.format(name="kept")), "-y", check=True
    )
    runs = stix.home / "volumes" / "kept" / "runs"
    task = write(stix, "m.yaml", RECOVERED)
    stix.run("jobs", "launch", "-n", "keeper", "-d", "-y", task, check=True)
    wait_until(runs.exists, timeout=60)
    job = next(j for j in stix.json("jobs", "queue", "--all") if j["name"] == "keeper")
    cluster = f"keeper-{job['job_id']}"
    assert kill_node(stix, cluster) > 0  # a preemption: the job recovers on a new cluster
    refused = stix.run("volumes", "delete", "kept", "-y")  # the job holds it while recovering
    assert refused.returncode == 2 and cluster in refused.stderr

    def ended() -> bool:
        now = next(j for j in stix.json("jobs", "queue", "--all") if j["name"] == "keeper")
        return now["status"] in ("SUCCEEDED", "FAILED", "FAILED_SETUP", "CANCELLED")

    wait_until(ended, timeout=90, interval=0.5)
    job = next(j for j in stix.json("jobs", "queue", "--all") if j["name"] == "keeper")
    assert job["status"] == "SUCCEEDED" and job["recoveries"] == 1, job
    assert len(runs.read_text().splitlines()) == 2  # the second run read the first one's line
    logs = stix.run("jobs", "logs", str(job["job_id"]), "--no-follow", check=True)
    assert "runs seen: 2" in logs.stdout
    wait_until(lambda: volumes(stix)["kept"]["status"] == "READY", timeout=30)
    stix.run("volumes", "delete", "kept", "-y", check=True)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("name: ../up\ntype: k8s-hostpath\ninfra: local\n", "volume name '../up' is not valid"),
        ("name: a/b\ntype: k8s-hostpath\ninfra: local\n", "is not valid"),
        ("name: ok\ntype: nfs\ninfra: local\n", "type 'nfs' is not one of"),
        ("name: ok\ntype: k8s-pvc\ninfra: local\nsize: 1Gi\n", "lives on Kubernetes"),
        ("name: ok\ntype: k8s-pvc\n", "size is required"),
        ("name: ok\ntype: k8s-pvc\nsize: lots\n", "is not a size"),
        ("name: ok\ntype: k8s-pvc\nsize: 99999999Ti\n", "size must be from 1"),
        (
            "name: ok\ntype: k8s-hostpath\ninfra: local\nconfig:\n  host_path: /etc\n",
            "config.host_path is for Kubernetes nodes",
        ),
        ("name: ok\ntype: k8s-hostpath\ninfra: k8s\nconfig:\n  host_path: //\n", "root"),
        ("name: ok\ntype: k8s-pvc\nsize: 1\nconfig:\n  namespace: '../x'\n", "namespace"),
        ("name: ok\ntype: k8s-pvc\nsize: 1\nlabels:\n  'a b': c\n", "not a valid Kubernetes"),
        ("name: ok\ntype: k8s-pvc\nsize: 1\nsurprise: 1\n", "unknown field `surprise`"),
        ("name: 7\ntype: k8s-pvc\n", "Expected `str`, got `int`"),
        ("- a list\n", "a volume YAML is a map"),
        ("name: ok\ntype: runpod-network-volume\n", "not supported in this build yet"),
    ],
)
def test_hostile_volume_files_are_refused_in_one_line(stix: Stix, text: str, says: str) -> None:
    refused = stix.run("volumes", "apply", write(stix, "bad.yaml", text), "-y")
    assert refused.returncode == 2, refused.stdout
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], refused.stderr
    assert not (stix.home / "up").exists()


HOSTILE_SUB_PATHS = [
    "x;touch pwned",
    "$(touch pwned)",
    "`touch pwned`",
    "a b",
    "a\nb",
    "a/../..",
    "..",
    "a//b",
    "./a",
    "/etc",
    "a\0b",
    "x" * 256,
]


@pytest.mark.parametrize("sub_path", HOSTILE_SUB_PATHS)
def test_a_hostile_sub_path_is_refused_in_one_line_where_the_task_is_read(sub_path: str) -> None:
    import json

    text = f"volumes:\n  /data:\n    name: shared\n    sub_path: {json.dumps(sub_path)}\nrun: x\n"
    with pytest.raises(InvalidTask) as refused:
        task_of_text(text, "task.yaml")
    said = str(refused.value)
    assert "\n" not in said and "volumes./data.sub_path:" in said, said


@pytest.mark.parametrize(
    ("volumes", "says"),
    [
        ("  /data: 'a;b'\n", "volume name 'a;b' is not valid"),
        ("  /data:\n    name: '$(x)'\n", "volumes./data.name: volume name '$(x)'"),
        ('  "/da\\nta": shared\n', "holds a control character"),
    ],
)
def test_hostile_volume_names_and_mount_paths_are_refused_in_one_line(
    volumes: str, says: str
) -> None:
    with pytest.raises(InvalidTask) as refused:
        task_of_text(f"volumes:\n{volumes}run: x\n", "task.yaml")
    assert "\n" not in str(refused.value) and says in str(refused.value), str(refused.value)


def test_a_plain_sub_path_is_read() -> None:
    task = task_of_text(
        "volumes:\n  /data:\n    name: shared\n    sub_path: runs/v1.2_a-b\nrun: x\n", "t"
    )
    assert task.volumes == {"/data": {"name": "shared", "sub_path": "runs/v1.2_a-b"}}


def test_a_null_env_in_a_sub_path_waits_for_its_value_and_that_value_is_checked() -> None:
    text = "envs: {RUN: null}\nvolumes:\n  /d: {name: v, sub_path: runs/$RUN}\nrun: x\n"
    task = task_of_text(text, "t")  # set later by --env; checked then
    assert apply_env_overrides(task, {"RUN": "r1"}).volumes == {
        "/d": {"name": "v", "sub_path": "runs/r1"}
    }
    with pytest.raises(InvalidTask, match=r"volumes\./d\.sub_path: 'runs/\$\(id\)'"):
        apply_env_overrides(task, {"RUN": "$(id)"})


def test_the_ssh_mount_script_quotes_every_value_so_nothing_in_them_runs(tmp_path: Path) -> None:
    """Built past the task check (a value that got by it), run by a shell under a temp HOME."""
    volume = VolumeConfig(name="shared", type="k8s-hostpath", infra="ssh/pool")
    sub_path = "x;touch pwned1 $(touch pwned2) `touch pwned3` a\nb/c d"
    dest = str(tmp_path / "mnt;touch pwned4 $(touch pwned5)")
    script = mount_script(VolumeMount(volume, "/data", sub_path), dest)
    done = subprocess.run(
        ["sh", "-c", script],
        cwd=tmp_path,
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    ran = {"pwned1", "pwned2", "pwned3", "pwned4", "pwned5"} & {p.name for p in tmp_path.rglob("*")}
    assert not ran, f"commands ran: {sorted(ran)}"
    made = tmp_path / ".stix/volumes/shared" / sub_path
    assert made.is_dir() and Path(dest).resolve() == made.resolve()


def test_over_http_each_user_sees_and_deletes_only_their_own_volumes(stix: Stix) -> None:
    from tests.test_http_api import Remote, make_token, serve_http

    url = serve_http(stix)
    alice = Remote(stix, url, make_token(stix, "alice", "user"))
    carol = Remote(stix, url, make_token(stix, "carol", "user"))
    viewer = Remote(stix, url, make_token(stix, "vic", "viewer"))
    spec = write(stix, "a.yaml", VOLUME.format(name="alices"))
    made = alice.run("volumes", "apply", spec, "-y")
    assert made.returncode == 0, made.stderr
    assert "alices" in alice.run("volumes", "ls", check=True).stdout
    assert "alices" not in carol.run("volumes", "ls", check=True).stdout
    assert "alice" in carol.run("volumes", "ls", "-u", check=True).stdout
    refused = carol.run("volumes", "delete", "alices", "-y")
    assert refused.returncode != 0 and "belongs to alice" in refused.stderr
    uses = "volumes:\n  /x: alices\nrun: echo carol > /x/n\n"
    borrow = write(stix, "c.yaml", uses)
    served = write(stix, "s.yaml", f"service: {{readiness_probe: /, ports: 8080}}\n{uses}")
    pooled = write(stix, "p.yaml", f"name: carolp\npool: {{workers: 1}}\n{uses}")
    for how, task in (  # mounting it: alice's too, by any road
        (("launch", "-c", "carols"), borrow),
        (("jobs", "launch"), borrow),
        (("serve", "up"), served),
        (("jobs", "pool", "apply"), pooled),
    ):
        used = carol.run(*how, task, "-y")
        assert used.returncode == 7 and "volume alices belongs to alice" in used.stderr
    read_only = viewer.run("volumes", "delete", "alices", "-y")
    assert read_only.returncode != 0 and len(read_only.stderr.strip().splitlines()) == 1
    alice.run("volumes", "delete", "alices", "-y", check=True)
    assert "alices" not in volumes(stix)

    node_disk = "name: nodedisk\ntype: k8s-hostpath\ninfra: k8s\nconfig:\n  host_path: /var/lib\n"
    spec = write(stix, "h.yaml", node_disk)
    refused = alice.run("volumes", "apply", spec, "-y")  # a hostPath into pods: admins only
    assert refused.returncode == 7 and len(refused.stderr.strip().splitlines()) == 1
    assert "only an admin may make one" in refused.stderr
    everyones = {v["name"] for v in stix.json("volumes", "ls", "-u")}
    assert "nodedisk" not in everyones  # (an admin's is made: tests/test_volumes_kube.py)


EPHEMERAL = """
volumes:
  /scratch:
    size: 1Gi
    labels: {team: ml}
run: |
  echo "written by $(id -u)" > ~/scratch/note && cat ~/scratch/note
"""


def test_an_ephemeral_volume_is_made_for_its_cluster_written_and_removed_at_down(
    stix: Stix,
) -> None:
    from stixproto.volumes import ephemeral_name

    name = ephemeral_name("eph", "/scratch")
    folder = stix.home / "clusters" / "eph" / "volumes" / name
    ran = stix.run("launch", "-c", "eph", "-y", write(stix, "e.yaml", EPHEMERAL))
    assert ran.returncode == 0, ran.stderr
    assert "written by" in ran.stdout and (folder / "note").read_text().startswith("written by")
    shown = volumes(stix)[name]
    assert shown["is_ephemeral"] and shown["status"] == "IN_USE" and shown["used_by"] == ["eph"]
    assert "EPHEMERAL" in stix.run("volumes", "ls", check=True).stdout
    borrow = write(stix, "b.yaml", f"volumes:\n  /x: {name}\nrun: echo never\n")
    refused = stix.run("launch", "-c", "borrower", "-y", borrow)
    assert refused.returncode == 2 and "the ephemeral volume of cluster eph" in refused.stderr
    kept = stix.run("volumes", "delete", "-a", "-y", check=True)  # goes with its cluster only
    assert name in volumes(stix) and "No volumes" in kept.stdout
    stix.run("down", "eph", "-y", check=True)
    assert name not in volumes(stix) and not folder.exists()


def test_an_ephemeral_volume_recorded_but_whose_cluster_never_was_is_removed_at_restart(
    stix: Stix,
) -> None:
    """As a daemon killed with SIGKILL after writing the volume's row and making its folder,
    before its cluster's launch recorded anything: no leak once the daemon is back."""
    import json
    import sqlite3

    volume = {"name": "ghost-abc123", "type": "k8s-hostpath", "infra": "local"}
    folder = stix.home / "clusters" / "ghost" / "volumes" / "ghost-abc123"
    folder.mkdir(parents=True)
    stix.run("daemon", "stop", check=True)
    spec = json.dumps({"volume": volume, "cluster": "ghost"})
    with sqlite3.connect(stix.home / "state.db") as db:
        db.execute(
            "INSERT INTO actors (kind, id, state, version, spec, data, created_at, updated_at) "
            "VALUES ('volume', 'ghost-abc123', 'NOT_READY', 1, ?, '{}', 0, 0)",
            (spec,),
        )
    assert wait_until(lambda: "ghost-abc123" not in volumes(stix), timeout=20)
    assert not folder.exists()


@pytest.mark.parametrize("size", ["inf", "-1", "1e999Gi", "-1Gi", "1.5.5Gi", "0"])
def test_a_hostile_ephemeral_size_is_refused_in_one_line(size: str) -> None:
    text = f"volumes:\n  /scratch:\n    size: {size!r}\nrun: x\n"
    with pytest.raises(InvalidTask) as refused:
        task_of_text(text, "task.yaml")
    said = str(refused.value)
    assert "\n" not in said and "volumes./scratch.size:" in said, said
