"""Hostile inputs to serving, each answered with one line and an exit code, against one real
daemon that keeps a service the whole time: after every refusal the daemon is the same process,
that service's record is what it was, and nothing else was stored or started.

The service files are refused twice over: by `stixctl` before it sends anything, and by the
daemon when a raw socket client sends the same task unchecked. SkyServe 0.14.1 refuses some of
these too (`sky/serve/service_spec.py` and its schema): a path not starting with '/', a
non-number delay or target, a negative count or QPS, `max_replicas < min_replicas`, an unknown
policy, a port outside 1-65535, the instance-aware pairing, unknown `load_balancer` or `tls`
keys, a `tls` without both files, a bad service name. It takes the rest: CR/LF, spaces, `..`
or 10 KB in the probe path, CR/LF or non-ASCII in probe headers (its `requests` then fails
every probe), any `post_data` size,
negative or `.inf` delays and timeouts, `max_replicas: 1000000`, and TLS files it cannot serve
with (a missing one fails as it is copied to its controller, a non-PEM one as its balancer
starts). stix refuses those at the edge
(`stixproto/task/service.py`, `stixproto/bounds.py`; TLS in `stixd/control/serve_cmds.py`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from stixctl.main import main as stixctl_main
from stixd.serve.autoscaler import decide
from stixd.serve.seams import ScalerMemory
from stixproto import PROTOCOL_VERSION, bounds
from stixproto import messages as m
from stixproto.errors import InvalidTask
from stixproto.framing import decode, encode, recv_frame
from stixproto.task import Task, from_yaml
from stixproto.task.model import Service
from stixproto.task.service import effective_scaling
from tests.autoscaler_support import FakeFleet, burst
from tests.conftest import Stix, kill_everything_under, wait_until
from tests.test_serve import free_port, self_signed

PORT = free_port()  # nothing binds it: the kept service has no replica
BASE: dict[str, Any] = {
    "service": {"readiness_probe": "/", "replicas": 0, "ports": PORT},
    "run": f"python3 -m http.server {PORT}",
}
_server = msgspec.msgpack.Decoder(m.ServerMessage)


@pytest.fixture(scope="module")
def daemon() -> Iterator[Stix]:
    """One daemon for the module, holding the service `keep` (no replicas: nothing runs)."""
    home = Path(tempfile.mkdtemp(prefix="stxh", dir="/tmp"))
    s = Stix(home)
    try:
        (home / "keep.yaml").write_text(json.dumps(BASE))
        s.run("serve", "up", "-y", "-n", "keep", str(home / "keep.yaml"), check=True)
        # A service with no replicas starts REPLICA_INIT and settles NO_REPLICA on its first
        # round; every test compares its record before and after, so start from the settled one.
        wait_until(lambda: _status_of(s, "keep") == "NO_REPLICA", timeout=20)
        yield s
    finally:
        with contextlib.suppress(subprocess.TimeoutExpired):
            s.run("daemon", "stop", timeout=30)
        kill_everything_under(home)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def served(daemon: Stix, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stix]:
    """The module's daemon, checked intact after the test: same process, `keep` as it was,
    no other service stored and no balancer directory made."""
    monkeypatch.setenv("STIX_HOME", str(daemon.home))
    pid = daemon.daemon_pid()
    before = _services(daemon)
    assert [s["name"] for s in before] == ["keep"]
    made = sorted((daemon.home / "serve").iterdir())
    yield daemon
    assert daemon.daemon_pid() == pid
    assert _services(daemon) == before
    assert sorted((daemon.home / "serve").iterdir()) == made


def _status_of(stix: Stix, name: str) -> str | None:
    shown = stix.json("serve", "status")
    return next((str(x["status"]) for x in shown if x["name"] == name), None)


def _services(stix: Stix) -> list[dict[str, Any]]:
    code, out, err = cli("serve", "status", "--json")
    assert code == 0, err
    shown: list[dict[str, Any]] = json.loads(out)
    return [{k: s[k] for k in ("name", "status", "version", "endpoint")} for s in shown]


def cli(*argv: str) -> tuple[int, str, str]:
    """stixctl in this process (its socket and daemon are real), as (exit code, out, err)."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = stixctl_main(list(argv))
        except SystemExit as exc:  # argparse's own refusals
            code = exc.code if isinstance(exc.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def one_line(err: str, code: int, got: int, *words: str) -> None:
    """A refusal: exit `code`, one line of stderr after argparse's usage (if any), no traceback,
    naming `words`."""
    assert got == code, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("stixctl")]
    assert len(lines) == 1, err
    assert len(lines[0]) < 400, lines[0]  # a number like 1e308 is quoted short, not in digits
    for word in words:
        assert word in lines[0], lines[0]


