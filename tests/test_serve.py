"""Services end to end: a real daemon, the real `local` infra, replicas that are real HTTP
servers on every address of their node, probed by the replica actors over real HTTP, and the
real balancer process (`python -m stixd.balancer`) in front of them.

What the tests check of the data path they read from the real parts: requests through the
service's endpoint, the rotation the balancer holds (asked over its control socket), and the
ready sets the daemon logged as pushed (`ready_set` in stixd.log).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from stixd.balancer.layout import Layout, decode_spec
from stixd.balancer.link import BROKEN, show_ready
from stixproto.errors import InvalidRequest
from tests.conftest import Stix, pid_alive, processes_mentioning, wait_until
from tests.test_secrets_at_rest import _files_holding, _rows_holding

SERVER = """\
import http.server, json, os, socket, struct, sys, time
port = int(os.environ["STIX_SERVE_PORT"])
print("replica", os.environ["SKYPILOT_SERVE_REPLICA_ID"], "starts on", port, flush=True)
rid = os.environ["SKYPILOT_SERVE_REPLICA_ID"]
time.sleep(float(os.environ.get("START_DELAY_" + rid, os.environ.get("START_DELAY", "0"))))

class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if os.environ.get("HITS"):
            with open(os.environ["HITS"], "a") as hits: hits.write(rid + "\\n")
        if os.path.exists(os.environ.get("RESET_FLAG", "/nonexistent") + "-" + rid):
            # a reset, as a crashing server gives: the balancer ejects the replica
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close(); self.close_connection = True; return
        if os.path.exists(os.environ.get("FAIL_FLAG", "/nonexistent") + "-" + rid):
            self.send_response(503); self.end_headers(); return
        body = (os.environ.get("REPLY", "hello") + " " + os.environ["SKYPILOT_SERVE_REPLICA_ID"])
        self.send_response(200); self.end_headers(); self.wfile.write(body.encode())
    def do_POST(self):
        data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        ok = self.path == "/health" and self.headers.get("X-Token") == "t1"
        ok = ok and json.loads(data) == {"ping": 1}
        self.send_response(200 if ok else 401); self.end_headers()
    def log_message(self, *a): pass

http.server.HTTPServer(("", port), H).serve_forever()  # all addresses: a node may have its own
"""


def _environ(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def balancer_layout(home: Path, service: str) -> Layout:
    return Layout((home / "serve" / service).resolve())


def last_ready(home: Path, service: str) -> list[dict[str, Any]] | None:
    """The rotation `service`'s running balancer holds now, asked over its control socket:
    `[{id, url, version}]`, or None when no balancer answers (none yet, or stopped)."""
    try:
        shown = anyio.run(show_ready, balancer_layout(home, service).control)
    except BROKEN:
        return None
    return [{"id": r.replica_id, "url": r.url, "version": r.version} for r in shown]


def last_spec(home: Path, service: str) -> dict[str, Any] | None:
    """The spec the service's balancer was started with (its `spec.json`), as a dict."""
    path = balancer_layout(home, service).spec
    if not path.exists():
        return None
    found: dict[str, Any] = json.loads(
        json.dumps(dataclasses.asdict(decode_spec(path.read_bytes())))
    )
    return found


def pushes(home: Path, service: str) -> list[dict[str, Any]]:
    """Every ready set the daemon logged as pushed to `service`'s balancer, oldest first
    (`{"at": ISO time, "ready": [replica ids]}`), across daemon restarts (one log)."""
    found = []
    log = home / "stixd.log"
    for line in log.read_text().splitlines() if log.exists() else []:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("event") == "ready_set" and entry.get("id") == service:
            ids = [int(x) for x in entry["replicas"].split(", ") if x != "none"]
            found.append({"at": entry.get("timestamp"), "ready": ids})
    return found


def self_signed(key: Path, cert: Path) -> None:
    """A key and a self-signed certificate for 127.0.0.1 (skips the test without openssl)."""
    if shutil.which("openssl") is None:
        pytest.skip("no openssl to make a certificate")
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )


def endpoint(stix: Stix, name: str) -> str:
    url: str = stix.run("serve", "status", name, "--endpoint", check=True).stdout.strip()
    return url


