"""Service updates and daemon restarts, end to end on `local` with real HTTP replicas behind
the real balancer (the ready sets pushed to it are read from the daemon's log)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.conftest import Stix, pid_alive, processes_mentioning, wait_until
from tests.test_serve import (
    _environ,
    free_port,
    get,
    last_ready,
    pushes,
    replica_states,
    service_yaml,
    serving,
    status,
    up,
)

TWO_TO_FOUR = "  replica_policy: {min_replicas: 2, max_replicas: 4}\n"


def two_replicas(task_file: Callable[[str], Path], port: int, **kw: object) -> Path:
    """A service of 2 replicas that may grow to 4 while a new version rolls in."""
    path = service_yaml(task_file, port, **kw)  # type: ignore[arg-type]
    text = path.read_text().replace("  replicas: 1\n", TWO_TO_FOUR)
    path.write_text(text)
    return path


def ready_ids(stix: Stix, name: str) -> list[int]:
    return [r["id"] for r in last_ready(stix.home, name) or []]


def ready_sets(stix: Stix, name: str) -> list[list[tuple[int, int]]]:
    versions = {
        int(e["id"].rpartition("/")[2]): int(e["why"].rpartition(" version ")[2])
        for e in stix.json("events", "--kind", "service", name)
        if e["kind"] == "replica" and e["event"] == "decided"  # "replica N of version V"
    }
    return [[(i, versions[i]) for i in p["ready"]] for p in pushes(stix.home, name)]


def test_a_rolling_update_replaces_old_replicas_as_new_ones_become_ready(
    stix: Stix, task_file: Callable[[str], Path]
) -> None:
    serving(stix)
    port = free_port()
    up(stix, two_replicas(task_file, port), "web")
    wait_until(lambda: ready_ids(stix, "web") == [1, 2], timeout=60)
    v2 = two_replicas(task_file, port, reply="v2")
    out = stix.run("serve", "update", "-y", "web", str(v2), check=True)
    assert "version 2" in out.stdout
    wait_until(lambda: ready_ids(stix, "web") == [3, 4], timeout=60)
    wait_until(lambda: set(replica_states(stix, "web")) == {3, 4}, timeout=30)
    record = status(stix, "web")
    assert record is not None and record["status"] == "READY" and record["version"] == 2
    assert record["active_versions"] == [2]
    urls = [r["url"] for r in last_ready(stix.home, "web") or []]
    assert sorted(get(u) for u in urls) == ["v2 3", "v2 4"]
    assert not {"web-1", "web-2"} & set(stix.clusters())
    # the ready count never fell below two once two were ready, and never passed four
    sets = ready_sets(stix, "web")
    full = next(i for i, s in enumerate(sets) if len(s) == 2)
    assert all(2 <= len(s) <= 4 for s in sets[full:]), sets


def test_a_blue_green_update_keeps_the_old_version_until_the_new_one_is_all_ready(
    stix: Stix, task_file: Callable[[str], Path]
) -> None:
    serving(stix)
    port = free_port()
    up(stix, two_replicas(task_file, port), "web")
    wait_until(lambda: ready_ids(stix, "web") == [1, 2], timeout=60)
    v2 = two_replicas(task_file, port, reply="v2")
    v2.write_text(v2.read_text().replace("envs:\n", "envs:\n  START_DELAY_4: '2'\n"))
    stix.run("serve", "update", "-y", "--mode", "blue_green", "web", str(v2), check=True)
    wait_until(lambda: ready_ids(stix, "web") == [3, 4], timeout=60)
    sets = ready_sets(stix, "web")
    # the old version served alone until both new replicas were ready, then the new one alone
    full = sets.index([(1, 1), (2, 1)])
    changes = [s for i, s in enumerate(sets) if i == full or (i > full and s != sets[i - 1])]
    assert changes == [[(1, 1), (2, 1)], [(3, 2), (4, 2)]], sets


def test_a_new_version_that_never_gets_ready_is_not_rolled_out(
    stix: Stix, task_file: Callable[[str], Path]
) -> None:
    serving(stix)
    port = free_port()
    up(stix, two_replicas(task_file, port), "web")
    wait_until(lambda: ready_ids(stix, "web") == [1, 2], timeout=60)
    broken = two_replicas(task_file, port, initial_delay=1, run="sleep 600")
    stix.run("serve", "update", "-y", "web", str(broken), check=True)

    def stopped() -> bool:
        record = status(stix, "web")
        return record is not None and "before any was ready" in (record["failure_reason"] or "")

    wait_until(stopped, timeout=60)

    def new_ones_ended() -> dict[int, str] | None:
        states = replica_states(stix, "web")
        new = {i: s for i, s in states.items() if i > 2}
        return states if all(s == "FAILED_INITIAL_DELAY" for s in new.values()) else None

    states = wait_until(new_ones_ended, timeout=30)
    assert states[1] == "READY" and states[2] == "READY"
    # two at once (max_replicas 4), and none launched once the first had failed
    assert len([i for i in states if i > 2]) == 2
    assert status(stix, "web")["status"] == "READY"  # type: ignore[index]
    assert ready_ids(stix, "web") == [1, 2]


def test_a_killed_daemon_finds_its_ready_service_again_and_launches_nothing(
    stix: Stix, task_file: Callable[[str], Path]
) -> None:
    serving(stix)
    port = free_port()
    up(stix, service_yaml(task_file, port), "web")
    wait_until(lambda: ready_ids(stix, "web") == [1], timeout=40)
    before = stix.clusters()["web-1"]
    servers = [p for p in processes_mentioning("server.py") if str(stix.home) in _environ(p)]
    assert servers
    pushed = len(pushes(stix.home, "web"))
    stix.kill_daemon()
    # the next command starts the daemon again; it pushes the same ready set once more
    assert status(stix, "web")["status"] == "READY"  # type: ignore[index]
    wait_until(lambda: len(pushes(stix.home, "web")) > pushed, timeout=30)
    assert ready_ids(stix, "web") == [1]
    after = stix.clusters()["web-1"]
    assert after["launched_at"] == before["launched_at"]
    assert all(pid_alive(p) for p in servers)
    assert get(last_ready(stix.home, "web")[0]["url"]) == "hello 1"  # type: ignore[index]
    assert replica_states(stix, "web") == {1: "READY"}
    # a probe round later nothing more was decided
    history = stix.json("events", "--kind", "service", "web")
    assert [e["id"] for e in history if e["event"] == "decided"] == ["web/1"]


def test_a_daemon_killed_while_a_replica_starts_finishes_that_replica_and_launches_no_other(
    stix: Stix, task_file: Callable[[str], Path]
) -> None:
    serving(stix)
    up(stix, service_yaml(task_file, free_port(), delay=4), "web")
    wait_until(lambda: replica_states(stix, "web").get(1) == "STARTING", timeout=30)
    launched = stix.clusters()["web-1"]["launched_at"]
    stix.kill_daemon()
    wait_until(lambda: replica_states(stix, "web") == {1: "READY"}, timeout=40)
    assert ready_ids(stix, "web") == [1]
    assert stix.clusters()["web-1"]["launched_at"] == launched
    history = stix.json("events", "--kind", "service", "web")
    assert [e["id"] for e in history if e["event"] == "decided"] == ["web/1"]


def test_a_daemon_killed_while_a_service_goes_down_finishes_the_teardown(
    stix: Stix, task_file: Callable[[str], Path]
) -> None:
    serving(stix)
    stix.env["STIX__FAKE__ENABLED"] = "true"  # fake nodes run nothing: replicas stay STARTING
    stix.env["STIX__FAKE__TERMINATE_SECONDS"] = "3"  # a teardown long enough to be cut short
    path = task_file(
        "resources: {infra: fake}\n"
        "service: {readiness_probe: {path: /, initial_delay_seconds: 600}, ports: 8080, "
        "replicas: 2}\n"
        "run: serve\n"
    )
    up(stix, path, "gone")
    wait_until(lambda: replica_states(stix, "gone") == {1: "STARTING", 2: "STARTING"}, timeout=30)
    down = stix.popen("serve", "down", "-y", "gone")
    try:
        wait_until(lambda: status(stix, "gone")["status"] == "SHUTTING_DOWN", timeout=20)  # type: ignore[index]
        stix.kill_daemon()
    finally:
        down.communicate(timeout=30)
    wait_until(lambda: stix.json("serve", "status") == [], timeout=40)
    assert not {"gone-1", "gone-2"} & set(stix.clusters())
    history = stix.json("events", "--kind", "service", "gone")
    assert [e["id"] for e in history if e["event"] == "decided"] == ["gone/1", "gone/2"]
