"""Every number that enters stix is finite and inside its range, refused at the edge otherwise.

The same sentence comes from the CLI, the SDK and a raw socket client; nothing out of range is
ever written to the store, so the daemon always starts again.
"""

from __future__ import annotations

import math
import socket
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stixctl import sdk
from stixd.store.db import Row, Unstorable, open_store
from stixproto import PROTOCOL_VERSION, bounds
from stixproto import messages as m
from stixproto.edge import decode_request, request_body
from stixproto.errors import InvalidRequest, InvalidTask, ProtocolError
from stixproto.framing import decode, encode, recv_frame
from stixproto.task import Task, from_yaml
from tests.conftest import Stix

INF, NAN = math.inf, math.nan
HUGE = 99999999999999999999


def _refused_in_one_line(proc: Any, *words: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])


# -- what was seen ---------------------------------------------------------------------------


def test_autostop_inf_or_nan_is_refused_and_the_daemon_starts_again(stix: Stix) -> None:
    stix.run("launch", "-c", "c1", "-y", "-d", "true", check=True)
    for value in ("inf", "nan", "-1", "1e300", "525601"):
        _refused_in_one_line(stix.run("autostop", "c1", "-i", value), "idle_minutes", "525600")
    _refused_in_one_line(stix.run("launch", "-c", "c2", "-i", "1e300", "-y", "-d", "true"))
    _refused_in_one_line(stix.run("start", "c1", "-i", "inf"), "idle_minutes")
    stix.run("autostop", "c1", "-i", "30", check=True)  # a value in range still works
    assert stix.clusters()["c1"]["autostop_idle_minutes"] == 30
    stix.run("daemon", "stop", check=True)
    # the daemon reads back every row it wrote, so it starts (and serves) again
    assert stix.clusters()["c1"]["status"] == "UP"


def test_huge_job_ids_and_limits_get_one_line_not_a_traceback(stix: Stix) -> None:
    for args, field in [
        (("logs", "c", str(HUGE)), "job_id"),
        (("cancel", "c", "1", str(HUGE)), "job_ids[1]"),
        (("events", "x", "--limit", str(2**64 - 1)), "limit"),
        (("events", "x", "--limit", "0"), "limit"),
        (("logs", "c", "1", "--tail", "-1"), "tail"),
        (("logs", "c", "1", "--node", str(HUGE)), "node"),
        (("cost-report", "--days", "-3"), "days"),
        (("jobs", "cancel", str(-(2**70))), "job_ids[0]"),
        (("jobs", "logs", "0"), "job_id"),
        (("jobs", "launch", "--num-jobs", "0", "-y", "true"), "num_jobs"),
        (("show-gpus", "A100:inf"), "count"),
        (("fake", "preempt", "--count", str(HUGE)), "count"),
    ]:
        _refused_in_one_line(stix.run(*args), field)
    # refused before any daemon was needed: none was started for them
    assert not (stix.home / "stixd.sock").exists()


# -- the wire: a raw socket client gets the same answer ------------------------------------------


def _ask_raw(stix: Stix, request: dict[str, Any]) -> Any:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(15)
        s.connect(str(stix.home / "stixd.sock"))
        s.sendall(encode(m.Hello(protocol=PROTOCOL_VERSION)))
        recv_frame(s)
        body = msgspec.msgpack.encode(request)
        s.sendall(len(body).to_bytes(4, "big") + body)
        frame = recv_frame(s)
    assert frame is not None
    return decode(frame, msgspec.msgpack.Decoder(m.ServerMessage))


RAW_BAD: list[tuple[dict[str, Any], str]] = [
    ({"type": "autostop", "clusters": ["c1"], "idle_minutes": INF}, "idle_minutes"),
    ({"type": "autostop", "clusters": ["c1"], "idle_minutes": NAN}, "idle_minutes"),
    ({"type": "cancel", "cluster": "c1", "job_ids": [2**64 - 1]}, "job_ids[0]"),
    ({"type": "events", "name": "x", "limit": -(2**63)}, "limit"),
    ({"type": "launch", "task": {"run": "true", "num_nodes": 2**63}}, "num_nodes"),
    ({"type": "launch", "task": {"run": "true", "config": {"x": [NAN]}}}, "task.config.x[0]"),
]