def serving(stix: Stix, **settings: str) -> Stix:
    """A daemon with fast probes and rounds (and the real balancers)."""
    stix.env["STIX__DAEMON__SERVE_PROBE_SECONDS"] = settings.pop("probe", "0.3")
    stix.env["STIX__DAEMON__SERVE_ROUND_SECONDS"] = settings.pop("round", "0.5")
    return stix


def service_yaml(
    task_file: Callable[[str], Path],
    port: int,
    *,
    replicas: int = 1,
    delay: float = 0,
    reply: str = "hello",
    initial_delay: float = 60,
    run: str | None = None,
) -> Path:
    server = task_file(SERVER).with_name("server.py")
    server.write_text(SERVER)
    command = run or f"python3 {server}"
    return task_file(
        "service:\n"
        f"  readiness_probe: {{path: /, initial_delay_seconds: {initial_delay}, "
        "timeout_seconds: 2}\n"
        f"  replicas: {replicas}\n"
        f"  ports: {port}\n"
        f"envs:\n  START_DELAY: '{delay}'\n  REPLY: {reply}\n"
        f"run: {command}\n"
    )


def status(stix: Stix, name: str) -> dict[str, Any] | None:
    found = [s for s in stix.json("serve", "status") if s["name"] == name]
    return found[0] if found else None


def replica_states(stix: Stix, name: str) -> dict[int, str]:
    s = status(stix, name)
    return {r["replica_id"]: r["status"] for r in s["replicas"]} if s else {}


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        text: str = resp.read().decode()
        return text


def up(stix: Stix, path: Path, name: str) -> None:
    stix.run("serve", "up", "-y", "-n", name, str(path), check=True)


def test_service_comes_up_ready_and_its_replica_answers_where_the_balancer_is_told(
    stix: Stix, task_file: Callable[[str], Path]
) -> None:
    serving(stix)
    port = free_port()
    out = stix.run("serve", "up", "-y", "-n", "web", str(service_yaml(task_file, port)))
    assert out.returncode == 0, out.stderr
    assert "Service web is" in out.stdout
    states = [status(stix, "web")["status"]]  # type: ignore[index]
    wait_until(lambda: status(stix, "web")["status"] == "READY", timeout=40)  # type: ignore[index]
    assert states[0] in ("REPLICA_INIT", "READY")
    ready = wait_until(lambda: last_ready(stix.home, "web"), timeout=10)
    assert [r["id"] for r in ready] == [1]
    url = ready[0]["url"]  # the node's own address where it has a namespace, else this machine's
    assert url.startswith("http://") and url.endswith(f":{port}")
    assert get(ready[0]["url"]) == "hello 1"
    record = status(stix, "web")
    assert record is not None
    lb = record["endpoint"]
    assert lb.startswith("http://127.0.0.1:") and not lb.endswith(f":{port}")
    assert get(lb + "/") == "hello 1"  # through the balancer
    assert record["replicas"][0]["cluster"] == "web-1"
    assert record["replicas"][0]["infra"] == "local"
    assert record["policy"] == "Fixed 1 replica"
    owned = stix.run("down", "-y", "web-1")  # the service would replace it: refused by name
    assert owned.returncode == 2 and "serve down web" in owned.stderr
    assert stix.clusters()["web-1"]["owner"] == "service web"
    text = stix.run("serve", "status", check=True).stdout
    assert text.splitlines()[0] == "Services"
    assert "NAME" in text and "UPTIME" in text and "REPLICAS" in text and "ENDPOINT" in text
    assert "SERVICE_NAME" in text and "LAUNCHED" in text and "RESOURCES" in text
    assert "1/1" in text
    verbose = stix.run("serve", "status", "-v", check=True).stdout
    assert "Fixed 1 replica" in verbose and "least_load" in verbose
    assert endpoint(stix, "web") == lb
    balancer = int(balancer_layout(stix.home, "web").pid.read_text())
    history = stix.json("events", "--kind", "service", "web")
    moves = [e["to_state"] for e in history if e["kind"] == "service" and e["to_state"]]
    assert moves == ["CONTROLLER_INIT", "REPLICA_INIT", "READY"]
    replica = [e["to_state"] for e in history if e["kind"] == "replica" and e["to_state"]]
    assert replica == ["PENDING", "PROVISIONING", "STARTING", "READY"]
    # down: the replica's cluster and every row go, and the balancer is stopped
    out = stix.run("serve", "down", "-y", "web", check=True)
    assert "Service web is down." in out.stdout
    assert stix.json("serve", "status") == []
    assert "web-1" not in stix.clusters()
    wait_until(lambda: not pid_alive(balancer), timeout=10)  # the balancer is stopped
    assert last_ready(stix.home, "web") is None
    for gone in (url, lb):
        with pytest.raises(OSError):
            get(gone)


