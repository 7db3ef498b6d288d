"""The HTTP API beside the socket: a real daemon serving real HTTP on loopback, driven by
stixctl (and the SDK) as a remote client with tokens made through `stixctl tokens create`."""

from __future__ import annotations

import http.client
import http.server
import json
import os
import signal
import socket
import stat
import struct
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from stixproto import PROTOCOL_VERSION
from stixproto import messages as m
from stixproto.edge import request_body
from stixproto.task import Task
from tests.conftest import Stix, wait_until

FRAMES = "application/x-stix-frames"


LOCAL_FOR_USERS = "workspaces:\n  default:\n    allowed_clouds: [local, fake]\n"
"""A remote user may launch on the server's own machine only where a workspace names `local`
(stixd.control.workspaces): these tests run the local infra as remote users; the tests that
share this server (dashboard, metrics) launch on the fake cloud too."""


def serve_http(stix: Stix, config: str = LOCAL_FOR_USERS) -> str:
    """Start the daemon serving HTTP on a free loopback port, with `config` as its user
    config; its URL."""
    with (stix.home / "config.yaml").open("a") as f:
        f.write(config)
    stix.run("api", "start", "--port", "0", check=True)
    port = json.loads((stix.home / "api_server.json").read_text())["port"]
    return f"http://127.0.0.1:{port}"


def make_token(stix: Stix, user: str, role: str) -> str:
    """A token of a new user with `role`, made as an admin would, over the socket."""
    stix.run("users", "create", user, "--role", role, check=True)
    out = stix.run("tokens", "create", user, check=True).stdout
    return out.strip()


def remote_env(stix: Stix, url: str, token: str | None) -> dict[str, str]:
    env = {**stix.env, "STIX_API_SERVER": url}
    env.pop("STIX_API_TOKEN", None)
    if token is not None:
        env["STIX_API_TOKEN"] = token
    return env


class Remote:
    """stixctl run with the API server in its environment."""

    def __init__(self, stix: Stix, url: str, token: str | None) -> None:
        self.stix = Stix(stix.home)
        self.stix.env = remote_env(stix, url, token)

    def run(self, *args: str, check: bool = False) -> Any:
        return self.stix.run(*args, check=check)