# -- the service file ---------------------------------------------------------------------------


def _probe(**fields: Any) -> dict[str, Any]:
    return {"readiness_probe": {"path": "/", **fields}}


def _policy(**fields: Any) -> dict[str, Any]:
    return {"replicas": None, "replica_policy": {"min_replicas": 0, "max_replicas": 2, **fields}}


INF, NAN = float("inf"), float("nan")
DEEP = "DEEP"
"""A stand-in value: `post_data` nested 1000 maps deep, spliced into the file's text."""
SPEC_CASES: dict[str, tuple[dict[str, Any], str]] = {
    "path-crlf": (_probe(path="/health\r\nX-Evil: 1"), "readiness_probe.path"),
    "path-space": (_probe(path="/a b"), "readiness_probe.path"),
    "path-full-url": (_probe(path="http://169.254.169.254/latest"), "readiness_probe.path"),
    "path-dotdot": (_probe(path="/x/../../etc/passwd"), "readiness_probe.path"),
    "path-10kb": (_probe(path="/" + "a" * 10_240), "readiness_probe.path"),
    "path-unicode": (_probe(path="/h\u00e9alth"), "readiness_probe.path"),
    "path-short-form-crlf": ({"readiness_probe": "/h\nX: 1"}, "service.readiness_probe"),
    "header-value-crlf": (_probe(headers={"X-A": "v\r\nX-Evil: 1"}), "headers.X-A"),
    "header-name-crlf": (_probe(headers={"X-A\r\nX-Evil": "v"}), "headers"),
    "header-value-non-ascii": (_probe(headers={"X-A": "caf\u00e9"}), "headers.X-A"),
    "header-name-non-ascii": (_probe(headers={"X-\u00e9": "v"}), "headers"),
    "header-empty-name": (_probe(headers={"": "v"}), "headers"),
    "header-content-length": (_probe(headers={"Content-Length": "0"}), "Content-Length"),
    "header-100kb": (_probe(headers={"X-A": "v" * 100_000}), "headers.X-A"),
    "post-data-100kb": (_probe(post_data={"x": "a" * 100_000}), "post_data"),
    "post-data-1000-deep": (_probe(post_data=DEEP), "nested too deeply"),
    "post-data-not-json": (_probe(post_data="{not json"), "post_data"),
    "initial-delay-inf": (_probe(initial_delay_seconds=INF), "initial_delay_seconds"),
    "initial-delay-nan": (_probe(initial_delay_seconds=NAN), "initial_delay_seconds"),
    "initial-delay-negative": (_probe(initial_delay_seconds=-1), "initial_delay_seconds"),
    "initial-delay-1e308": (_probe(initial_delay_seconds=1e308), "initial_delay_seconds"),
    "timeout-inf": (_probe(timeout_seconds=INF), "timeout_seconds"),
    "timeout-nan": (_probe(timeout_seconds=NAN), "timeout_seconds"),
    "timeout-negative": (_probe(timeout_seconds=-5), "timeout_seconds"),
    "timeout-zero": (_probe(timeout_seconds=0), "timeout_seconds"),
    "timeout-1e308": (_probe(timeout_seconds=1e308), "timeout_seconds"),
    "qps-inf": (_policy(target_qps_per_replica=INF), "target_qps_per_replica"),
    "qps-nan": (_policy(target_qps_per_replica=NAN), "target_qps_per_replica"),
    "qps-negative": (_policy(target_qps_per_replica=-1), "target_qps_per_replica"),
    "qps-1e308": (_policy(target_qps_per_replica=1e308), "target_qps_per_replica"),
    "qps-map-crlf-key": (
        {
            **_policy(target_qps_per_replica={"A100\r\nX": 1}),
            "load_balancing_policy": "instance_aware_least_load",
        },
        "target_qps_per_replica",
    ),
    "qps-map-without-instance-aware": (
        _policy(target_qps_per_replica={"A100": 1}),
        "instance_aware_least_load",
    ),
    "instance-aware-without-qps-map": (
        {**_policy(target_qps_per_replica=1), "load_balancing_policy": "instance_aware_least_load"},
        "target_qps_per_replica",
    ),
    "min-over-max": (_policy(min_replicas=3, max_replicas=2), "max_replicas"),
    "max-replicas-1000000": (_policy(max_replicas=1_000_000, target_qps_per_replica=1), "1000"),
    "replicas-past-the-bound": ({"replicas": bounds.MAX_REPLICAS + 1}, "service.replicas"),
    "overprovision-past-the-bound": (
        _policy(max_replicas=bounds.MAX_REPLICAS, num_overprovision=1, target_qps_per_replica=1),
        "num_overprovision",
    ),
    "ports-zero": ({"ports": 0}, "service.ports"),
    "ports-70000": ({"ports": 70_000}, "service.ports"),
    "ports-negative": ({"ports": -1}, "service.ports"),
    "ports-10000-of-them": ({"ports": list(range(1024, 11_024))}, "service.ports"),
    "load-balancing-policy-evil": ({"load_balancing_policy": "evil"}, "load_balancing_policy"),
    "load-balancer-unknown-key": ({"load_balancer": {"evil": 1}}, "load_balancer.evil"),
    "stream-timeout-inf": (
        {"load_balancer": {"stream_timeout_seconds": INF}},
        "stream_timeout_seconds",
    ),
    "tls-one-file": ({"tls": {"keyfile": "/k.pem"}}, "tls.certfile"),
    "tls-unknown-key": ({"tls": {"keyfile": "/k", "certfile": "/c", "ca": "/x"}}, "tls.ca"),
    "auth-no-keys": ({"auth": {"api_keys": []}}, "auth.api_keys"),
    "auth-empty-key": ({"auth": {"api_keys": [""]}}, "auth.api_keys"),
    "auth-1mb-key": ({"auth": {"api_keys": ["k" * 1_000_000]}}, "auth.api_keys.0"),
    "auth-1001-keys": ({"auth": {"api_keys": [f"k{i}" for i in range(1001)]}}, "auth.api_keys"),
}


