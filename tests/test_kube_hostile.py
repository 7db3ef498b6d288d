"""Every input is hostile, for Kubernetes: broken kubeconfigs, API servers that refuse, never
speak or answer HTML, odd context and cluster names, wrong-typed API answers, pods whose relay
dies or whose job deletes its home, a daemon killed while pods are being made. Each gets one
line in bounded time or is contained; the daemon stays up and other infras keep working.

Through the real daemon and stixctl; what the cluster holds is checked with kubectl.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from stixd.providers.kubernetes.owner import owner_of
from stixd.providers.kubernetes.podspec import LABEL_CLUSTER, pod_name
from stixproto.errors import ProvisionError
from tests.conftest import Stix, reap, wait_until
from tests.kube_fake.process import FakeProcess

BOUND_S = 25.0
"""How long any one command may take against a broken Kubernetes."""


def one_line(said: str) -> str:
    lines = [line for line in said.strip().splitlines() if line.strip()]
    assert len(lines) == 1, said
    return lines[0]


def error_line(stderr: str) -> str:
    """The one error of a command, its progress lines (``⚙ ...``) aside."""
    return one_line("\n".join(x for x in stderr.splitlines() if not x.lstrip().startswith("⚙")))


def kubeconfig_to(server: str, context: str = "hostile") -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "c", "cluster": {"server": server}}],
            "users": [{"name": "u", "user": {"token": "t"}}],
            "contexts": [{"name": context, "context": {"cluster": "c", "user": "u"}}],
            "current-context": context,
        }
    )


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A socket that accepts connections and never says a word."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in held:
            conn.close()
        listener.close()


class _Html(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<html><body><h1>Welcome to nginx!</h1>\n<p>proxy</p></body></html>\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_DELETE = do_PATCH = do_GET

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def html_port() -> Iterator[int]:
    """An HTTP server that answers every request with a web page."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Html)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def refused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again: nothing listens there


SAID = {
    "garbage_yaml": "cannot be read",
    "a_list": "is not a mapping",
    "a_missing_cluster": "hostile",
    "a_server_that_refuses": "could not connect",
    "a_server_that_never_speaks": "got no answer within",
    "a_server_that_answers_html": "no Kubernetes object",
    "a_huge_file": "larger than 4 MiB",
    "https_to_a_plain_http_server": "TLS handshake with the API server failed",
}
"""What the one line of each says (in `check`, `launch` and `show-gpus` alike)."""
KUBECONFIGS: dict[str, Callable[[dict[str, int]], str]] = {
    "garbage_yaml": lambda _: "apiVersion: v1\nclusters: [\n  - {name: : :\n\t}}}",
    "a_list": lambda _: "- one\n- two\n",
    "a_huge_file": lambda _: "# " + "x" * (4 * 2**20) + "\n" + kubeconfig_to("http://0.0.0.0:1"),
    "a_missing_cluster": lambda _: json.dumps(
        {
            "contexts": [{"name": "hostile", "context": {"cluster": "gone", "user": "gone"}}],
            "current-context": "hostile",
        }
    ),
    "a_server_that_refuses": lambda ports: kubeconfig_to(f"http://127.0.0.1:{ports['refused']}"),
    "a_server_that_never_speaks": lambda ports: kubeconfig_to(
        f"http://127.0.0.1:{ports['silent']}"
    ),
    "a_server_that_answers_html": lambda ports: kubeconfig_to(f"http://127.0.0.1:{ports['html']}"),
    "https_to_a_plain_http_server": lambda ports: kubeconfig_to(
        f"https://127.0.0.1:{ports['html']}"
    ),
}


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param(k, marks=[pytest.mark.slow] if k == "a_server_that_never_speaks" else [])
        for k in sorted(KUBECONFIGS)
    ],
)
def test_a_broken_kubeconfig_or_server_gets_one_line_in_bounded_time_and_local_still_works(
    stix: Stix, tmp_path: Path, silent_port: int, html_port: int, kind: str
) -> None:
    config = tmp_path / "kubeconfig"
    ports = {"refused": refused_port(), "silent": silent_port, "html": html_port}
    config.write_text(KUBECONFIGS[kind](ports))
    stix.env["KUBECONFIG"] = str(config)
    stix.env["STIX__KUBERNETES__ALLOWED_CONTEXTS"] = json.dumps(["hostile"])
    took: dict[str, float] = {}

    def timed(name: str, *args: str) -> Any:
        started = time.monotonic()
        done = stix.run(*args, timeout=BOUND_S + 30)
        took[name] = time.monotonic() - started
        return done

    checked = timed("check", "check")
    said = checked.stdout + checked.stderr
    assert SAID[kind] in said.split("\nkubernetes:\n")[-1], said
    launched = timed("launch", "launch", "-y", "-c", "kh", "--infra", "k8s", "echo never")
    assert launched.returncode != 0, launched.stdout
    line = error_line(launched.stderr)
    assert "Traceback" not in line and SAID[kind] in line, line
    gpus = timed("show-gpus", "show-gpus", "--infra", "k8s")
    assert SAID[kind] in one_line(gpus.stdout + gpus.stderr)
    assert all(t < BOUND_S for t in took.values()), took
    assert stix.daemon_pid(), "the daemon died"
    local = stix.run("launch", "-y", "-c", "loc", "--infra", "local", "echo local-ok", timeout=60)
    assert local.returncode == 0 and "local-ok" in local.stdout, local.stderr
    assert "kh" not in stix.clusters()