def test_a_task_without_a_service_section_is_refused_in_one_line(
    stix: Stix, task_file: Callable[[str], Path]
) -> None:
    serving(stix)
    out = stix.run("serve", "up", "-y", "-n", "x", str(task_file("run: echo hi\n")))
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1
    assert "no `service:` section" in out.stderr
    out = stix.run(
        "serve", "update", "-y", "nope", str(task_file("run: x\nservice: {ports: 80}\n"))
    )
    assert out.returncode == 3 and "no service 'nope'" in out.stderr
    out = stix.run("serve", "up", "-y", "-n", "1bad", str(task_file("run: x\n")))
    assert out.returncode == 2 and "service name '1bad' is not valid" in out.stderr


def test_a_replica_whose_server_dies_is_failed_torn_down_and_replaced(
    stix: Stix, task_file: Callable[[str], Path]
) -> None:
    serving(stix)
    port = free_port()
    up(stix, service_yaml(task_file, port), "web")
    wait_until(lambda: last_ready(stix.home, "web"), timeout=40)
    server = [p for p in processes_mentioning("server.py") if f"{stix.home}" in _environ(p)]
    assert server, "the replica's server process is not found"
    killed_at = time.time()
    for pid in server:
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: last_ready(stix.home, "web") == [], timeout=10, interval=0.01)
    taken_out = time.time() - killed_at
    wait_until(lambda: replica_states(stix, "web").get(1) == "FAILED", timeout=30)
    ready = wait_until(
        lambda: [r["id"] for r in last_ready(stix.home, "web") or []] == [2], timeout=40
    )
    assert ready
    record = status(stix, "web")
    assert record is not None and record["status"] == "READY"
    assert "ended" in record["replicas"][0]["failure_reason"]
    assert "web-1" not in stix.clusters() and "web-2" in stix.clusters()
    assert get(last_ready(stix.home, "web")[0]["url"]) == "hello 2"  # type: ignore[index]
    assert get(endpoint(stix, "web") + "/") == "hello 2"
    # the ready set went from none yet to [1], to [] the moment 1 failed, to [2]
    sets = [p["ready"] for p in pushes(stix.home, "web")]
    assert sets == [[], [1], [], [2]]
    assert 0 < taken_out < 3.0, taken_out  # the command's exit is told at once
    print(f"replica death to out of rotation: {taken_out:.3f} s")


def test_logs_of_a_replica_and_of_the_controller(
    stix: Stix, task_file: Callable[[str], Path]
) -> None:
    serving(stix)
    up(stix, service_yaml(task_file, free_port()), "web")
    wait_until(lambda: last_ready(stix.home, "web"), timeout=40)
    out = stix.run("serve", "logs", "web", "1", "--no-follow", check=True)
    assert "replica 1 starts on" in out.stdout
    out = stix.run("serve", "logs", "web", "--controller", "--no-follow", check=True)
    assert "service CONTROLLER_INIT -> REPLICA_INIT" in out.stdout
    assert "replica 1 STARTING -> READY: readiness probe passed" in out.stdout
    lb = balancer_layout(stix.home, "web").log  # where the balancer writes: balancer.log
    wait_until(lambda: "serving" in lb.read_text(), timeout=10)
    (lb.parent / "older.log").write_text("not the balancer's\n")  # read by name, not guessed
    out = stix.run("serve", "logs", "web", "--load-balancer", "--no-follow", check=True)
    assert out.stdout == lb.read_text() and "balancer" in out.stdout and "serving" in out.stdout
    with lb.open("a") as f:
        f.write("one\ntwo\n")
    out = stix.run("serve", "logs", "web", "--load-balancer", "--no-follow", "--tail", "1")
    assert out.stdout == "two\n"
    out = stix.run("serve", "logs", "web")
    assert out.returncode == 2 and "name a replica" in out.stderr