def _doc(patch: dict[str, Any]) -> dict[str, Any]:
    doc = json.loads(json.dumps(BASE))
    for key, value in patch.items():
        if value is None:
            doc["service"].pop(key, None)
        else:
            doc["service"][key] = value
    return doc


def _yaml(doc: dict[str, Any]) -> str:
    """The document as YAML text (JSON is YAML; floats past JSON's written as YAML's)."""
    text = json.dumps(doc, allow_nan=True)
    text = text.replace("-Infinity", "-.inf").replace("Infinity", ".inf").replace("NaN", ".nan")
    text = text.replace("1e+308", "1.0e+308")  # YAML 1.1 reads `1e+308` as text
    return text.replace(json.dumps(DEEP), '{"a": ' * 1000 + "{}" + "}" * 1000)


def test_a_name_after_a_double_dash_reaches_the_daemon_as_a_name(served: Stix) -> None:
    code, _, err = cli("serve", "status", "--", "-rf")
    one_line(err, 3, code, "no service '-rf'")


@pytest.mark.parametrize("case", sorted(SPEC_CASES))
def test_a_hostile_service_file_is_refused_in_one_line_and_nothing_is_stored(
    served: Stix, tmp_path: Path, case: str
) -> None:
    patch, words = SPEC_CASES[case]
    path = tmp_path / "svc.yaml"
    path.write_text(_yaml(_doc(patch)))
    code, _, err = cli("serve", "up", "-y", "-n", "hostile", str(path))
    one_line(err, InvalidTask.exit_code, code, words)
    code, _, err = cli("serve", "update", "-y", "keep", str(path))
    one_line(err, InvalidTask.exit_code, code, words)