# -- an API server whose answers are hostile ---------------------------------------------------

READY = {"type": "Ready", "status": "True"}
GOOD_NODE = {
    "metadata": {"name": "good", "labels": {}},
    "status": {"allocatable": {"cpu": "4", "memory": "16Gi"}, "conditions": [READY]},
}
GPU_NODE = {
    "metadata": {"name": "gpu", "labels": {"nvidia.com/gpu.product": "Tesla-T4"}},
    "status": {
        "allocatable": {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "1"},
        "conditions": [READY],
    },
}
"""A node a GPU launch is planned on, so that its pod's node selection reads the list."""
WRONG_NODES = [
    1,
    "x",
    None,
    [],
    {"metadata": [1], "status": "nope"},
    {"metadata": {"name": 7, "labels": ["a"]}, "status": {"allocatable": [], "conditions": "x"}},
    {
        "metadata": {"name": "inf", "labels": {"nvidia.com/gpu.product": {"x": 1}}},
        "status": {
            "allocatable": {"cpu": "inf", "memory": "NaN", "nvidia.com/gpu": "1e999"},
            "conditions": [7, READY],
            "addresses": "10.0.0.1",
        },
    },
    {"metadata": {"name": "num", "labels": {"skypilot.co/accelerator": 1}}, "status": 7},
    GOOD_NODE,
    GPU_NODE,
]


def _huge_nodes() -> list[Any]:
    """About 50 MB of nodes, none of them Ready."""
    pad = "p" * 50_000
    return [
        {"metadata": {"name": f"n{i}", "annotations": {"pad": pad}}, "status": {}}
        for i in range(1000)
    ]


ANSWERS: dict[str, dict[str, Any]] = {
    # what GET nodes, GET/POST a pod and GET pods answer, per mode
    "items_null": {"nodes": {"items": None}, "pod": {}, "pods": {"items": None}},
    "wrong_types": {
        "nodes": {"items": WRONG_NODES},
        "pod": {"metadata": None, "status": 7, "spec": "x"},
        "pods": {
            "items": [
                1,
                {"metadata": "x"},
                {"metadata": {"name": "kw-0"}},
                {"metadata": {"name": 5, "labels": {"stix-cluster": 5}, "creationTimestamp": 7}},
                {"metadata": {"name": "kw-1", "labels": [1], "creationTimestamp": "x" * 10**5}},
            ]
        },
    },
    "a_pod_with_no_status": {
        "nodes": {"items": [GOOD_NODE]},
        "pod": {"metadata": {"name": "kw-0", "namespace": "default"}},
        "pods": {"items": [{"metadata": {"name": "kw-0", "namespace": "default"}}]},
    },
    "a_list_not_a_map": {"nodes": [GOOD_NODE], "pod": [], "pods": []},
}