def test_down_of_one_replica_replaces_it(stix: Stix, task_file: Callable[[str], Path]) -> None:
    serving(stix)
    up(stix, service_yaml(task_file, free_port()), "web")
    wait_until(lambda: last_ready(stix.home, "web"), timeout=40)
    stix.run("serve", "down", "-y", "web", "--replica-id", "1", check=True)
    wait_until(lambda: [r["id"] for r in last_ready(stix.home, "web") or []] == [2], timeout=40)
    wait_until(lambda: 1 not in replica_states(stix, "web"), timeout=20)  # shut down: no row
    assert "web-1" not in stix.clusters()


def test_the_sdk_serves_sync_and_async_as_the_cli_does(
    stix: Stix, task_file: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    from stixctl.sdk import AsyncClient, Client

    serving(stix)
    for key in ("STIX_HOME", "STIX__DAEMON__SERVE_PROBE_SECONDS"):
        monkeypatch.setenv(key, stix.env[key])
    monkeypatch.setenv(
        "STIX__DAEMON__SERVE_ROUND_SECONDS", stix.env["STIX__DAEMON__SERVE_ROUND_SECONDS"]
    )
    client, aclient = Client(stix.home), AsyncClient(stix.home)
    started = client.serve_up(service_yaml(task_file, free_port()), "web")
    assert (started.name, started.version) == ("web", 1)
    assert started.endpoint == endpoint(stix, "web")
    wait_until(lambda: client.serve_status("web")[0].status == "READY", timeout=40)
    (record,) = asyncio.run(aclient.serve_status(["web"]))
    assert [(r.replica_id, r.status) for r in record.replicas] == [(1, "READY")]
    assert "replica 1 starts on" in "".join(client.serve_logs("web", 1))

    async def controller() -> str:
        return "".join([c async for c in aclient.serve_logs("web", controller=True)])

    assert "STARTING -> READY" in asyncio.run(controller())
    with pytest.raises(InvalidRequest, match="replica_id"):
        client.serve_logs("web")
    report = asyncio.run(aclient.serve_down("web"))
    assert [(r.service, r.status) for r in report.rows] == [("web", "DOWN")]
    assert client.serve_status() == []


def test_a_service_whose_row_is_damaged_is_shown_and_down_removes_it_with_its_replicas(
    stix: Stix, task_file: Callable[[str], Path]
) -> None:
    import sqlite3

    serving(stix)
    up(stix, service_yaml(task_file, free_port()), "web")
    wait_until(lambda: last_ready(stix.home, "web"), timeout=40)
    stix.run("daemon", "stop", check=True)
    with sqlite3.connect(stix.home / "state.db") as db:
        db.execute("UPDATE actors SET spec='{\"versions\": 7}' WHERE kind='service'")
    assert status(stix, "web") is not None  # listed, not hidden
    out = stix.run("serve", "down", "-y", "web", check=True)
    assert "could not run" in out.stdout
    wait_until(lambda: stix.json("serve", "status") == [], timeout=30)
    wait_until(lambda: "web-1" not in stix.clusters(), timeout=30)


def test_a_service_scaled_to_zero_has_no_replica(
    stix: Stix, task_file: Callable[[str], Path]
) -> None:
    serving(stix)
    path = service_yaml(task_file, free_port())
    path.write_text(
        path.read_text().replace("  replicas: 1\n", "  replica_policy: {min_replicas: 0}\n")
    )
    up(stix, path, "idle")
    wait_until(lambda: status(stix, "idle")["status"] == "NO_REPLICA", timeout=20)  # type: ignore[index]
    assert status(stix, "idle")["replicas"] == []  # type: ignore[index]
    assert last_ready(stix.home, "idle") == []


def test_down_of_a_service_with_a_damaged_replica_row_ends_and_frees_its_cluster(
    stix: Stix, task_file: Callable[[str], Path]
) -> None:
    import sqlite3

    serving(stix)
    up(stix, service_yaml(task_file, free_port()), "web")
    wait_until(lambda: last_ready(stix.home, "web"), timeout=40)
    stix.run("daemon", "stop", check=True)
    with sqlite3.connect(stix.home / "state.db") as db:
        db.execute("UPDATE actors SET data='{\"probe_failures\": -1}' WHERE kind='replica'")
    out = stix.run("serve", "down", "-y", "web", timeout=60)
    assert out.returncode == 0, out.stderr
    assert stix.json("serve", "status") == []
    # no replica owns its cluster any more: the user can take it down
    stix.run("down", "-y", "web-1", check=True)
    assert "web-1" not in stix.clusters()


def test_a_services_secret_leaves_no_copy_in_the_store_once_it_is_down(
    stix: Stix, task_file: Callable[[str], Path]
) -> None:
    serving(stix)
    secret = "s3cr3t-" + "x" * 20
    path = service_yaml(task_file, free_port())
    path.write_text(path.read_text() + f"secrets:\n  TOKEN: {secret}\n")
    up(stix, path, "web")
    wait_until(lambda: last_ready(stix.home, "web"), timeout=40)
    stix.run("serve", "down", "-y", "web", check=True)
    assert _rows_holding(stix.home / "state.db", secret) == []
    assert _files_holding(stix.home, secret) == []  # no old copy in freed pages or the WAL


def test_the_balancer_gets_the_services_policy_keys_tls_and_timeout(
    stix: Stix, task_file: Callable[[str], Path]
) -> None:
    serving(stix)
    path = task_file(
        "service:\n"
        "  readiness_probe: /\n"
        "  ports: 8080\n"
        "  replicas: 0\n"
        "  load_balancing_policy: round_robin\n"
        "  auth: {api_keys: [k1, k2]}\n"
        "  tls: {keyfile: key.pem, certfile: ~/cert.pem}\n"
        "  load_balancer: {stream_timeout_seconds: 30}\n"
        "run: serve\n"
    )
    home = path.parent / "home"  # `~` of the client that reads the task
    home.mkdir()
    stix.env["HOME"] = str(home)
    self_signed(path.parent / "key.pem", home / "cert.pem")
    stix.run("serve", "up", "-y", "-n", "api", str(path), check=True, cwd=path.parent)
    assert endpoint(stix, "api").startswith("https://127.0.0.1:")
    spec = last_spec(stix.home, "api")
    assert spec is not None
    assert (spec["service"], spec["policy"], spec["api_keys"]) == (
        "api",
        "round_robin",
        ["k1", "k2"],
    )
    assert spec["stream_timeout_seconds"] == 30.0
    assert spec["tls_keyfile"] == str(path.parent / "key.pem")
    assert spec["tls_certfile"] == str(home / "cert.pem")
    bad = task_file("service: {ports: 80, auth: {api_keys: []}}\nrun: x\n")
    out = stix.run("serve", "up", "-y", "-n", "bad", str(bad))
    assert out.returncode == 2 and "service.auth.api_keys" in out.stderr


def test_a_replica_left_failed_cleanup_keeps_the_service_until_down_purge(
    stix: Stix, task_file: Callable[[str], Path]
) -> None:
    import sqlite3

    serving(stix)
    up(stix, service_yaml(task_file, free_port()), "web")
    wait_until(lambda: last_ready(stix.home, "web"), timeout=40)
    stix.run("daemon", "stop", check=True)
    with sqlite3.connect(stix.home / "state.db") as db:  # as a teardown that failed leaves it
        db.execute("UPDATE actors SET state='FAILED_CLEANUP', terminal=1 WHERE kind='replica'")
    out = stix.run("serve", "down", "-y", "web")
    assert out.returncode == 1
    assert "FAILED_CLEANUP" in out.stdout and "serve down --purge" in out.stdout
    assert status(stix, "web")["status"] == "FAILED_CLEANUP"  # type: ignore[index]
    out = stix.run("serve", "down", "-y", "--purge", "web", check=True)
    assert "Service web is down." in out.stdout
    assert stix.json("serve", "status") == []
    stix.run("down", "-y", "web-1", check=True)  # forgotten by the service: the user's to end
