"""The whole local scenario from a remote client (issue 18's test): `stixctl` with
STIX_API_SERVER and a user's STIX_API_TOKEN in its environment, against a real stixd serving
HTTP on loopback, on the local infra: launch with a workdir, exec, logs, queue, managed jobs
(launch, queue, logs) and a service (up, status, its endpoint answering, logs, update, down);
and the endpoint such a client is shown when the balancers listen on every address."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from stixd.control.reached import endpoint
from tests.conftest import Stix, wait_until
from tests.test_http_api import Remote, make_token, serve_http
from tests.test_serve import free_port, serving

SERVER = """\
import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = open("greeting.txt").read().strip() + " " + os.environ["SKYPILOT_SERVE_REPLICA_ID"]
        self.send_response(200); self.end_headers(); self.wfile.write(body.encode())
    def log_message(self, *a): pass
http.server.HTTPServer(("", int(os.environ["STIX_SERVE_PORT"])), H).serve_forever()
"""


def _json(remote: Remote, *args: str) -> Any:
    return json.loads(remote.run(*args, "--json", check=True).stdout)


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        text: str = resp.read().decode()
        return text


@pytest.mark.slow
def test_a_remote_user_runs_the_local_scenario_over_http(stix: Stix, tmp_path: Path) -> None:
    stix.env["STIX__DAEMON__BALANCER_HOST"] = "127.0.0.2"  # still loopback, not the default
    url = serve_http(serving(stix))
    alice = Remote(stix, url, make_token(stix, "alice", "user"))
    project = tmp_path / "project"  # the client's own directory: the server never reads it
    project.mkdir()
    (project / "greeting.txt").write_text("hello from the workdir\n")
    (project / "server.py").write_text(SERVER)

    launched = alice.run(
        "launch", "-c", "rc", "-y", "--workdir", str(project), "cat greeting.txt", check=True
    )
    assert "hello from the workdir" in launched.stdout
    ran = alice.run("exec", "rc", "echo exec-$(cat greeting.txt | wc -w)", check=True)
    assert "exec-4" in ran.stdout
    assert [j["status"] for j in _json(alice, "queue", "rc")] == ["SUCCEEDED", "SUCCEEDED"]
    assert "hello from the workdir" in alice.run("logs", "rc", "1", check=True).stdout
    assert "exec-4" in alice.run("logs", "rc").stdout  # the latest job, followed to its end

    task = project / "job.yaml"
    task.write_text("workdir: .\nrun: echo managed $(cat greeting.txt)\n")
    alice.stix.run("jobs", "launch", "-n", "mj", "-y", "-d", str(task), check=True, cwd=project)
    job = wait_until(
        lambda: [j for j in _json(alice, "jobs", "queue") if j["status"] == "SUCCEEDED"],
        timeout=60,
    )[0]
    logs = alice.run("jobs", "logs", str(job["job_id"]), check=True).stdout
    assert "managed hello from the workdir" in logs

    port = free_port()
    service = project / "service.yaml"
    service.write_text(
        "workdir: .\n"
        "service:\n"
        "  readiness_probe: {path: /, initial_delay_seconds: 60, timeout_seconds: 2}\n"
        "  replicas: 1\n"
        f"  ports: {port}\n"
        "run: python3 server.py\n"
    )
    alice.stix.run("serve", "up", "-y", "-n", "svc", str(service), check=True, cwd=project)
    ready = wait_until(
        lambda: [s for s in _json(alice, "serve", "status") if s["status"] == "READY"],
        timeout=60,
    )[0]
    assert _get(ready["endpoint"]).startswith("hello from the workdir")
    assert ready["endpoint"].startswith("http://127.0.0.2:")  # daemon.balancer_host
    controller = alice.run("serve", "logs", "svc", "--controller", "--no-follow", check=True)
    assert "REPLICA_INIT -> READY" in controller.stdout
    (project / "greeting.txt").write_text("hello again\n")  # uploaded anew for version 2
    alice.stix.run("serve", "update", "svc", "-y", str(service), check=True, cwd=project)
    wait_until(lambda: _get(ready["endpoint"]).startswith("hello again"), timeout=60)
    alice.run("serve", "down", "svc", "-y", check=True)
    wait_until(lambda: _json(alice, "serve", "status") == [], timeout=60)
    alice.run("down", "rc", "-y", check=True)


def test_a_remote_client_is_shown_a_wildcard_balancers_endpoint_at_the_host_it_reached() -> None:
    local = "http://127.0.0.1:30001"
    assert endpoint(local, "0.0.0.0", "api.team.example") == "http://api.team.example:30001"
    assert endpoint(local, "::", "2001:db8::7") == "http://[2001:db8::7]:30001"
    assert endpoint(local, "0.0.0.0", None) == local  # the socket: this machine
    assert endpoint(local, "127.0.0.1", "api.team.example") == local  # not reachable elsewhere
    assert endpoint(local, "0.0.0.0", "evil/x?y") == local  # not a host: left alone
    assert endpoint("https://10.0.0.5:443", "0.0.0.0", "api") == "https://10.0.0.5:443"
