"""Services end to end: a real daemon, the real `local` infra, replicas that are real HTTP
servers on 127.0.0.1, probed by the replica actors over real HTTP.

The load balancer here is tests/fake_balancers.py's FAKE (it records the ready sets pushed to
it and proxies nothing): the real balancer process is built beside this and replaces it in the
end-to-end tests once merged. What the tests check of the data path is what the daemon pushes.
"""

from __future__ import annotations

import os
import signal
import socket
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stixproto.errors import InvalidRequest
from tests.conftest import Stix, processes_mentioning, wait_until
from tests.fake_balancers import ENV, last_ready, last_spec, pushes
from tests.test_secrets_at_rest import _files_holding, _rows_holding

SERVER = """\
import http.server, json, os, sys, time
port = int(os.environ["STIX_SERVE_PORT"])
print("replica", os.environ["SKYPILOT_SERVE_REPLICA_ID"], "starts on", port, flush=True)
rid = os.environ["SKYPILOT_SERVE_REPLICA_ID"]
time.sleep(float(os.environ.get("START_DELAY_" + rid, os.environ.get("START_DELAY", "0"))))

class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
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


def serving(stix: Stix, **settings: str) -> Stix:
    """A daemon with the fake balancers and fast probes and rounds."""
    stix.env.update(ENV)
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
    assert record["endpoint"] == "http://127.0.0.1:9"
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
    endpoint = stix.run("serve", "status", "web", "--endpoint", check=True).stdout.strip()
    assert endpoint == "http://127.0.0.1:9"
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
    assert pushes(stix.home, "web")[-1].get("stopped") is True
    with pytest.raises(OSError):
        get(url)


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
    # the ready set went from none yet to [1], to [] the moment 1 failed, to [2]
    sets = [[r["id"] for r in p["ready"]] for p in pushes(stix.home, "web") if "ready" in p]
    assert sets == [[], [1], [], [2]]
    taken_out = [p["at"] for p in pushes(stix.home, "web") if "ready" in p][2] - killed_at
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
    lb = stix.home / "serve" / "web" / "load_balancer.log"
    lb.write_text("one\ntwo\n")
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
    for key in ("STIX_HOME", *ENV, "STIX__DAEMON__SERVE_PROBE_SECONDS"):
        monkeypatch.setenv(key, stix.env[key])
    monkeypatch.setenv(
        "STIX__DAEMON__SERVE_ROUND_SECONDS", stix.env["STIX__DAEMON__SERVE_ROUND_SECONDS"]
    )
    client, aclient = Client(stix.home), AsyncClient(stix.home)
    started = client.serve_up(service_yaml(task_file, free_port()), "web")
    assert (started.name, started.version, started.endpoint) == ("web", 1, "http://127.0.0.1:9")
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
    stix.run("serve", "up", "-y", "-n", "api", str(path), check=True, cwd=path.parent)
    spec = last_spec(stix.home, "api")
    assert spec is not None
    assert (spec["service"], spec["policy"], spec["api_keys"]) == (
        "api",
        "round_robin",
        ["k1", "k2"],
    )
    assert spec["stream_timeout_seconds"] == 30.0
    assert spec["tls_keyfile"] == str(path.parent / "key.pem")
    assert spec["tls_certfile"] == str(Path("~/cert.pem").expanduser())
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