def _send(stix: Stix, body: bytes) -> Any:
    """One raw request (unchecked by any client) and the daemon's final answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(str(stix.home / "stixd.sock"))
        s.sendall(encode(m.Hello(protocol=PROTOCOL_VERSION)))
        assert isinstance(decode(recv_frame(s) or b"", _server), m.HelloOk)
        s.sendall(struct.pack(">I", len(body)) + body)
        while True:
            reply = decode(recv_frame(s) or b"", _server)
            if not isinstance(reply, m.Progress | m.StreamEvent):
                return reply


WIRE_SKIPS = {"ports-10000-of-them"}
"""Refused as a wrong type (a protocol error), shown by the CLI case."""


@pytest.mark.parametrize("case", sorted(set(SPEC_CASES) - WIRE_SKIPS))
def test_the_daemon_refuses_the_same_service_sent_raw_over_its_socket(
    served: Stix, case: str
) -> None:
    patch, words = SPEC_CASES[case]
    doc = _doc(patch)
    bomb = msgspec.msgpack.encode(DEEP)
    body = msgspec.msgpack.encode({"type": "serve_up", "name": "hostile", "task": doc})
    body = body.replace(bomb, b"\x81\xa1a" * 1000 + b"\x80")
    reply = _send(served, body)
    assert isinstance(reply, m.ErrorReply), reply
    assert reply.code in ("invalid_request", "invalid_task", "protocol"), reply
    assert "\n" not in reply.message and len(reply.message) < 600
    if case == "post-data-1000-deep":
        assert "nested too deeply" in reply.message
    else:
        assert words.split(".")[-1] in reply.message, reply.message


# -- TLS files: read by the daemon before anything is stored ------------------------------------


def _tls_cases(tmp: Path) -> dict[str, tuple[str, str]]:
    key, cert = tmp / "key.pem", tmp / "cert.pem"
    self_signed(key, cert)
    other_key, other_cert = tmp / "other-key.pem", tmp / "other-cert.pem"
    self_signed(other_key, other_cert)
    text = tmp / "notes.txt"
    text.write_text("not a key\n")
    locked = tmp / "locked.pem"
    shutil.copy(other_key, locked)  # out of a user's reach; as root, read and not cert's key
    locked.chmod(0)
    fifo = tmp / "fifo"
    os.mkfifo(fifo)
    return {
        "missing": (str(tmp / "nope.pem"), str(cert)),
        "a-directory": (str(tmp), str(cert)),
        "a-fifo": (str(fifo), str(cert)),  # opening it would block: never opened
        "dev-zero": ("/dev/zero", str(cert)),
        "not-pem": (str(text), str(text)),
        "etc-shadow": ("/etc/shadow", "/etc/shadow"),
        "unreadable": (str(locked), str(cert)),
        "key-of-another-cert": (str(other_key), str(cert)),
        "relative": ("key.pem", "cert.pem"),
    }


TLS_CASES = (
    "missing",
    "a-directory",
    "a-fifo",
    "dev-zero",
    "not-pem",
    "etc-shadow",
    "unreadable",
    "key-of-another-cert",
    "relative",
)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, str]]:
    return _tls_cases(tmp_path_factory.mktemp("tls"))


@pytest.mark.parametrize("case", TLS_CASES)
def test_tls_files_that_cannot_serve_are_refused_before_the_service_is_stored(
    served: Stix, tls_files: dict[str, tuple[str, str]], case: str
) -> None:
    keyfile, certfile = tls_files[case]
    doc = _doc({"tls": {"keyfile": keyfile, "certfile": certfile}})
    # raw: the CLI would make a relative path absolute (`with_local_tls`)
    body = msgspec.msgpack.encode({"type": "serve_up", "name": "hostile", "task": doc})
    reply = _send(served, body)
    assert isinstance(reply, m.ErrorReply) and reply.code == "invalid_request", reply
    assert reply.message.startswith("service.tls"), reply.message
    assert "\n" not in reply.message


def test_tls_files_that_load_pass_the_check(tls_files: dict[str, tuple[str, str]]) -> None:
    from stixd.control.serve_cmds import tls_problem

    key = Path(tls_files["key-of-another-cert"][1]).with_name("key.pem")
    assert tls_problem({"keyfile": str(key), "certfile": tls_files["missing"][1]}) is None


# -- names, replica ids, updates ----------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["../..", "", "a" * 10_240, "b" * 1000, "w\u00e9b", "-rf", "a\nb", "web/../x", "x" * 57],
    ids=["dotdot", "empty", "10kb", "1000-chars", "unicode", "dash-rf", "newline", "slash", "57"],
)
def test_a_service_name_that_cannot_be_one_is_refused(
    served: Stix, tmp_path: Path, name: str
) -> None:
    path = tmp_path / "svc.yaml"
    path.write_text(json.dumps(BASE))
    code, _, err = cli("serve", "up", "-y", f"--name={name}", str(path))
    one_line(err, 2, code, "service name")
    reply = _send(served, msgspec.msgpack.encode({"type": "serve_up", "name": name, "task": BASE}))
    assert isinstance(reply, m.ErrorReply) and "\n" not in reply.message, reply
    for args in (("status",), ("logs", "--controller", "--no-follow"), ("down", "-y")):
        code, _, err = cli("serve", *args, "--", name)
        assert code in (2, 3), err  # not a name (2), or no service of that name (3)
        one_line(err, code, code)


def test_a_taken_name_is_refused_and_the_service_keeps_its_record(
    served: Stix, tmp_path: Path
) -> None:
    path = tmp_path / "svc.yaml"
    path.write_text(json.dumps(_doc({"replicas": 3})))
    code, _, err = cli("serve", "up", "-y", "-n", "keep", str(path))
    one_line(err, 2, code, "already exists", "serve update keep")


@pytest.mark.parametrize(
    "replica_id", ["-1", "0", str(2**63), "99999999999999999999", "inf", "abc", "1e3", "nan"]
)
def test_logs_of_a_replica_id_that_is_no_number_of_one_are_refused(
    served: Stix, replica_id: str
) -> None:
    code, _, err = cli("serve", "logs", "--no-follow", "keep", replica_id)
    one_line(err, 2, code, "replica_id")


@pytest.mark.parametrize("tail", ["-1", str(2**63), "inf", "abc"])
def test_logs_with_a_tail_that_is_no_count_are_refused(served: Stix, tail: str) -> None:
    code, _, err = cli("serve", "logs", "--controller", "--no-follow", f"--tail={tail}", "keep")
    one_line(err, 2, code, "tail")


def test_a_service_whose_resources_open_10000_ports_and_name_none_is_refused(
    served: Stix, tmp_path: Path
) -> None:
    doc = _doc({"ports": None})
    doc["resources"] = {"ports": [str(p) for p in range(20_000, 30_000)]}
    path = tmp_path / "svc.yaml"
    path.write_text(json.dumps(doc))
    code, _, err = cli("serve", "up", "-y", "-n", "hostile", str(path))
    one_line(err, 2, code, "service.ports")


def test_logs_and_down_of_a_replica_the_service_does_not_have_are_refused(served: Stix) -> None:
    code, _, err = cli("serve", "logs", "--no-follow", "keep", "7")
    one_line(err, 3, code, "no replica 7")
    code, _, err = cli("serve", "down", "-y", "--replica-id", "7", "keep")
    one_line(err, 2, code, "no live replica 7")
    code, _, err = cli("serve", "down", "-y", "--replica-id", str(2**63), "keep")
    one_line(err, 2, code, "replica_id")


def test_update_of_a_missing_service_is_refused(served: Stix, tmp_path: Path) -> None:
    path = tmp_path / "svc.yaml"
    path.write_text(json.dumps(BASE))
    code, _, err = cli("serve", "update", "-y", "nosuch", str(path))
    one_line(err, 3, code, "no service 'nosuch'")


def test_an_update_that_moves_the_port_is_taken_as_skyserve_does(
    daemon: Stix, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The new version's replicas serve on the new port; the endpoint stays where it was."""
    monkeypatch.setenv("STIX_HOME", str(daemon.home))
    path = tmp_path / "svc.yaml"
    path.write_text(json.dumps(BASE))
    assert cli("serve", "up", "-y", "-n", "moving", str(path))[0] == 0
    before = {s["name"]: s for s in _services(daemon)}["moving"]
    other = free_port()
    moved = _doc({"ports": other})
    moved["run"] = f"python3 -m http.server {other}"
    path.write_text(json.dumps(moved))
    code, _, err = cli("serve", "update", "-y", "moving", str(path))
    assert code == 0, err
    after = {s["name"]: s for s in _services(daemon)}["moving"]
    assert after["version"] == 2 and after["endpoint"] == before["endpoint"]
    code, _, err = cli("serve", "down", "-y", "moving")
    assert code == 0, err
    assert [s["name"] for s in _services(daemon)] == ["keep"]