class _Hostile(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    mode = ""
    deleted = False

    def _answer(self, value: Any) -> None:
        body = value if isinstance(value, bytes) else json.dumps(value).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        where = self.path.split("?")[0]
        if self.mode == "endless" and where.endswith(("/nodes", "/pods")):
            self._endless()
            return
        if self.mode in ("huge", "endless"):
            answers = {"nodes": HUGE, "pod": {}, "pods": {"items": []}}
        else:
            answers = ANSWERS[self.mode]
        if self.command == "DELETE" and "/pods/" in where:
            type(self).deleted = True  # a pod deleted is listed no more, as a server would
        if where.endswith("/nodes"):
            self._answer(answers["nodes"])
        elif where.endswith("/pods") and self.command == "GET":
            self._answer({"items": []} if self.deleted else answers["pods"])
        elif where.endswith("/pods") or "/pods/" in where:
            self._answer(answers["pod"])
        elif where.startswith("/api/v1/namespaces/"):
            self._answer({"kind": "Namespace", "metadata": {"name": "default"}})
        else:
            self._answer({"kind": "Status", "items": None})

    def _endless(self) -> None:
        """A list that never ends (as a broken server's 2 GB answer), chunk after chunk,
        until the reader hangs up or 256 MiB went out."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        chunk = b'{"metadata": {"name": "n"}, "status": {}},' * 1000
        head = b'{"kind": "NodeList", "items": ['
        try:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(head), head))
            for _ in range(256 * 2**20 // len(chunk)):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except OSError:
            pass  # the reader hung up, as it should
        self.close_connection = True

    do_POST = do_DELETE = do_PATCH = do_GET

    def log_message(self, *args: Any) -> None:
        pass


HUGE = b""


@pytest.fixture
def hostile_api(request: pytest.FixtureRequest) -> Iterator[str]:
    """An API server answering in the mode the test is parametrized with."""
    global HUGE
    mode = request.param
    if mode == "huge" and not HUGE:
        HUGE = json.dumps({"items": _huge_nodes()}).encode()
    handler = type("Handler", (_Hostile,), {"mode": mode, "deleted": False})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.mark.parametrize("hostile_api", [*sorted(ANSWERS), "huge"], indirect=True)
def test_wrong_typed_api_answers_fail_one_call_with_one_line_and_the_daemon_stays_up(
    stix: Stix, tmp_path: Path, hostile_api: str
) -> None:
    config = tmp_path / "kubeconfig"
    config.write_text(kubeconfig_to(hostile_api))
    stix.env["KUBECONFIG"] = str(config)
    stix.env["STIX__KUBERNETES__ALLOWED_CONTEXTS"] = json.dumps(["hostile"])
    stix.env["STIX__KUBERNETES__PROVISION_TIMEOUT"] = "2"
    started = time.monotonic()
    checked = stix.run("check", timeout=60)
    assert "Traceback" not in checked.stdout + checked.stderr
    assert "\nkubernetes " in checked.stdout, checked.stdout
    gpus = stix.run("show-gpus", "--infra", "k8s", timeout=60)
    assert "Traceback" not in one_line(gpus.stdout + gpus.stderr)
    leaks = stix.run("leaks", timeout=60)  # before a launch deletes its pods (then none lists)
    assert leaks.returncode == 0, leaks.stderr
    assert "has no attribute" not in leaks.stdout + leaks.stderr
    assert "Traceback" not in leaks.stdout + leaks.stderr
    for asked in ((), ("--gpus", "T4:1")):
        launched = stix.run(
            "launch", "-y", "-c", "kw", "--infra", "k8s", *asked, "echo x", timeout=90
        )
        assert launched.returncode != 0
        line = error_line(launched.stderr)
        assert "Traceback" not in line and "has no attribute" not in line, line
        assert "hostile" in line or "T4" in line, line
    assert time.monotonic() - started < 45
    assert stix.daemon_pid(), "the daemon died"
    local = stix.run("launch", "-y", "-c", "loc", "--infra", "local", "echo local-ok", timeout=60)
    assert local.returncode == 0 and "local-ok" in local.stdout, local.stderr


def test_an_endless_list_answer_fails_its_call_in_one_line_and_the_daemon_keeps_serving(
    stix: Stix, tmp_path: Path
) -> None:
    handler = type("Handler", (_Hostile,), {"mode": "endless", "deleted": False})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        config = tmp_path / "kubeconfig"
        config.write_text(kubeconfig_to(f"http://127.0.0.1:{server.server_address[1]}"))
        stix.env["KUBECONFIG"] = str(config)
        stix.env["STIX__KUBERNETES__ALLOWED_CONTEXTS"] = json.dumps(["hostile"])
        gpus = stix.run("show-gpus", "--infra", "k8s", timeout=60)
        line = one_line(gpus.stdout + gpus.stderr)
        assert "hostile" in line and "answered more than 32 MiB" in line, line
        checked = stix.run("check", timeout=60)
        assert "answered more than 32 MiB" in checked.stdout.split("\nkubernetes")[-1]
        assert stix.daemon_pid(), "the daemon died"
        status = stix.run("status", timeout=30)
        assert status.returncode == 0, status.stderr
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# -- odd names, against the fake API server ----------------------------------------------------

CONTEXT = "kube-h"


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeProcess]:
    with FakeProcess(tmp_path_factory.mktemp("kube-h"), "--context", CONTEXT) as made:
        yield made
    assert made.pod_processes() == []


@pytest.fixture
def k8s(stix: Stix, fake: FakeProcess) -> Stix:
    stix.env["KUBECONFIG"] = str(fake.kubeconfig)
    stix.env["STIX__KUBERNETES__ALLOWED_CONTEXTS"] = json.dumps([CONTEXT])
    return stix


def objects(fake: FakeProcess, cluster: str) -> list[dict[str, Any]]:
    found = fake.kubectl_json("get", "pods,services", "-l", f"{LABEL_CLUSTER}={cluster}")
    return [o for o in found["items"] if not o["metadata"].get("deletionTimestamp")]


def all_pods(fake: FakeProcess) -> list[str]:
    found = fake.kubectl_json("get", "pods")["items"]
    return sorted(
        p["metadata"]["name"] for p in found if not p["metadata"].get("deletionTimestamp")
    )


@pytest.mark.parametrize(
    "target", ["k8s/../..", "k8s/a:b/c", "k8s/" + "c" * 300, "k8s/ünïcødé-ctx", "k8s/a\nb"]
)
def test_a_target_naming_no_context_gets_one_line_and_writes_nothing_outside_home(
    k8s: Stix, fake: FakeProcess, target: str
) -> None:
    for args in (
        ("launch", "-y", "-c", "odd", "--infra", target, "echo never"),
        ("show-gpus", "--infra", target),
    ):
        started = time.monotonic()
        done = k8s.run(*args, timeout=60)
        said = error_line(done.stderr) if done.returncode else one_line(done.stdout)
        assert "Traceback" not in said and time.monotonic() - started < 20, said
    assert "odd" not in k8s.clusters() and all_pods(fake) == []
    assert k8s.daemon_pid()
    assert not any(".." in str(p.relative_to(k8s.home)) for p in k8s.home.rglob("*"))


def test_cluster_names_that_are_no_dns_label_get_pods_of_their_own(
    k8s: Stix, fake: FakeProcess
) -> None:
    """``My_Job`` and ``my.job`` clean to the same label; each gets its own pods, and a DNS-label
    name equal to another's hashed pod name is refused in one line, never handed its pod."""
    names = ("My_Job", "my.job")
    try:
        for name in names:
            k8s.run("launch", "-y", "-d", "-c", name, "--infra", "k8s", "--cpus", "0.5",
                    f"echo I am {name}", check=True, timeout=90)  # fmt: skip
        owner = owner_of(k8s.home)
        pods = {name: [o for o in objects(fake, name) if o["kind"] == "Pod"] for name in names}
        [mine], [yours] = pods.values()
        assert mine["metadata"]["name"] == pod_name("My_Job", 0, owner)
        assert mine["metadata"]["name"] != yours["metadata"]["name"]
        for name in names:
            logs = k8s.run("logs", name, "1", timeout=60)
            assert f"I am {name}" in logs.stdout, logs.stderr
        # a DNS label, used as it is: its pod name is My_Job's
        squatter = pod_name("My_Job", 0, owner).removesuffix(f"-{owner}-0")
        taken = k8s.run("launch", "-y", "-c", squatter, "--infra", "k8s", "--cpus", "0.5",
                        "echo never", timeout=90)  # fmt: skip
        assert taken.returncode != 0
        assert "exists and is of stix cluster My_Job" in error_line(taken.stderr), taken.stderr
        assert [o["metadata"]["name"] for o in objects(fake, "My_Job")] == [
            pod_name("My_Job", 0, owner)
        ]  # the failed launch cleaned up only what was its own
        logs = k8s.run("logs", "My_Job", "1", timeout=60)
        assert "I am My_Job" in logs.stdout, logs.stderr
    finally:
        for name in names:
            k8s.run("down", "-y", name, timeout=60)
        owner = owner_of(k8s.home)
        k8s.run("down", "-y", pod_name("My_Job", 0, owner).removesuffix(f"-{owner}-0"), timeout=60)
    assert all_pods(fake) == []


# -- the relay and the pod's home --------------------------------------------------------------


def pod_pids(fake: FakeProcess, *words: bytes) -> list[int]:
    """Processes of the fake's pods whose command line holds every one of ``words``."""
    found = []
    for pid in fake.pod_processes():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if all(word in cmdline for word in words):
            found.append(pid)
    return found


def test_a_killed_relay_and_a_job_that_deletes_its_home_are_contained_and_down_leaves_nothing(
    k8s: Stix, fake: FakeProcess
) -> None:
    try:
        k8s.run("launch", "-y", "-c", "rel", "--infra", "k8s", "--cpus", "0.5", "echo first",
                check=True, timeout=90)  # fmt: skip
        relays = pod_pids(fake, b"stix-inpod", b"relay")
        assert relays, "no relay in the pod"
        for pid in relays:
            os.kill(pid, signal.SIGKILL)
        again = k8s.run("exec", "rel", "echo after-relay-killed", timeout=60)
        assert again.returncode == 0 and "after-relay-killed" in again.stdout, again.stderr
        wiped = k8s.run("exec", "rel", 'rm -rf "$HOME"; echo wiped', timeout=60)
        said = wiped.stdout + wiped.stderr
        assert "Traceback" not in said, said
        after = k8s.run("exec", "rel", "echo after-wipe", timeout=60)
        assert after.returncode == 0 and "after-wipe" in after.stdout, after.stderr
        logs = k8s.run("logs", "rel", "1", "--no-follow", timeout=60)  # its log went with ~
        assert "first" not in logs.stdout
        if logs.returncode:
            assert "Traceback" not in error_line(logs.stderr), logs.stderr
        assert k8s.daemon_pid()
    finally:
        down = k8s.run("down", "-y", "rel", timeout=60)
    assert down.returncode == 0, down.stderr
    assert objects(fake, "rel") == [] and all_pods(fake) == []
    assert "rel" not in k8s.clusters()


# -- a daemon killed while pods are being made -------------------------------------------------


def test_a_daemon_killed_while_pods_are_made_then_down_at_once_leaves_no_orphan_pod(
    k8s: Stix, fake: FakeProcess
) -> None:
    """``kill -9`` as the first pod appears; the next daemon takes the launch up again, and a
    ``down`` racing that resumed launch still leaves no pod behind."""
    launch = k8s.popen("launch", "-y", "-c", "crash", "--infra", "k8s", "--num-nodes", "3",
                       "--cpus", "0.5", "echo never")  # fmt: skip
    try:
        wait_until(lambda: objects(fake, "crash"), timeout=60, interval=0.01)
        k8s.kill_daemon()
    finally:
        reap(launch)
        launch.communicate(timeout=30)
    k8s.run("status", check=True)  # a new daemon, the launch taken up again
    names = [o["metadata"]["name"] for o in objects(fake, "crash") if o["kind"] == "Pod"]
    owner = owner_of(k8s.home)
    assert len(names) == len(set(names)) <= 3 and set(names) <= {
        pod_name("crash", r, owner) for r in range(3)
    }
    down = k8s.run("down", "-y", "crash", timeout=90)
    assert down.returncode == 0, down.stderr
    assert "crash" not in k8s.clusters()
    assert objects(fake, "crash") == []
    wait_until(lambda: all_pods(fake) == [], timeout=30)  # deleted pods' processes stopped
    assert "crash" not in k8s.clusters()  # the resumed launch made nothing after the down
    assert fake.kubectl_json("get", "pods", "-l", f"{LABEL_CLUSTER}=crash")["items"] == []


def test_a_daemon_killed_while_pods_are_made_resumes_with_no_duplicate(
    k8s: Stix, fake: FakeProcess
) -> None:
    launch = k8s.popen("launch", "-y", "-c", "again", "--infra", "k8s", "--num-nodes", "2",
                       "--cpus", "0.5", "echo after-crash")  # fmt: skip
    try:
        wait_until(lambda: objects(fake, "again"), timeout=60, interval=0.01)
        k8s.kill_daemon()
    finally:
        reap(launch)
        launch.communicate(timeout=30)
    k8s.run("status", check=True)
    try:
        wait_until(lambda: k8s.clusters().get("again", {}).get("status") == "UP", timeout=90)
        pods = sorted(o["metadata"]["name"] for o in objects(fake, "again") if o["kind"] == "Pod")
        owner = owner_of(k8s.home)
        assert pods == [pod_name("again", 0, owner), pod_name("again", 1, owner)]
    finally:
        k8s.run("down", "-y", "again", check=True, timeout=60)
    assert objects(fake, "again") == []


WEIRD_CONTEXTS = ("../../etc", "ünïcødé ctx", "c" * 300)


def test_contexts_with_hostile_names_are_used_as_names_only(
    k8s: Stix, fake: FakeProcess, tmp_path: Path
) -> None:
    """Contexts named ``../../etc``, with unicode and spaces, or 300 characters long, all
    reaching the fake: check lists each, a launch runs on the first, and no file lands outside
    stix's home."""
    config = json.loads(json.dumps(__import__("yaml").safe_load(fake.kubeconfig.read_text())))
    base = config["contexts"][0]["context"]
    config["contexts"] = [{"name": n, "context": base} for n in WEIRD_CONTEXTS]
    config["current-context"] = WEIRD_CONTEXTS[0]
    weird = tmp_path / "kubeconfig"
    weird.write_text(json.dumps(config))
    k8s.env["KUBECONFIG"] = str(weird)
    k8s.env["STIX__KUBERNETES__ALLOWED_CONTEXTS"] = json.dumps(list(WEIRD_CONTEXTS))
    outside = sorted(p.name for p in tmp_path.iterdir())
    checked = k8s.run("check", timeout=60)
    assert "Traceback" not in checked.stdout + checked.stderr
    for name in WEIRD_CONTEXTS:
        assert f"{name}: reachable" in checked.stdout, checked.stdout
    try:
        k8s.run("launch", "-y", "-c", "wc", "--infra", "k8s", "--cpus", "0.5", "echo in-weird",
                check=True, timeout=90)  # fmt: skip
        owner = owner_of(k8s.home)
        assert [o["metadata"]["name"] for o in objects(fake, "wc")] == [pod_name("wc", 0, owner)]
        gpus = k8s.run("show-gpus", "--infra", "k8s", timeout=60)
        assert gpus.returncode == 0 and "Traceback" not in gpus.stdout + gpus.stderr
    finally:
        k8s.run("down", "-y", "wc", check=True, timeout=60)
    assert objects(fake, "wc") == []
    assert sorted(p.name for p in tmp_path.iterdir()) == outside
    assert not (k8s.home.parent / "etc").exists()
    assert all(k8s.home in p.resolve().parents for p in k8s.home.rglob("*") if not p.is_symlink())


@pytest.mark.parametrize(
    ("setting", "args"),
    [
        ({"STIX__KUBERNETES__PROVISION_TIMEOUT": "inf"}, ("check",)),
        ({"STIX__KUBERNETES__PROVISION_TIMEOUT": "nan"}, ("check",)),
        ({}, ("launch", "-y", "-c", "num", "--infra", "k8s", "--cpus", "inf", "echo never")),
        ({}, ("launch", "-y", "-c", "num", "--infra", "k8s", "--memory", "1e400", "echo x")),
        ({}, ("launch", "-y", "-c", "num", "--infra", "k8s", "--num-nodes", "100000", "echo")),
    ],
)
def test_inf_where_a_number_goes_gets_one_line_and_makes_no_pod(
    k8s: Stix, fake: FakeProcess, setting: dict[str, str], args: tuple[str, ...]
) -> None:
    k8s.env.update(setting)
    done = k8s.run(*args, timeout=60)
    assert done.returncode != 0, done.stdout
    assert "Traceback" not in error_line(done.stderr), done.stderr
    assert all_pods(fake) == []


def test_leaks_say_why_an_unreachable_context_was_not_looked_at_and_nothing_without_one(
    stix: Stix, tmp_path: Path
) -> None:
    """With no kubeconfig Kubernetes is not set up: `leaks` says nothing of it. A context that
    refuses is somewhere stix may have made pods: `leaks` says, in one line, it was not looked
    at (a silent skip would read as "nothing leaked")."""
    stix.env["KUBECONFIG"] = str(tmp_path / "none")
    quiet = stix.run("leaks", check=True, timeout=60)
    assert "kubernetes" not in quiet.stdout + quiet.stderr
    config = tmp_path / "refusing"
    config.write_text(kubeconfig_to(f"http://127.0.0.1:{refused_port()}"))
    stix.env["KUBECONFIG"] = str(config)
    stix.run("daemon", "stop", timeout=30)  # the kubeconfig is read at the daemon's start
    said = stix.run("leaks", timeout=60)
    [line] = [x for x in said.stdout.splitlines() if x.startswith("kubernetes not checked: ")]
    assert "hostile" in line, said.stdout


# -- what the exec path reads of a pod when a command's stream ends without a status ------------

TROUBLES: dict[str, tuple[bytes, str | None]] = {
    # what GET of the pod answers -> what `pod_trouble` makes of it
    "a_list": (b"[1, 2]", None),
    "a_number": (b"7", None),
    "wrong_types": (b'{"metadata": 1, "status": "x"}', None),
    "a_phase_that_is_a_map": (b'{"status": {"phase": {"a": 1}}}', None),
    "nested_too_deep": (b"[" * 50_000, None),
    "huge": (b'{"status": {"phase": "Failed"}, "pad": "' + b"p" * 3 * 2**20 + b'"}', None),
    "being_deleted": (
        b'{"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}',
        "is being deleted",
    ),
    "failed": (b'{"status": {"phase": "Failed"}}', "is Failed"),
}


class _PodAnswer(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    body = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.anyio
@pytest.mark.parametrize("kind", sorted(TROUBLES))
async def test_a_hostile_pod_answer_on_the_exec_trouble_path_is_read_as_nothing_known(
    tmp_path: Path, kind: str
) -> None:
    from kubernetes_asyncio.config import new_client_from_config

    from stixd.providers.kubernetes.exec import ExecError, exit_code, pod_trouble
    from stixd.providers.kubernetes.seams import PodRef

    body, expected = TROUBLES[kind]
    handler = type("Handler", (_PodAnswer,), {"body": body})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    config = tmp_path / "kubeconfig"
    config.write_text(kubeconfig_to(f"http://127.0.0.1:{server.server_address[1]}"))
    client = await new_client_from_config(config_file=str(config), context="hostile")
    pod = PodRef("hostile", "default", "p-0")
    try:
        assert await pod_trouble(client, pod) == expected
        for status in ({"status": "Failure", "details": [1]}, {"details": {"causes": [1, "x"]}}):
            with pytest.raises(ExecError) as failed:
                exit_code(status, pod)
            assert len(failed.value.message.splitlines()) == 1
    finally:
        await client.close()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_an_exit_status_nested_past_the_parser_s_depth_is_an_unreadable_failure() -> None:
    from stixd.providers.kubernetes.exec import read_status

    status = read_status(b"[" * 50_000)
    assert status["status"] == "Failure" and "unreadable exit status" in status["message"]


# -- what the ports code reads of a Service (and the head pod) the API answered ----------------

SERVICE_ANSWERS = {
    "a_list": b"[1, 2]",
    "a_number": b"7",
    "spec_a_list": b'{"spec": [1], "status": 3, "metadata": "x"}',
    "ports_not_objects": b'{"spec": {"type": "NodePort", "ports": [1, "x", {"port": "80"}]}}',
    "ingress_not_a_list": b'{"status": {"loadBalancer": {"ingress": {"ip": 1}}}}',
    "finalizers_a_number": b'{"metadata": {"finalizers": 5}, "status": {"loadBalancer": []}}',
}


@pytest.mark.anyio
@pytest.mark.parametrize("kind", sorted(SERVICE_ANSWERS))
async def test_a_hostile_service_answer_leaves_no_address_known_and_fails_in_one_line(
    tmp_path: Path, kind: str
) -> None:
    from kubernetes_asyncio.config import new_client_from_config

    from stixd.providers.kubernetes import ports
    from stixd.providers.kubernetes.api import KubeApi

    handler = type("Handler", (_PodAnswer,), {"body": SERVICE_ANSWERS[kind]})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    config = tmp_path / "kubeconfig"
    config.write_text(kubeconfig_to(f"http://127.0.0.1:{server.server_address[1]}"))
    client = await new_client_from_config(config_file=str(config), context="hostile")
    api = KubeApi(client, "hostile", timeout=5)
    try:
        try:
            assert await ports.load_balancer_address(api, "default", "c1", "o1") is None
        except ProvisionError as exc:  # not an object at all: the call itself says so
            assert len(exc.message.splitlines()) == 1 and "no Kubernetes object" in exc.message
        for mode in ("nodeport", "podip", "loadbalancer"):
            with pytest.raises(ProvisionError) as failed:
                await ports.endpoints(api, "default", "c1", "o1", [8080], mode, wait_s=0.2)
            message = failed.value.message
            assert len(message.splitlines()) == 1 and "attribute" not in message, message
    finally:
        await client.close()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