def test_a_socket_client_sending_a_bad_number_is_refused_and_nothing_is_stored(
    stix: Stix,
) -> None:
    stix.run("daemon", "start", check=True)
    for request_, field in RAW_BAD:
        reply = _ask_raw(stix, request_)
        assert isinstance(reply, m.ErrorReply), (request_, reply)
        assert reply.code in ("invalid_request", "invalid_task"), reply
        assert field in reply.message and "\n" not in reply.message, reply
    assert stix.clusters() == {}  # nothing launched or written; the daemon still serves


# -- the SDK ---------------------------------------------------------------------------------


def test_the_sdk_refuses_before_it_connects(tmp_path: Path) -> None:
    client = sdk.Client(tmp_path, autostart=False)  # no daemon: a refusal must come first
    with pytest.raises(InvalidRequest, match="idle_minutes: expected a number from 0 up to"):
        client.autostop("c1", INF)
    with pytest.raises(InvalidRequest, match="job_ids"):
        client.cancel("c1", [HUGE])
    with pytest.raises(InvalidRequest, match="tail"):
        list(client.logs("c1", 1, tail=-5))
    with pytest.raises(InvalidTask, match="num_nodes: expected an integer <= 10000"):
        client.launch(sdk.Task(run="true", num_nodes=10**6), "c1")
    with pytest.raises(InvalidRequest, match=r"resources\.cpus: expected a finite number"):
        client.launch(sdk.Task(run="true", resources=sdk.Resources(cpus=NAN)), "c1")


# -- one check, both sides -------------------------------------------------------------------

BAD: list[tuple[Any, str]] = [
    (m.Launch(task=Task(run="x"), idle_minutes=INF), "idle_minutes"),
    (m.Start(clusters=["c"], idle_minutes=-0.5), "idle_minutes"),
    (m.Logs(cluster="c", job_id=0), "job_id"),
    (m.Logs(cluster="c", tail=bounds.MAX_LINES + 1), "tail"),
    (m.Logs(cluster="c", node=-1), "node"),
    (m.Cancel(cluster="c", job_ids=[1, bounds.MAX_ID + 1]), "job_ids[1]"),
    (m.CostReportReq(days=bounds.MAX_DAYS + 1), "days"),
    (m.Events(name="x", limit=HUGE), "limit"),
    (m.NodeShell(cluster="c", node=bounds.MAX_COUNT), "node"),
    (m.ShowGpus(name="A100", count=0.0), "count"),
    (m.JobsLaunch(tasks=[Task(run="x")], num_jobs=bounds.MAX_COUNT + 1), "num_jobs"),
    (m.JobsCancel(job_ids=[-1]), "job_ids[0]"),
    (m.JobsLogs(job_id=HUGE), "job_id"),
    (m.FakePreempt(count=-1), "count"),
    (m.Launch(task=Task(run="x", envs={"A": NAN})), "task.envs.A"),
]


