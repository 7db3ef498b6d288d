"""A bad row never stops the daemon (issue 12, must-hold 3).

One daemon home holds a real object of every actor kind per kind of damage, made through the
daemon, plus healthy ones beside them. The daemon is stopped, each damaged object gets garbage
in one column of its stored row (invalid JSON, JSON of the wrong shape, NaN and Infinity, huge
numbers, unknown states, NULL where the schema allows it, wrong types), and the daemon is
started once. Each damaged object must then be listed failed with the reason and the command
that removes it; that command must end its row; the healthy objects must keep working.

Every run checks one damage per kind (and the case seen in issue 12); the whole matrix, every
column of every kind, is marked slow (about a minute).
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest

from stixctl import render
from stixctl.client import call
from stixctl.jobs import render as render_managed
from stixproto import messages as m
from tests.conftest import Stix, kill_everything_under, wait_until

KINDS = ("cluster", "job", "managed_job", "job_pool")
# (column, SQL value, label): the same damage for every kind
DAMAGE: list[tuple[str, str, str]] = [
    ("state", "'NO_SUCH_STATE'", "unknown-state"),
    ("state", "x'00ff'", "state-bytes"),
    ("spec", "'not json at all'", "spec-invalid-json"),
    ("spec", "'[1, 2]'", "spec-wrong-shape"),
    ("spec", "'{\"a\": NaN}'", "spec-nan"),
    ("data", "'{\"a\": Infinity}'", "data-infinity"),
    ("data", "'{\"a\": 1e999}'", "data-huge-number"),
    ("data", "'{\"a\": '", "data-truncated"),
    ("version", "'abc'", "version-text"),
    ("version", str(2**63 - 1), "version-huge"),
    ("version", "-1", "version-negative"),
    ("parent", "'stranger'", "parent-stranger"),
    ("terminal", "'abc'", "terminal-text"),
    ("terminal", "2", "terminal-two"),
    ("created_at", "'yesterday'", "created-text"),
    ("updated_at", "1e300", "updated-huge"),
    ("created_at", "-5", "created-negative"),
    ("kind", "'no_such_kind'", "unknown-kind"),
]
# damage that means something only to one kind: a shape its actor cannot work with
SHAPES: dict[str, list[tuple[str, str, str]]] = {
    "cluster": [
        ("spec", "'{\"provider\": 5}'", "spec-provider-number"),
        ("data", '\'{"nodes": 5, "uid": "x"}\'', "data-nodes-number"),
    ],
    "job": [
        ("parent", "NULL", "parent-null"),
        ("spec", "'{\"nodes\": 5}'", "spec-nodes-number"),
        ("data", '\'{"started_at": "soon"}\'', "data-time-text"),
    ],
    "managed_job": [
        ("spec", "'{\"name\": 5}'", "spec-name-number"),
        ("data", f"'{{\"recoveries\": {10**30}}}'", "data-recoveries-huge"),
    ],
    "job_pool": [
        ("spec", "'{\"workers\": 1e30}'", "spec-workers-huge"),
        ("data", "'{\"claims\": 5}'", "data-claims-number"),
    ],
}
Case = tuple[str, str, str, str]  # kind, column, SQL value, label
CASES: list[Case] = [(kind, *d) for kind in KINDS for d in DAMAGE + SHAPES[kind]]
QUICK: list[Case] = [  # one of each kind, for every run; the whole matrix is marked slow
    ("cluster", *SHAPES["cluster"][0]),
    ("job", *DAMAGE[0]),
    ("managed_job", *DAMAGE[-1]),
    ("job_pool", *DAMAGE[4]),
]
REFUSED = {  # a request other than removal, to a quarantined object
    "cluster": lambda id_: ["stop", id_, "-y"],
    "job": lambda id_: ["logs", id_.split("/")[0], id_.rsplit("/", 1)[1], "--no-follow"],
    "job_pool": lambda id_: ["jobs", "launch", "--pool", id_, "-d", "-y", "true"],
}
REMOVE = re.compile(r"remove it with `stixctl ([^`]+)`")
POOL = "pool:\n  workers: 0\n"


@dataclass
class Obj:
    kind: str
    id: str
    label: str = ""


@dataclass
class Home:
    stix: Stix
    objects: dict[tuple[str, str], Obj]
    healthy: dict[str, Obj]

    def sql(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.stix.home / "state.db") as db:
            return db.execute(sql, args).fetchall()


def _row_ids(home: Home, kind: str) -> list[str]:
    return [r[0] for r in home.sql("SELECT id FROM actors WHERE kind=? ORDER BY rowid", (kind,))]


def _launch_clusters(stix: Stix, names: list[str]) -> None:
    """Several local clusters at once (each is an agent process and a sandbox)."""
    for start in range(0, len(names), 6):
        procs = [
            stix.popen("launch", "-c", n, "-y", "-d", "true") for n in names[start : start + 6]
        ]
        ended = [(proc.communicate(timeout=120), proc.returncode) for proc in procs]
        assert all(code == 0 for _, code in ended), ended


def _make(stix: Stix, tmp: Path, cases: list[Case]) -> Home:
    """Every object, made through the daemon: one per (kind, damage), and healthy ones."""
    home = Home(stix, {}, {})
    per_kind = {kind: [label for k, _, _, label in cases if k == kind] for kind in KINDS}
    pool_file = tmp / "pool.yaml"
    pool_file.write_text(POOL)

    names = [f"bad-{i}" for i in range(len(per_kind["cluster"]))]
    stix.run("daemon", "start", check=True)  # before the launches that run at once
    _launch_clusters(stix, ["ok", "jobhost", *names])
    for name, label in zip(names, per_kind["cluster"], strict=True):
        home.objects["cluster", label] = Obj("cluster", name, label)
    home.healthy["cluster"] = Obj("cluster", "ok")

    for _ in range(len(per_kind["job"]) + 1):
        stix.run("exec", "jobhost", "-d", "sleep 600", check=True)
    job_rows = [i for i in _row_ids(home, "job") if i.startswith("jobhost/")]
    running = sorted(job_rows, key=lambda i: int(i.rsplit("/", 1)[1]))[1:]  # 1 was `true`
    home.healthy["job"] = Obj("job", running[0])
    for row_id, label in zip(running[1:], per_kind["job"], strict=True):
        home.objects["job", label] = Obj("job", row_id, label)

    pools = [f"badp-{i}" for i in range(len(per_kind["job_pool"]))]
    for pool in ["keep", "mpool", *pools]:
        stix.run("jobs", "pool", "apply", "-p", pool, str(pool_file), "-y", check=True)
    for pool, label in zip(pools, per_kind["job_pool"], strict=True):
        home.objects["job_pool", label] = Obj("job_pool", pool, label)
    home.healthy["job_pool"] = Obj("job_pool", "keep")

    count = len(per_kind["managed_job"]) + 1  # workers: 0, so they all wait, PENDING
    stix.run("jobs", "launch", "--pool", "mpool", "--num-jobs", str(count), "-d", "-y",
             "sleep 1", check=True)  # fmt: skip
    managed = _row_ids(home, "managed_job")
    home.healthy["managed_job"] = Obj("managed_job", managed[0])
    for row_id, label in zip(managed[1:], per_kind["managed_job"], strict=True):
        home.objects["managed_job", label] = Obj("managed_job", row_id, label)
    # the case of issue 12: `autostop -i inf`, stored as the old code stored it
    stix.run("launch", "-c", "seen", "-y", "-d", "true", check=True)
    return home


def _old_autostop(home: Home, name: str, minutes: float) -> None:
    (data,) = home.sql("SELECT data FROM actors WHERE kind='cluster' AND id=?", (name,))[0]
    stored = {**json.loads(data), "autostop": {"idle_minutes": minutes, "down": False}}
    home.sql(
        "UPDATE actors SET data=? WHERE kind='cluster' AND id=?", (json.dumps(stored), name)
    )  # json.dumps writes `Infinity` / `NaN`, which JSON (and the store's reader) refuses


@contextlib.contextmanager
def _damaged(tmp: Path, cases: list[Case]) -> Iterator[Home]:
    """A home with the objects of `cases`, each row damaged, and the daemon started on it."""
    stix = Stix(Path(tempfile.mkdtemp(prefix="stxrows", dir="/tmp")))
    try:
        home = _make(stix, tmp, cases)
        stix.run("daemon", "stop", check=True)
        for (kind, label), obj in home.objects.items():
            column, value = next((c, v) for k, c, v, lb in cases if (k, lb) == (kind, label))
            home.sql(f"UPDATE actors SET {column}={value} WHERE kind=? AND id=?", (kind, obj.id))
        _old_autostop(home, "seen", math.inf)
        started = stix.run("daemon", "start")
        assert started.returncode == 0, started.stderr
        yield home
    finally:
        with contextlib.suppress(subprocess.TimeoutExpired):
            stix.run("daemon", "stop", timeout=30)
        kill_everything_under(stix.home)
        shutil.rmtree(stix.home, ignore_errors=True)


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Home]:
    with _damaged(tmp_path_factory.mktemp("quick"), QUICK) as home:
        yield home


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Home]:
    with _damaged(tmp_path_factory.mktemp("full"), CASES) as home:
        yield home


def _ask(home: Home, request: Any) -> Any:
    """One request over the daemon's socket from this process (a stixctl process per look
    would make the test minutes long); the commands a user types are run as stixctl."""
    return call(home.stix.home, request, autostart=False)


def _listing(home: Home, obj: Obj) -> tuple[str, str | None, str]:
    """(status, reason, the table a user reads) of `obj`, from where users look for it."""
    if obj.kind == "cluster" or obj.label == "unknown-kind":
        records = _ask(home, m.Status()).clusters
        found = next(c for c in records if c.name == obj.id)
        return found.status, found.last_error, render.clusters(records)
    if obj.kind == "job":
        host, number = obj.id.split("/")[0], int(obj.id.rsplit("/", 1)[1])
        jobs = _ask(home, m.Queue(clusters=[host])).jobs
        job = next(j for j in jobs if j.job_id == number)
        return job.status, job.failure_reason, render.jobs(jobs)
    if obj.kind == "managed_job":
        managed = _ask(home, m.JobsQueue(all=True)).jobs
        found = next(j for j in managed if j.job_id == int(obj.id))
        return found.status, found.failure_reason, render_managed(managed)
    table = _ask(home, m.PoolStatusReq(names=[]))
    pool = next(p for p in table.rows if p["pool"] == obj.id)
    return pool["status"], pool.get("failure_reason"), table.text


FAILED = {"cluster": "FAILED", "job": "FAILED_DRIVER", "managed_job": "FAILED_CONTROLLER"}


def _shown_failed(home: Home, obj: Obj) -> str:
    """Wait until `obj` is listed failed with a reason (an actor that crashes on start is
    quarantined once it passed the restart intensity); return the reason."""
    want = "FAILED" if obj.label == "unknown-kind" else FAILED.get(obj.kind, "FAILED")

    def failed() -> tuple[str, str] | None:
        status, why, text = _listing(home, obj)
        return (why, text) if status == want and why else None

    why, text = wait_until(failed, timeout=30, interval=0.1)
    assert why in text  # the table says it too, not only --json
    return str(why)


def _terminal(home: Home, kind: str, id_: str) -> bool:
    rows = home.sql("SELECT terminal FROM actors WHERE kind=? AND id=?", (kind, id_))
    held = home.sql("SELECT 1 FROM quarantine WHERE kind=? AND id=?", (kind, id_))
    return rows == [(1,)] and not held


def _shown_failed_then_removed(damaged: Home, kind: str, label: str) -> None:
    obj = damaged.objects[kind, label]
    stored_kind = "no_such_kind" if label == "unknown-kind" else kind
    why = _shown_failed(damaged, obj)
    command = REMOVE.search(why)
    assert command, why
    log = (damaged.stix.home / "stixd.log").read_text()
    if why.startswith("quarantined"):
        lines = [
            json.loads(line)
            for line in log.splitlines()
            if '"quarantined"' in line and f'"id": "{obj.id}"' in line
        ]
        assert len(lines) == 1 and lines[0]["reason"] in why
    if why.startswith("quarantined") and label != "unknown-kind" and kind in REFUSED:
        refused = damaged.stix.run(*REFUSED[kind](obj.id))  # anything else: why, and the fix
        assert refused.returncode == 2 and command.group(0) in refused.stderr, refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
    removed = damaged.stix.run(*command.group(1).split(), "-y")
    assert removed.returncode == 0, removed.stderr
    assert "Traceback" not in removed.stderr
    wait_until(lambda: _terminal(damaged, stored_kind, obj.id), timeout=30, interval=0.2)
    asked = m.Events(name=obj.id, kind=cast(m.EventKind, kind))  # kind is one of KINDS
    history = [e.event for e in _ask(damaged, asked).events]
    assert history[0] in ("created", "submitted")  # its history, from the start, still reads
    if why.startswith("quarantined") and label != "unknown-kind":
        assert history[-2:] == ["quarantined", "removed"]
    _healthy_are_untouched(damaged)


@pytest.mark.parametrize("case", QUICK, ids=[f"{k}-{lb}" for k, _, _, lb in QUICK])
def test_a_damaged_row_of_each_kind_fails_alone_and_can_be_removed(quick: Home, case: Case) -> None:
    _shown_failed_then_removed(quick, case[0], case[3])


def _healthy_are_untouched(home: Home) -> None:
    clusters = {c.name: c.status for c in _ask(home, m.Status()).clusters}
    assert clusters["ok"] == clusters["jobhost"] == "UP"
    number = int(home.healthy["job"].id.rsplit("/", 1)[1])
    jobs = {j.job_id: j.status for j in _ask(home, m.Queue(clusters=["jobhost"])).jobs}
    assert jobs[number] == "RUNNING"
    managed = {j.job_id: j.status for j in _ask(home, m.JobsQueue(all=True)).jobs}
    assert managed[int(home.healthy["managed_job"].id)] == "PENDING"
    pools = {p["pool"]: p["status"] for p in _ask(home, m.PoolStatusReq(names=[])).rows}
    assert pools["keep"] == pools["mpool"] == "READY"


def test_autostop_of_inf_stored_by_the_old_code_no_longer_stops_the_daemon(
    quick: Home,
) -> None:
    """What was seen: `stixctl autostop c1 -i inf` stored a row the daemon could not read, and
    it could never start again. Now the daemon starts, and the cluster can be torn down."""
    why = _shown_failed(quick, Obj("cluster", "seen"))
    assert "`stixctl down seen`" in quick.stix.run("status", check=True).stdout
    assert "NaN and Infinity are not JSON numbers" in why
    assert "`stixctl down seen`" in why
    quick.stix.run("down", "seen", "-y", check=True)
    assert _terminal(quick, "cluster", "seen")
    wait_until(lambda: not quick.stix.agents("seen"), timeout=15)  # its node is gone too
    assert not quick.stix.node_dir("seen").exists()
    quick.stix.run("launch", "-c", "seen", "-y", "-d", "true", check=True)  # name reusable
    assert quick.stix.clusters()["seen"]["status"] == "UP"
    for _ in range(2):  # and the same request now: one line back, and the actor unharmed
        again = quick.stix.run("autostop", "seen", "-i", "inf", "-y")
        assert again.returncode == 2 and len(again.stderr.strip().splitlines()) == 1
    history = [e.event for e in _ask(quick, m.Events(name="seen")).events]
    since = history[len(history) - history[::-1].index("launch") :]
    assert "restarted" not in since and "quarantined" not in since
    assert quick.stix.clusters()["seen"]["status"] == "UP"


def test_every_healthy_object_still_works(quick: Home) -> None:
    """Each healthy actor of every kind was started beside the damaged ones and answers."""
    stix = quick.stix
    out = stix.run("exec", "ok", "-d", "echo still-here", check=True)
    assert "ID: 2" in out.stderr + out.stdout
    wait_until(lambda: stix.job_status("ok", 2) == "SUCCEEDED")
    job = int(quick.healthy["job"].id.rsplit("/", 1)[1])
    stix.run("cancel", "jobhost", str(job), "-y", check=True)
    wait_until(lambda: stix.job_status("jobhost", job) == "CANCELLED")
    managed = quick.healthy["managed_job"].id
    stix.run("jobs", "cancel", managed, "-y", check=True)
    wait_until(
        lambda: (
            {j["job_id"]: j["status"] for j in stix.json("jobs", "queue")}[int(managed)]
            == "CANCELLED"
        )
    )
    stix.run("jobs", "pool", "down", "keep", "-y", check=True)
    wait_until(lambda: "keep" not in {p["pool"] for p in stix.json("jobs", "pool", "status")})


@pytest.mark.slow  # ~80 objects; a minute and more
@pytest.mark.parametrize("case", CASES, ids=[f"{k}-{lb}" for k, _, _, lb in CASES])
def test_garbage_in_any_column_of_any_kind_is_shown_failed_and_can_be_removed(
    full: Home, case: Case
) -> None:
    _shown_failed_then_removed(full, case[0], case[3])