# -- deep frames --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind", ["serve_up", "serve_update", "serve_status", "serve_logs", "serve_down"]
)
def test_a_serve_request_nested_1000_deep_is_refused_as_malformed(served: Stix, kind: str) -> None:
    bomb = msgspec.msgpack.encode("BOMB")
    requests: dict[str, dict[str, Any]] = {
        "serve_up": {"task": {"envs": {"A": "BOMB"}}, "config": []},
        "serve_update": {"name": "keep", "task": {"service": "BOMB"}},
        "serve_status": {"names": ["BOMB"]},
        "serve_logs": {"name": "BOMB"},
        "serve_down": {"names": ["keep"], "replica_id": "BOMB"},
    }
    fields = requests[kind]
    body = msgspec.msgpack.encode({"type": kind, **fields})
    reply = _send(served, body.replace(bomb, b"\x91" * 1000 + b"\xc0"))
    assert isinstance(reply, m.ErrorReply) and reply.code == "protocol", reply
    assert "\n" not in reply.message


# -- the replica bound --------------------------------------------------------------------------


def _service(text: str) -> Service:
    task = from_yaml(text)
    assert isinstance(task, Task) and task.service is not None
    return task.service


FIXED_AT_THE_BOUND = f"service: {{replicas: {bounds.MAX_REPLICAS}, ports: 80}}\nrun: x\n"


