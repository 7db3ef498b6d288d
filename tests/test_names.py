"""Names: SkyPilot's rule for what a request creates, a loose check for what it refers to,
paths that never leave their parent, hints a shell can take, and history matched exactly."""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import msgspec
import pytest

from stixctl import sdk
from stixctl.main import _finish_run
from stixd.providers.base import NodeInfo, NodeStatus
from stixd.providers.local.provider import LocalProvider
from stixd.store.db import Row, open_store
from stixproto import PROTOCOL_VERSION, names
from stixproto import messages as m
from stixproto.errors import InvalidRequest
from stixproto.framing import HEADER, decode, encode, recv_frame
from stixproto.paths import PathOutsideParent, child_path
from tests.conftest import Stix, kill_everything_under

BAD_NEW_NAMES = [
    "c;rm -rf x",
    "$(touch pwned)",
    "two words",
    "line\nbreak",
    "star*",
    "x" * 300,
    "../..",
    "/some/dir",
    "1starts-with-digit",
    "-dash",
    "ends-with-dash-",
    "ends.",
    "",
    "é",
    "a" * 64,
]
GOOD_NAMES = ["a", "dev", "my-cluster_1.b", "A9", "a" * 63]
RULE_WORDS = "starts with a letter, ends with a letter or digit"
EXIT_INVALID = 2  # InvalidRequest, as every refused argument


# -- the rule ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_names_of_skypilots_form_are_accepted(name: str) -> None:
    assert names.check_new(name) == name


