"""A `--secret` reaches its job and is kept only where the README's "Secrets" paragraph says:
a running managed job's row in state.db (its recoveries relaunch the task). Never in the events,
the logs, the agents' files, a listing or its --json; and nowhere once the managed job ended."""

from __future__ import annotations

import hashlib
import sqlite3
import uuid
from pathlib import Path
from typing import Any

from tests.conftest import Stix, wait_until

STATE_FILES = ("state.db", "state.db-wal", "state.db-shm")


def _checks_secret(value: str) -> str:
    """Shell that fails unless $TOK is `value`, without writing `value` into the task."""
    digest = hashlib.sha256(value.encode()).hexdigest()
    return f'test "$(printf %s "$TOK" | sha256sum | cut -c1-64)" = {digest}'


def _files_holding(home: Path, value: str, *, skip: tuple[str, ...] = ()) -> list[str]:
    needle = value.encode()
    found = []
    for path in home.rglob("*"):
        if path.name in skip and path.parent == home:
            continue
        try:
            if path.is_file() and not path.is_symlink() and needle in path.read_bytes():
                found.append(str(path.relative_to(home)))
        except FileNotFoundError:
            continue
    return found


def _rows_holding(db: Path, value: str) -> list[tuple[Any, ...]]:
    """(table, first two columns) of every row of every table whose text holds `value`."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        tables = [t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return [
            (table, *row[:2])
            for table in tables
            for row in conn.execute(f"SELECT * FROM {table}")
            if value in repr(row)
        ]
    finally:
        conn.close()


def _listings(stix: Stix) -> str:
    commands = [
        ("status",),
        ("status", "--json"),
        ("queue", "-a"),
        ("queue", "-a", "--json"),
        ("jobs", "queue", "--all"),
        ("jobs", "queue", "--all", "--json"),
        ("events", "c1"),
        ("events", "c1", "--json"),
        ("events", "mj-1", "--json"),
    ]
    out = []
    for args in commands:
        proc = stix.run(*args, check=True)
        out.append(proc.stdout + proc.stderr)
    return "\n".join(out)


def test_a_secret_reaches_its_jobs_and_is_kept_only_by_a_running_managed_job(
    stix: Stix, tmp_path: Path
) -> None:
    secret = f"s3cret-{uuid.uuid4().hex}"
    check = _checks_secret(secret)
    saw_it = tmp_path / "managed-job-saw-the-secret"
    said: list[str] = []

    launched = stix.run("launch", "-c", "c1", "-y", "--secret", f"TOK={secret}", "-d", check)
    said.append(launched.stdout + launched.stderr)
    assert launched.returncode == 0, launched.stderr
    managed = stix.run(
        "jobs", "launch", "-n", "mj", "-y", "--secret", f"TOK={secret}", "-d",
        f"{check} && touch {saw_it} && sleep 120",
    )  # fmt: skip
    said.append(managed.stdout + managed.stderr)
    assert managed.returncode == 0, managed.stderr
    wait_until(lambda: stix.job_status("c1", 1) == "SUCCEEDED")  # so the secret reached it
    wait_until(saw_it.exists, timeout=60)

    assert _rows_holding(stix.home / "state.db", secret) == [("actors", "managed_job", "1")]
    assert _files_holding(stix.home, secret, skip=STATE_FILES) == []  # logs, agents' queues
    assert secret not in _listings(stix) + "".join(said)

    stix.run("jobs", "cancel", "-y", "1", check=True)
    wait_until(lambda: stix.json("jobs", "queue", "--all")[0]["status"] == "CANCELLED", 60)
    assert _rows_holding(stix.home / "state.db", secret) == []
    assert _files_holding(stix.home, secret) == []  # no old copy in freed pages or the WAL


def test_a_secret_given_without_its_name_is_refused_without_printing_it(
    stix: Stix, task_file
) -> None:
    token = f"hf_{uuid.uuid4().hex}"  # `--secret $HF_TOKEN`: the value where a NAME belongs
    path = task_file("run: echo hi\n")

    launched = stix.run("launch", "-c", "c1", "-y", "--secret", token, "-d", "true")
    validated = stix.run("validate", "--secret", token, str(path))

    for proc in (launched, validated):
        assert proc.returncode == 2, proc.stderr
        assert "--secret NAME=VALUE" in proc.stderr
        assert token not in proc.stdout + proc.stderr