def test_replicas_at_the_bound_are_taken_and_one_past_it_is_refused() -> None:
    at = FIXED_AT_THE_BOUND
    assert effective_scaling(_service(at)).max_replicas == bounds.MAX_REPLICAS
    with pytest.raises(InvalidTask, match=r"service\.replicas: expected an integer <= 1000,"):
        from_yaml(at.replace(str(bounds.MAX_REPLICAS), str(bounds.MAX_REPLICAS + 1)))


def test_the_autoscaler_at_the_bound_never_launches_past_max_replicas() -> None:
    text = (
        "service:\n  ports: 80\n  replica_policy: {min_replicas: 0, "
        f"max_replicas: {bounds.MAX_REPLICAS}, target_qps_per_replica: 0.001, "
        "upscale_delay_seconds: 0}\nrun: x\n"
    )
    fleet = FakeFleet(effective_scaling(_service(text)))
    fleet.arrivals = burst(600_000, 0.0, 60.0)  # 10,000 QPS: ten million replicas' worth
    most = 0
    for i in range(10):
        fleet.round(60.0 + 20 * i)
        most = max(most, len(fleet.live()))
    assert most == bounds.MAX_REPLICAS
    fixed = effective_scaling(_service(FIXED_AT_THE_BOUND))
    plan = decide(fixed, [], [], 0.0, ScalerMemory(), version=1)
    assert len(plan.launch) == bounds.MAX_REPLICAS


def test_a_real_stixctl_process_refuses_in_one_line_too(served: Stix, tmp_path: Path) -> None:
    """The in-process calls above are the CLI's `main`; once through the real entry point."""
    path = tmp_path / "svc.yaml"
    path.write_text(_yaml(_doc(_probe(headers={"X-A": "v\r\nX-Evil: 1"}))))
    proc = subprocess.run(
        [sys.executable, "-m", "stixctl", "serve", "up", "-y", "-n", "hostile", str(path)],
        env=served.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    one_line(proc.stderr, 2, proc.returncode, "headers.X-A")