@pytest.mark.parametrize("name", BAD_NEW_NAMES)
def test_a_new_name_outside_the_rule_is_refused_in_one_line_that_states_it(name: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        names.check_new(name, "cluster")
    assert RULE_WORDS in refused.value.message and "at most 63 characters" in refused.value.message
    assert "\n" not in refused.value.message and len(refused.value.message) < 300


def test_pool_names_leave_room_for_their_workers_cluster_names() -> None:
    pool = "p" * names.max_length("pool")
    names.check_new(pool, "pool")
    names.check_new(f"{pool}-999999", "cluster")  # its workers are clusters
    with pytest.raises(InvalidRequest):
        names.check_new(pool + "p", "pool")


@pytest.mark.parametrize("name", ["c;rm -rf x", "../..", "/some/dir", "x" * 300, "a b\nc"])
def test_a_name_an_earlier_version_took_can_still_be_referred_to(name: str) -> None:
    assert m.Down(clusters=[name]).clusters == [name]
    assert m.Events(name=name).name == name
    assert m.Logs(cluster=name).cluster == name


@pytest.mark.parametrize("name", ["", "a\0b", "x" * (names.MAX_REFERENCE_LENGTH + 1)])
def test_a_reference_that_cannot_name_anything_is_refused(name: str) -> None:
    with pytest.raises(InvalidRequest, match="cannot name anything"):
        m.Down(clusters=["ok", name])


_REQUIRED: dict[type[m.Msg], dict[str, Any]] = {
    m.Launch: {"task": {"run": "true"}},
    m.Exec: {"task": {"run": "true"}, "cluster": "ok"},
    m.Logs: {"cluster": "ok"},
    m.Cancel: {"cluster": "ok"},
    m.Start: {"clusters": ["ok"]},
    m.Events: {"name": "ok"},
    m.NodeShell: {"cluster": "ok"},
    m.SshPools: {"action": "status"},
    m.JobsLaunch: {"tasks": [{"run": "true"}]},
    m.PlanRequest: {"tasks": [{"run": "true"}]},
    m.PoolApply: {"name": "ok", "task": {"run": "true"}},
    m.ServeUp: {"task": {"run": "true"}},
    m.ServeUpdate: {"name": "ok", "task": {"run": "true"}},
    m.ServeLogs: {"name": "ok"},
    m.TokensCreate: {"user": "ok"},
    m.UsersRole: {"name": "ok", "role": "user"},
}


def _fields() -> Iterator[tuple[type[m.Msg], str, str]]:
    for cls, (field, _) in m.NEW_NAMES.items():
        yield cls, field, "c;rm -rf x"
    for cls, fields in m.REFERENCE_NAMES.items():
        for field, _ in fields:
            yield cls, field, ""


@pytest.mark.parametrize(("cls", "field", "bad"), list(_fields()))
def test_every_name_field_is_checked_when_built_and_when_decoded(
    cls: type[m.Msg], field: str, bad: str
) -> None:
    """Also guards the check itself: a message class whose own ``__post_init__`` forgot to call
    the base one would let its names through."""
    tag = cls.__struct_config__.tag
    value: Any = [bad] if field in ("clusters", "names") else bad
    raw = {**_REQUIRED.get(cls, {}), field: value}
    with pytest.raises(InvalidRequest):
        msgspec.convert(raw, cls)
    with pytest.raises(InvalidRequest):
        msgspec.msgpack.Decoder(m.Request).decode(msgspec.msgpack.encode({"type": tag, **raw}))


# -- one function for every path made from a name ------------------------------------------


@pytest.mark.parametrize("name", ["..", ".", "", "a/b", "/abs", "../x", "x\0y", "x" * 256])
def test_a_path_made_from_a_name_never_leaves_its_parent(tmp_path: Path, name: str) -> None:
    with pytest.raises(PathOutsideParent):
        child_path(tmp_path, name)
    with pytest.raises(PathOutsideParent):
        child_path(PurePosixPath("/home/u/.stix/nodes"), name)


def test_odd_but_plain_names_stay_inside(tmp_path: Path) -> None:
    for name in ("c;rm -rf x", "two words", "a..b", "x" * 255):
        assert child_path(tmp_path, name).parent == tmp_path


@pytest.mark.parametrize("dest", ["~/../../outside", "/x/../../../y", "~", "/", "../../z"])
def test_a_file_mount_cannot_replace_anything_outside_the_nodes_sandbox(
    tmp_path: Path, dest: str
) -> None:
    home = tmp_path / "clusters" / "c" / "node-0"
    node = NodeInfo(
        0, "127.0.0.1", NodeStatus.RUNNING, "sock", str(home / "sky_workdir"), str(home)
    )
    with pytest.raises(PathOutsideParent):
        LocalProvider.resolve_dest(node, dest)
    assert LocalProvider.resolve_dest(node, "~/data/../x") == home / "x"
    assert LocalProvider.resolve_dest(node, "/etc/x") == home / "etc" / "x"
    assert LocalProvider.resolve_dest(node, "rel") == home / "sky_workdir" / "rel"


# -- hints ---------------------------------------------------------------------------------


def test_a_printed_hint_quotes_the_names_in_it(capsys: pytest.CaptureFixture[str]) -> None:
    """`exec` on a cluster an earlier version named ``c;rm -rf x`` prints a hint that does
    exactly that when pasted into a shell: only with the name quoted."""
    args = argparse.Namespace(json=False, detach_run=True)
    assert _finish_run(m.LaunchResult(cluster="c;rm -rf x", job_id=1), args) == 0
    hint = capsys.readouterr().err
    assert "`stixctl logs 'c;rm -rf x' 1`" in hint
    assert names.command("down", "$(x)", "-y") == "stixctl down '$(x)' -y"


# -- events --------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_history_of_a_b_never_shows_axb(tmp_path: Path) -> None:
    async with open_store(tmp_path / "s.db") as store:
        for cluster in ("axb", "A_B"):
            await store.insert(Row(kind="cluster", id=cluster, state="UP", version=0), "created")
            await store.insert(
                Row(kind="job", id=f"{cluster}/u1/1", state="PENDING", version=0), "created"
            )
        assert await store.events("cluster", "a_b") == []
        assert await store.events("cluster", "a%") == []
        own = await store.events("cluster", "axb")
        assert {e.id for e in own} == {"axb", "axb/u1/1"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# -- the CLI, the SDK and the socket refuse alike -------------------------------------------


def _raw_request(sock_path: Path, request: dict[str, Any]) -> Any:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(15)
        s.connect(str(sock_path))
        s.sendall(encode(m.Hello(protocol=PROTOCOL_VERSION)))
        decoder = msgspec.msgpack.Decoder(m.ServerMessage)
        body = recv_frame(s)
        assert body is not None and isinstance(decode(body, decoder), m.HelloOk)
        payload = msgspec.msgpack.encode(request)
        s.sendall(HEADER.pack(len(payload)) + payload)
        body = recv_frame(s)
        assert body is not None
        return decode(body, decoder)


@pytest.mark.parametrize("bad", ["c;rm -rf x", "../..", "x" * 300])
def test_a_bad_cluster_name_is_refused_by_the_cli_the_sdk_and_the_socket(
    stix: Stix, bad: str
) -> None:
    cli = stix.run("launch", "-c", bad, "-y", "-d", "true")
    assert cli.returncode == EXIT_INVALID
    assert cli.stderr.count("\n") == 1 and RULE_WORDS in cli.stderr
    assert stix.daemon_pid() is None  # refused before anything was asked of the daemon

    with pytest.raises(InvalidRequest, match=RULE_WORDS):
        sdk.Client(stix.home, autostart=False).launch(sdk.Task(run="true"), cluster=bad)

    stix.run("daemon", "start", check=True)
    reply = _raw_request(
        stix.home / "stixd.sock", {"type": "launch", "task": {"run": "true"}, "cluster": bad}
    )
    assert isinstance(reply, m.ErrorReply) and reply.code == "invalid_request"
    assert reply.message == cli.stderr.strip().removeprefix("stixctl: ")
    assert stix.json("status", "-a") == []
    assert not (stix.home / "clusters").exists() or not list((stix.home / "clusters").iterdir())


def test_managed_job_and_pool_names_follow_the_rule(stix: Stix, task_file: Any) -> None:
    named = stix.run("jobs", "launch", "-n", "two words", "-y", "-d", "true")
    assert named.returncode == EXIT_INVALID and "managed job name" in named.stderr
    pool = stix.run("jobs", "pool", "apply", "-p", "../p", str(task_file("pool:\n  workers: 1\n")))
    assert pool.returncode == EXIT_INVALID and "pool name" in pool.stderr
    from_task = stix.run(
        "jobs", "launch", "-y", "-d", str(task_file("name: my job\nrun: 'true'\n"))
    )
    assert from_task.returncode == EXIT_INVALID
    assert "-n NAME" in from_task.stderr and from_task.stderr.count("\n") == 1
    assert stix.json("jobs", "queue", "--all") == []


# -- records an earlier version made ---------------------------------------------------------


def _write_legacy_cluster(db: Path, name: str) -> None:
    """A cluster row as the earlier version stored it for `launch -c NAME` (it took any name)."""
    now = time.time()
    spec = {"provider": "local", "num_nodes": 1, "resources": "1x local"}
    data = {"uid": "legacy", "launched_at": now, "nodes": []}
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        conn.execute(
            "INSERT INTO actors (kind, id, parent, state, terminal, spec, data, version, "
            "created_at, updated_at) VALUES ('cluster', ?, NULL, 'UP', 0, ?, ?, 1, ?, ?)",
            (name, json.dumps(spec), json.dumps(data), now, now),
        )


@pytest.fixture
def nested_home(tmp_path: Path) -> Iterator[Stix]:
    """A stix home two levels under a directory of the user's (`clusters/../..` is that one)."""
    stix = Stix(tmp_path / "user" / "stixhome")
    stix.home.mkdir(parents=True)
    try:
        yield stix
    finally:
        with contextlib.suppress(subprocess.TimeoutExpired):
            subprocess.run(
                [sys.executable, "-m", "stixctl", "daemon", "stop"],
                env=stix.env,
                capture_output=True,
                timeout=30,
            )
        kill_everything_under(stix.home)


def test_legacy_clusters_named_to_leave_the_home_are_removed_and_nothing_outside_is(
    nested_home: Stix, tmp_path: Path
) -> None:
    stix = nested_home
    user_dir = stix.home.parent  # where `<home>/clusters/../..` points
    elsewhere = tmp_path / "some" / "dir"
    for sandbox in (user_dir, elsewhere):  # what the earlier version's launch made there
        (sandbox / "node-0").mkdir(parents=True)
        (sandbox / "precious.txt").write_text("keep me")
    (stix.home / "clusters").mkdir()  # so `clusters/../..` resolves, as after that launch
    stix.run("status", check=True)  # starts the daemon, which makes the store
    stix.run("daemon", "stop", check=True)
    legacy = ["../..", str(elsewhere), "x" * 300]
    for name in legacy:
        _write_legacy_cluster(stix.home / "state.db", name)
    stix.run("daemon", "start", check=True)

    for name in legacy:
        down = stix.run("down", name, "-y")
        # removed by `down`, or found gone at the daemon's start (it has no sandbox under the
        # home): either way one line and no traceback
        assert down.returncode in (0, 3), down.stderr
        assert down.stderr.count("\n") <= 2 and "Traceback" not in down.stderr

    for sandbox in (user_dir, elsewhere):
        assert (sandbox / "precious.txt").read_text() == "keep me"
        assert (sandbox / "node-0").is_dir()
    assert stix.home.is_dir()
    assert not set(legacy) & set(stix.clusters())  # the records are gone from status
    ended = {c["name"]: c["status"] for c in stix.json("status", "-a")}
    assert all(ended.get(name) == "TERMINATED" for name in legacy), ended


def test_an_events_kind_outside_the_actor_kinds_is_refused_before_it_is_sent() -> None:
    from stixproto.edge import request_body
    from stixproto.errors import InvalidRequest

    with pytest.raises(InvalidRequest, match="events: kind: invalid enum value") as refused:
        request_body(m.Events(name="c1", kind="x" * 100_000))  # type: ignore[arg-type]
    assert len(refused.value.message) < 400