def health(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "/api/v1/health", timeout=5) as resp:
        answer: dict[str, Any] = json.loads(resp.read())
        return answer


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, list[Any]]:
    """A raw POST to the request endpoint; its status and the frames of its answer."""
    port = int(url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", "/api/v1/request", body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        assert resp.getheader("Content-Type") == FRAMES
    finally:
        conn.close()
    frames = []
    while data:
        (n,) = struct.unpack(">I", data[:4])
        frames.append(msgspec.msgpack.decode(data[4 : 4 + n], type=m.ServerMessage))
        data = data[4 + n :]
    return resp.status, frames


def headers(token: str | None, protocol: int = PROTOCOL_VERSION) -> dict[str, str]:
    h = {"Content-Type": FRAMES, "Stix-Protocol": str(protocol)}
    if token:
        h["Authorization"] = f"Bearer {token}"
    return h


def one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    return lines[0]


@pytest.fixture
def served(stix: Stix) -> tuple[Stix, str]:
    return stix, serve_http(stix)


def test_status_launch_logs_and_queue_work_over_http_with_a_user_token(
    served: tuple[Stix, str],
) -> None:
    stix, url = served
    remote = Remote(stix, url, make_token(stix, "alice", "user"))
    assert "No existing clusters" in remote.run("status", check=True).stdout
    launched = remote.run("launch", "-c", "web", "-y", "echo from-remote; echo second", check=True)
    assert "from-remote" in launched.stdout and "second" in launched.stdout  # streamed live
    assert "SUCCEEDED" in launched.stderr
    queue = remote.run("queue", "web", check=True).stdout
    assert "SUCCEEDED" in queue
    assert "from-remote" in remote.run("logs", "web", "1", check=True).stdout
    assert "web" in remote.run("status", check=True).stdout
    info = one_line(remote.run("api", "info", check=True).stdout)
    assert "you are alice (user)" in info and url in info


def test_api_login_keeps_the_token_private_and_sends_every_command_there(
    served: tuple[Stix, str],
) -> None:
    stix, url = served
    token = make_token(stix, "bob", "user")
    client = Stix(stix.home)  # the same home: the login file sits beside the daemon's files
    login = client.run("api", "login", url, "--token", token, check=True)
    assert token not in login.stdout + login.stderr
    assert "logged in to" in login.stdout and "as bob (user)" in login.stdout
    saved = client.home / "api_login.json"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert "you are bob (user)" in client.run("api", "info", check=True).stdout
    client.run("launch", "-c", "b1", "-y", "echo via-login", check=True)
    assert "via-login" in client.run("logs", "b1", "1", check=True).stdout
    assert "healthy" in client.run("api", "status", check=True).stdout
    assert "logged out of" in client.run("api", "logout", check=True).stdout
    assert not saved.exists()
    local = one_line(client.run("api", "info", check=True).stdout)
    assert "local socket" in local and "(admin)" in local


def test_no_token_a_bad_token_and_a_viewer_each_get_one_line(served: tuple[Stix, str]) -> None:
    stix, url = served
    viewer = make_token(stix, "vera", "viewer")
    none = Remote(stix, url, None).run("status")
    assert none.returncode != 0
    assert "needs a token" in one_line(none.stderr)
    bad = Remote(stix, url, "stix_0123456789ab_" + "x" * 43).run("status")
    assert bad.returncode != 0 and "unknown, revoked or rotated" in one_line(bad.stderr)
    looks = Remote(stix, url, viewer).run("status", check=True)
    assert "No existing clusters" in looks.stdout
    refused = Remote(stix, url, viewer).run("launch", "-c", "v", "-y", "echo no")
    assert refused.returncode != 0
    assert "viewer" in one_line(refused.stderr)
    assert "Traceback" not in none.stderr + bad.stderr + refused.stderr
    status, frames = post(url, request_body(m.Status()), headers(None))
    assert status == 401 and isinstance(frames[0], m.ErrorReply)
    status, frames = post(
        url, request_body(m.Launch(task=Task(run="echo no"), cluster="v")), headers(viewer)
    )
    assert status == 403 and frames[0].code == "permission_denied"


class _Proxy(http.server.BaseHTTPRequestHandler):
    """An SSO proxy: every request gets its HTML login page (or a redirect to it)."""

    def _answer(self) -> None:
        if self.path.startswith("/redirect"):
            self.send_response(302)
            self.send_header("Location", "https://sso.example.com/login")
            self.end_headers()
            return
        page = b"<html><body><form>Sign in</form></body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)

    do_GET = do_POST = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def proxy() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Proxy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_a_login_page_of_a_proxy_is_named_instead_of_a_parse_error(stix: Stix, proxy: str) -> None:
    for endpoint in (proxy, f"{proxy}/redirect"):
        login = stix.run("api", "login", endpoint, "--token", "stix_whatever")
        assert login.returncode != 0
        line = one_line(login.stderr)
        assert f"authentication required by a proxy in front of {endpoint};" in line
        assert not (stix.home / "api_login.json").exists()
    command = Remote(stix, proxy, "t").run("status")
    assert "authentication required by a proxy" in one_line(command.stderr)


def test_a_client_that_leaves_mid_log_stream_frees_its_request(served: tuple[Stix, str]) -> None:
    stix, url = served
    remote = Remote(stix, url, make_token(stix, "carl", "user"))
    remote.run(
        "launch", "-c", "tick", "-y", "-d", "while true; do echo tick; sleep 0.2; done", check=True
    )
    follower = remote.stix.popen("logs", "tick", "1")
    try:
        assert follower.stdout is not None
        assert "tick" in follower.stdout.readline()  # streaming, live
        assert health(url)["requests"] == 1
    finally:
        follower.send_signal(signal.SIGKILL)
        follower.wait(10)
        for pipe in (follower.stdout, follower.stderr):
            if pipe is not None:
                pipe.close()
    wait_until(lambda: health(url)["requests"] == 0, timeout=10)
    assert "RUNNING" in remote.run("queue", "tick", check=True).stdout  # the job is untouched


def test_a_malformed_oversize_or_silent_client_fails_alone(stix: Stix) -> None:
    stix.env["STIX__DAEMON__CLIENT_IDLE_SECONDS"] = "1"
    url = serve_http(stix)
    token = make_token(stix, "dora", "user")
    port = int(url.rsplit(":", 1)[1])
    silent = socket.create_connection(("127.0.0.1", port), timeout=10)
    silent.sendall(b"POST /api/v1/request HTTP/1.1\r\nHost: x\r\n")  # and no more
    try:
        status, frames = post(url, b"\xc1\xff not msgpack", headers(token))
        assert status == 400 and frames[0].code == "protocol"
        assert "malformed message" in frames[0].message and "\n" not in frames[0].message
        big = {**headers(token), "Content-Length": str(9 * 1024 * 1024)}
        status, frames = post(url, b"", big)
        assert status == 413 and "exceeds" in frames[0].message
        status, frames = post(url, request_body(m.Status()), headers(token, protocol=999))
        assert status == 400 and frames[0].code == "version_mismatch"
        assert "protocol 999" in frames[0].message
        answered = Remote(stix, url, token).run("status", check=True)
        assert "No existing clusters" in answered.stdout
        assert silent.recv(1024) == b""  # closed by the server once its headers timed out
    finally:
        silent.close()
    assert health(url)["status"] == "healthy"


def test_api_stop_closes_the_port_and_api_start_is_remembered_across_restarts(
    served: tuple[Stix, str],
) -> None:
    stix, url = served
    assert "no longer serves" in stix.run("api", "stop", check=True).stdout
    with pytest.raises(OSError):
        health(url)
    assert "not serving HTTP" in stix.run("api", "status", check=True).stdout
    again = stix.run("api", "start", check=True).stdout  # the address it served last
    assert url in again
    stix.run("daemon", "stop", check=True)
    stix.run("daemon", "start", check=True)
    assert health(url)["protocol"] == PROTOCOL_VERSION
    assert f"serving HTTP on {url}" in stix.run("api", "status", check=True).stdout


def test_the_sdk_sync_and_async_talk_to_the_server_from_the_environment(
    served: tuple[Stix, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import anyio

    from stixctl import sdk

    stix, url = served
    token = make_token(stix, "erin", "user")
    client_home = Path(stix.home) / "elsewhere"  # no daemon here: everything goes remote
    monkeypatch.setenv("STIX_API_SERVER", url)
    monkeypatch.setenv("STIX_API_TOKEN", token)
    client = sdk.Client(client_home)
    result = client.launch(sdk.Task(run="echo one; echo two"), cluster="s1", detach=False)
    assert result.job_status == "SUCCEEDED"
    assert "two" in "".join(client.logs("s1", result.job_id))
    assert [c.name for c in client.status()] == ["s1"]

    async def from_asyncio() -> tuple[list[str], str]:
        aclient = sdk.AsyncClient(client_home)
        names = [c.name for c in await aclient.status()]
        chunks = [chunk async for chunk in aclient.logs("s1", result.job_id)]
        return names, "".join(chunks)

    names, text = anyio.run(from_asyncio)
    assert names == ["s1"] and "one" in text and "two" in text
    assert not os.path.exists(client_home / "stixd.sock")


def test_connections_past_the_limit_are_told_why_and_the_next_one_is_served(stix: Stix) -> None:
    stix.env["STIX__DAEMON__MAX_CONNECTIONS"] = "3"
    url = serve_http(stix)
    token = make_token(stix, "fred", "user")
    port = int(url.rsplit(":", 1)[1])
    holders = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(3)]
    try:
        for holder in holders:
            holder.sendall(b"POST /api/v1/request HTTP/1.1\r\n")  # and no more yet
        busy = Remote(stix, url, token).run("status")
        assert busy.returncode != 0
        assert "serving 3 HTTP connections, its limit" in one_line(busy.stderr)
    finally:
        for holder in holders:
            holder.close()
    wait_until(lambda: Remote(stix, url, token).run("status").returncode == 0, timeout=15)


def test_https_with_the_configured_certificate(stix: Stix, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    stix.env["STIX__API__CERTFILE"] = str(cert)
    stix.env["STIX__API__KEYFILE"] = str(key)
    started = stix.run("api", "start", "--port", "0", check=True).stdout
    url = next(w for w in started.split() if w.startswith("https://"))
    remote = Remote(stix, url, make_token(stix, "gina", "user"))
    untrusted = remote.run("status")
    assert untrusted.returncode != 0 and "CERTIFICATE_VERIFY_FAILED" in one_line(untrusted.stderr)
    remote.stix.env["SSL_CERT_FILE"] = str(cert)  # the client trusts the server's certificate
    assert "No existing clusters" in remote.run("status", check=True).stdout
    assert "healthy" in remote.run("api", "status", check=True).stdout


def test_reads_answer_while_a_launch_streams_over_http(served: tuple[Stix, str]) -> None:
    stix, url = served
    remote = Remote(stix, url, make_token(stix, "hana", "user"))
    launch = remote.stix.popen("launch", "-c", "slow", "-y", "sleep 6; echo done")
    try:
        wait_until(lambda: "slow" in remote.run("status", check=True).stdout, timeout=20)
        wait_until(lambda: "RUNNING" in remote.run("queue", "slow", check=True).stdout, timeout=20)
        assert launch.poll() is None  # both answered while the launch still streams
        out, _ = launch.communicate(timeout=60)
        assert launch.returncode == 0 and "done" in out
    finally:
        if launch.poll() is None:
            launch.kill()
            launch.communicate(timeout=10)


def test_a_workdir_is_uploaded_without_ignored_files_and_then_only_what_changed(
    served: tuple[Stix, str], tmp_path: Path
) -> None:
    stix, url = served
    remote = Remote(stix, url, make_token(stix, "ivan", "user"))
    code = tmp_path / "code"
    (code / "build").mkdir(parents=True)
    (code / ".gitignore").write_text("secret.txt\nbuild/\n")
    (code / "data.txt").write_text("version one\n")
    (code / "same.txt").write_text("never changes\n")
    (code / "secret.txt").write_text("stays here\n")
    (code / "build" / "out.bin").write_bytes(b"\0" * 100)
    run = "cat data.txt; ls -A | tr '\\n' ' '"
    first = remote.run("launch", "-c", "w", "-y", "--workdir", str(code), run, check=True)
    assert "version one" in first.stdout
    assert "same.txt" in first.stdout and "secret.txt" not in first.stdout
    assert "build" not in first.stdout
    [tree] = (stix.home / "uploads" / "ivan").glob("*/tree")
    assert sorted(p.name for p in tree.iterdir()) == [".gitignore", "data.txt", "same.txt"]
    kept = (tree / "same.txt").stat().st_ino
    (code / "data.txt").write_text("version two\n")
    (code / "new.txt").write_text("added\n")
    second = remote.run("exec", "w", "--workdir", str(code), run, check=True)
    assert "version two" in second.stdout and "new.txt" in second.stdout
    assert (tree / "same.txt").stat().st_ino == kept  # not sent again
    assert (tree / "data.txt").read_text() == "version two\n"


def test_a_file_mount_is_uploaded_and_a_server_path_is_refused(
    served: tuple[Stix, str], task_file: Any, tmp_path: Path
) -> None:
    stix, url = served
    token = make_token(stix, "jack", "user")
    remote = Remote(stix, url, token)
    notes = tmp_path / "notes.txt"
    notes.write_text("mounted from the client\n")
    mounts = task_file(f"file_mounts:\n  ~/notes.txt: {notes}\nrun: cat ~/notes.txt\n")
    ran = remote.run("launch", "-c", "f", "-y", str(mounts), check=True)
    assert "mounted from the client" in ran.stdout
    for server_path in (stix.home / "state.db", stix.home / "uploads" / "ivan" / "x"):
        task = Task(run="ls", file_mounts={"/tmp/db": str(server_path)})
        status, frames = post(url, request_body(m.Launch(task=task, cluster="f")), headers(token))
        assert status == 400 and "a path on the server" in frames[0].message


def test_a_request_past_the_timeout_ends_in_one_line_and_frees_its_slot(stix: Stix) -> None:
    stix.env["STIX__DAEMON__REQUEST_TIMEOUT_SECONDS"] = "2"
    url = serve_http(stix)
    remote = Remote(stix, url, make_token(stix, "jill", "user"))
    remote.run("launch", "-c", "long", "-y", "-d", "sleep 60", check=True)
    followed = remote.run("logs", "long", "1")
    assert followed.returncode != 0
    assert "request timed out after 2s" in one_line(followed.stderr)
    assert health(url)["requests"] == 0


def test_a_command_on_the_local_socket_loads_nothing_of_http(stix: Stix) -> None:
    code = (
        "import sys\nfrom stixctl.main import main\nmain(['status'])\n"
        "http = ('http.client', 'ssl', 'stixctl.http_client')\n"
        "print(sorted(n for n in http if n in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=stix.env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "[]"