@pytest.mark.parametrize(
    ("request_", "field"), BAD, ids=[f"{type(r).__name__}-{f}" for r, f in BAD]
)
def test_every_numeric_field_is_refused_out_of_range_naming_it(request_: Any, field: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        request_body(request_)
    assert f": {field}: " in err.value.message and "\n" not in err.value.message


def test_values_in_range_pass_and_decode_to_the_same_request() -> None:
    for request_ in [
        m.Autostop(clusters=["c"], idle_minutes=bounds.MAX_IDLE_MINUTES),
        m.Cancel(cluster="c", job_ids=[1, bounds.MAX_ID]),
        m.Logs(cluster="c", job_id=7, tail=0, node=bounds.MAX_COUNT - 1),
        m.Events(name="x", limit=bounds.MAX_EVENTS),
        m.Launch(task=Task(run="x", num_nodes=bounds.MAX_COUNT), idle_minutes=0),
    ]:
        assert decode_request(request_body(request_)) == request_


# -- task files and the daemon's config ------------------------------------------------------


@pytest.mark.parametrize(
    ("yaml_text", "where"),
    [
        ("num_nodes: 100000000\nrun: x\n", "num_nodes"),
        ("resources:\n  cpus: .inf\n", "resources.cpus"),
        ("resources:\n  memory: 1e300\n", "resources.memory"),
        ("resources:\n  memory: 99999999999PB\n", "resources.memory"),
        ("resources:\n  disk_size: 18446744073709551615\n", "resources.disk_size"),
        ("resources:\n  accelerators: {A100: .nan}\n", "resources.accelerators"),
        ("resources:\n  accelerators: A100:99999999\n", "resources.accelerators"),
        ("resources:\n  autostop: 99999999w\n", "resources.autostop"),
        ("resources:\n  max_hourly_cost: .inf\n", "resources.max_hourly_cost"),
        ("service:\n  readiness_probe: {path: /, initial_delay_seconds: 1e300}\n  replicas: 1\n",
         "service.readiness_probe.initial_delay_seconds"),
        ("service:\n  replica_policy: {min_replicas: 99999999}\n",
         "service.replica_policy.min_replicas"),
        ("pool:\n  workers: 99999999\n", "pool.workers"),
        ("inputs:\n  /data: .inf\n", "inputs./data"),
        ("volumes:\n  /m: {name: v, size: 99999999999}\n", "volumes./m.size"),
        ("config:\n  a: {b: [1, .nan]}\nrun: x\n", "config.a.b.1"),
        ("service:\n  readiness_probe: /\n  replicas: 1\n"
         "  load_balancer: {stream_timeout_seconds: .nan}\n",
         "service.load_balancer.stream_timeout_seconds"),
    ],
)  # fmt: skip
def test_task_numbers_are_finite_and_bounded(yaml_text: str, where: str) -> None:
    with pytest.raises(InvalidTask) as err:
        from_yaml(yaml_text)
    assert f"task: {where}: expected" in err.value.message, err.value.message


def test_the_daemon_config_refuses_infinite_minutes(tmp_path: Path) -> None:
    from stixd.config import ConfigError, load_config

    (tmp_path / "config.yaml").write_text("autostop:\n  default_idle_minutes: .inf\n")
    with pytest.raises(ConfigError, match="default_idle_minutes: expected a number"):
        load_config(tmp_path, env={})


# -- the store never writes what it cannot read back -----------------------------------------


@pytest.mark.anyio
async def test_the_store_refuses_inf_and_nan_and_keeps_the_row(tmp_path: Path) -> None:
    async with open_store(tmp_path / "s.db") as store:
        row = await store.insert(Row(kind="cluster", id="c", state="UP", version=0), "created")
        with pytest.raises(Unstorable, match="cluster c data: a value is not a finite number"):
            await store.update(row, event="autostop", data={"autostop": {"idle_minutes": INF}})
        with pytest.raises(Unstorable):
            await store.insert(
                Row(kind="cluster", id="d", state="UP", version=0, spec={"x": NAN}), "created"
            )
    async with open_store(tmp_path / "s.db") as store:
        kept = await store.get("cluster", "c")
        assert kept is not None and kept.version == row.version and kept.data == {}
        assert await store.get("cluster", "d") is None


# -- any number in any field of any request: accepted in range, else one sentence ---------------

_NUMBER_FIELDS = [
    (cls, f.encode_name)
    for cls in m.Request.__args__
    for f in msgspec.structs.fields(cls)
    if any(word in str(f.type) for word in ("int", "float", "b."))
]


@settings(max_examples=300, deadline=None, database=None)
@given(
    target=st.sampled_from(_NUMBER_FIELDS),
    value=st.one_of(
        st.integers(min_value=-(2**63), max_value=2**64 - 1),  # what msgpack can carry
        st.floats(allow_nan=True, allow_infinity=True),
        st.lists(st.integers(min_value=-(2**63), max_value=2**64 - 1), max_size=3),
    ),
)
def test_any_number_in_any_request_field_is_accepted_or_refused_in_one_sentence(
    target: tuple[type[msgspec.Struct], str], value: Any
) -> None:
    cls, field = target
    raw = {"type": cls.__struct_config__.tag, field: value}
    for required in msgspec.structs.fields(cls):
        if required.required and required.encode_name != field:
            raw[required.encode_name] = {"run": "x"} if "Task" in str(required.type) else ["c"]
    body = msgspec.msgpack.encode(raw)
    try:
        decoded = decode_request(body)
    except (InvalidRequest, ProtocolError) as exc:
        assert "\n" not in exc.message
        return
    got = getattr(decoded, field)
    assert got is None or not isinstance(got, float) or math.isfinite(got)
    assert msgspec.json.decode(msgspec.json.encode(decoded), type=type(decoded)) == decoded


@pytest.mark.anyio
async def test_the_async_sdk_refuses_the_same_way(tmp_path: Path) -> None:
    client = sdk.AsyncClient(tmp_path, autostart=False)
    with pytest.raises(InvalidRequest, match="idle_minutes: expected a number from 0 up to"):
        await client.start("c1", idle_minutes=NAN)
    with pytest.raises(InvalidRequest, match=r"job_ids\[0\]"):
        await client.cancel("c1", [0])
