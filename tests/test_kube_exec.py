"""The channel into a pod over the API server's exec only (no SSH), on the fake API server:
commands with stdin and exit status, files and trees as byte-counted streams, the agent
reached through one long-lived relay per pod, and ``ensure_agent`` putting a real agent in a
pod through it."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import IO

import anyio
import pytest
import yaml
from yarl import URL

from stixd.agent_bundle import build_id
from stixd.agent_client import AgentError, AgentUnreachable
from stixd.providers.kubernetes import exec as pod_exec
from stixd.providers.kubernetes import inpod, tarsync
from stixd.providers.kubernetes.contexts import Clients, read_kubeconfig
from stixd.providers.kubernetes.exec import ExecError
from stixd.providers.kubernetes.inpod.relay import (
    CLOSE,
    CREDIT,
    DATA,
    EOF,
    HEADER,
    OPEN,
    READY,
    WINDOW,
    WINDOW_BYTES,
)
from stixd.providers.kubernetes.relay import RelayStream
from stixd.providers.kubernetes.seams import CONTAINER, PodRef, PodShell
from stixd.providers.kubernetes.shell import ExecShell, open_shell
from stixd.providers.shared.bootstrap import ensure_agent
from tests.conftest import wait_until
from tests.kube_fake.process import FakeProcess
from tests.kube_fake.server import CONTEXT
from tests.test_sync_filter import GITIGNORE, NESTED, make_tree, sent_by_rules

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(shutil.which("kubectl") is None, reason="needs kubectl"),
]
_names = itertools.count()


@pytest.fixture(scope="module")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeProcess]:
    with FakeProcess(tmp_path_factory.mktemp("kube")) as fake:
        yield fake


def start_pod(kube: FakeProcess) -> PodRef:
    name = f"exec-{next(_names)}"
    manifest = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "containers": [{"name": CONTAINER, "image": "python:3", "command": ["sleep", "1000"]}]
        },
    }
    path = kube.workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(manifest))
    kube.kubectl("apply", "-f", str(path))
    wait_until(
        lambda: kube.kubectl_json("get", "pod", name)["status"].get("phase") == "Running", 10
    )
    return PodRef(CONTEXT, "default", name)


@pytest.fixture
def pod(kube: FakeProcess) -> Iterator[PodRef]:
    ref = start_pod(kube)
    yield ref
    kube.kubectl("delete", "pod", ref.name, "--grace-period=0", "--wait=false", check=False)


@pytest.fixture
async def clients(kube: FakeProcess, tmp_path: Path) -> AsyncIterator[Clients]:
    made = Clients(read_kubeconfig({"KUBECONFIG": str(kube.kubeconfig)}), tmp_path / "private")
    yield made
    await made.aclose()


@pytest.fixture
async def shell(clients: Clients, pod: PodRef) -> AsyncIterator[ExecShell]:
    made = await open_shell(clients, pod)
    yield made
    await made.aclose()


def pids_running(kube: FakeProcess, *words: bytes) -> list[int]:
    """Processes of the fake's pods whose command line holds every one of ``words``."""
    found = []
    for pid in kube.pod_processes():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if all(word in cmdline for word in words):
            found.append(pid)
    return found


async def until(predicate: object, within: float = 10.0) -> None:
    with anyio.fail_after(within):
        while not predicate():  # type: ignore[operator]
            await anyio.sleep(0.02)


# --- commands ---------------------------------------------------------------------------------


async def test_run_gives_the_exit_status_stdout_stderr_and_takes_stdin(shell: ExecShell) -> None:
    channel: PodShell = shell
    assert await channel.run("echo out; echo err >&2; exit 3", timeout=10) == (3, "out\n", "err\n")
    assert await channel.run("tr a-z A-Z", timeout=10, stdin=b"hello") == (0, "HELLO", "")
    assert await channel.run("true", timeout=10) == (0, "", "")


async def test_stdin_of_a_given_size_is_read_whole_without_waiting_for_an_end(
    clients: Clients, pod: PodRef, shell: ExecShell, tmp_path: Path
) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    # stdin is never closed here: the command reads the count it is told and ends
    with anyio.fail_after(20):
        chan = await pod_exec.connect(
            await clients.client(pod.context),
            pod,
            ["sh", "-c", f"head -c {len(data)} | sha256sum"],
            stdin=True,
        )
        async with chan:
            await chan.send(data)
            out = b"".join([d async for c, d in chan.frames() if c == pod_exec.STDOUT])
    assert out.split()[0].decode() == hashlib.sha256(data).hexdigest()

    local = tmp_path / "blob"
    local.write_bytes(data)
    await shell.put_file(local, "deep/er/blob", mode=0o640)
    status, out_text, _ = await shell.run(
        "sha256sum deep/er/blob; stat -c %a deep/er/blob", timeout=10
    )
    assert status == 0
    assert out_text.split() == [hashlib.sha256(data).hexdigest(), "deep/er/blob", "640"]
    assert (await shell.run("ls deep/er", timeout=10))[1] == "blob\n"  # no partial left


async def test_a_command_that_hangs_is_cut_at_its_timeout(shell: ExecShell) -> None:
    started = time.monotonic()
    with pytest.raises(ExecError) as caught:
        await shell.run("sleep 30", timeout=1)
    assert time.monotonic() - started < 5
    assert caught.value.retryable
    assert "\n" not in str(caught.value) and "did not finish within 1 s" in str(caught.value)


async def test_a_pod_deleted_mid_exec_fails_the_call_in_one_line(
    kube: FakeProcess, shell: ExecShell, pod: PodRef
) -> None:
    def delete_once_running() -> None:
        wait_until(lambda: pids_running(kube, b"sleep", b"31"), 10)
        kube.kubectl("delete", "pod", pod.name, "--grace-period=1", "--wait=false")

    deleter = threading.Thread(target=delete_once_running)
    deleter.start()
    try:
        with pytest.raises(ExecError) as caught:
            await shell.run("sleep 31", timeout=20)
    finally:
        deleter.join()
    message = str(caught.value)
    assert "\n" not in message and f"pod default/{pod.name}" in message
    assert "deleted" in message and not caught.value.retryable
    wait_until(lambda: kube.kubectl("get", "pod", pod.name, check=False).returncode != 0, 10)
    with pytest.raises(ExecError, match="does not exist"):
        await shell.run("true", timeout=10)
    with pytest.raises(AgentUnreachable, match="does not exist"):
        await shell.agent_client("/tmp/none.sock", "gone").call("hello", deadline=10)


# --- the agent through the relay --------------------------------------------------------------


async def test_ensure_agent_puts_an_agent_in_the_pod_and_a_second_call_finds_it(
    kube: FakeProcess, shell: ExecShell, pyz: Path
) -> None:
    first = await ensure_agent(
        shell, cluster="kx", rank=0, node_ip="127.0.0.1", pyz=pyz, build=build_id()
    )
    again = await ensure_agent(
        shell, cluster="kx", rank=0, node_ip="127.0.0.1", pyz=pyz, build=build_id()
    )
    assert first.started and not again.started and again.pid == first.pid
    hello = await shell.agent_client(first.socket_path, "kx-0").call("hello")
    assert hello["pid"] == first.pid and hello["build"] == build_id()
    assert len(pids_running(kube, b"serve", b"kx")) == 1
    assert shell.relay.starts == 1  # every agent call of both bootstraps shared one exec


async def test_fifty_concurrent_agent_calls_share_one_relay_each_on_its_own(
    shell: ExecShell, pyz: Path
) -> None:
    ep = await ensure_agent(
        shell, cluster="many", rank=0, node_ip="127.0.0.1", pyz=pyz, build=build_id()
    )
    agent = shell.agent_client(ep.socket_path, "many-0")
    answers: dict[int, object] = {}

    async def call(i: int) -> None:
        try:
            answers[i] = (await agent.call("hello" if i % 5 else "no-such-op", deadline=20))["pid"]
        except AgentError as exc:
            answers[i] = exc.code

    async with anyio.create_task_group() as tg:
        for i in range(50):
            tg.start_soon(call, i)
    assert {answers[i] for i in range(50) if i % 5} == {ep.pid}
    assert len({answers[i] for i in range(50) if not i % 5} - {ep.pid}) == 1  # refused, alone
    assert shell.relay.starts == 1


async def test_the_relay_killed_in_the_pod_is_started_again_by_the_next_call(
    kube: FakeProcess, shell: ExecShell, pyz: Path
) -> None:
    ep = await ensure_agent(
        shell, cluster="rk", rank=0, node_ip="127.0.0.1", pyz=pyz, build=build_id()
    )
    agent = shell.agent_client(ep.socket_path, "rk-0")
    relays = pids_running(kube, b"python3", b"stix-inpod", b"relay")
    assert len(relays) == 1 and shell.relay.alive
    os.kill(relays[0], signal.SIGKILL)
    await until(lambda: not shell.relay.alive)
    assert (await agent.call("hello"))["pid"] == ep.pid
    assert shell.relay.starts == 2 and shell.relay.alive
    assert len(pids_running(kube, b"python3", b"stix-inpod", b"relay")) == 1


async def test_a_socket_nobody_listens_on_fails_only_its_call(shell: ExecShell, pyz: Path) -> None:
    ep = await ensure_agent(
        shell, cluster="ns", rank=0, node_ip="127.0.0.1", pyz=pyz, build=build_id()
    )
    with pytest.raises(AgentUnreachable, match="No such file"):
        await shell.agent_client("/nonexistent/agent.sock", "none").call("hello")
    assert (await shell.agent_client(ep.socket_path, "ns-0").call("hello"))["pid"] == ep.pid
    assert shell.relay.starts == 1


# --- trees ------------------------------------------------------------------------------------


async def pod_files(shell: ExecShell, remote: str) -> set[str]:
    status, out, err = await shell.run(f"cd {remote} && find . -type f", timeout=10)
    assert status == 0, err
    return {line[2:] for line in out.splitlines()}


async def test_put_tree_honours_ignore_files_sends_only_changes_and_removes_what_is_gone(
    shell: ExecShell, tmp_path: Path
) -> None:
    src = make_tree(tmp_path / "src", {".gitignore": GITIGNORE, **NESTED})
    wanted = sent_by_rules(src)
    assert await shell.put_tree(src, "work", timeout=30) == len(wanted)
    assert await pod_files(shell, "work") == wanted

    assert await shell.put_tree(src, "work", timeout=30) == 0

    (src / "docs/readme.md").unlink()
    (src / "src/build/gen.py").write_text("changed, and longer than before\n")
    made_in_pod = "debug.log"  # excluded by the rules: the sync leaves it alone
    assert (await shell.run(f"echo job-output > work/{made_in_pod}", timeout=10))[0] == 0
    assert await shell.put_tree(src, "work", timeout=30) == 1
    assert await pod_files(shell, "work") == (wanted - {"docs/readme.md"}) | {made_in_pod}
    out = (await shell.run("cat work/src/build/gen.py", timeout=10))[1]
    assert out == "changed, and longer than before\n"


async def test_put_tree_of_one_file_and_a_type_change(shell: ExecShell, tmp_path: Path) -> None:
    one = tmp_path / "one.txt"
    one.write_text("one\n")
    assert await shell.put_tree(one, "files/one.txt", timeout=30) == 1
    assert await shell.put_tree(one, "files/one.txt", timeout=30) == 0
    tree = tmp_path / "tree"
    (tree / "a").mkdir(parents=True)
    (tree / "a" / "b").write_text("b\n")
    (tree / "link").symlink_to("a/b")
    assert await shell.put_tree(tree, "files/one.txt", timeout=30) == 2  # a file becomes a folder
    status, out, _ = await shell.run(
        "cat files/one.txt/link; readlink files/one.txt/link", timeout=10
    )
    assert (status, out) == (0, "b\na/b\n")


async def test_api_errors_and_a_slow_api_server_fail_the_call_in_one_line(
    kube: FakeProcess, shell: ExecShell
) -> None:
    try:
        kube.admin("faults", fail_count=1, fail_code=500)
        with pytest.raises(ExecError) as caught:
            await shell.run("true", timeout=10)
        assert caught.value.retryable and "answered 500" in str(caught.value)
        kube.admin("faults", fail_count=1, fail_code=429)
        with pytest.raises(AgentUnreachable, match="answered 429"):
            await shell.agent_client("/tmp/none.sock", "x").call("hello", deadline=10)
        kube.admin("faults", delay=3)
        started = time.monotonic()
        with pytest.raises(ExecError, match="did not finish within 1 s"):
            await shell.run("true", timeout=1)
        assert time.monotonic() - started < 2.5
    finally:
        kube.admin("faults", delay=0, fail_count=0)
    assert await shell.run("echo back", timeout=10) == (0, "back\n", "")


# --- the in-pod programs on the oldest python3 a pod may have ---------------------------------


@pytest.fixture(scope="module")
def python_37() -> str:
    """A python3.7 that runs (PATH's may be a pyenv shim of a version not selected)."""
    found = [
        shutil.which("python3.7"),
        *map(str, Path.home().glob(".pyenv/versions/3.7*/bin/python3.7")),
    ]
    for candidate in filter(None, found):
        if subprocess.run([candidate, "-c", "pass"], capture_output=True).returncode == 0:
            return candidate
    pytest.skip("needs python3.7")


def echo_once(server: socket.socket) -> None:
    """Answer one connection with what it sent, once it said it is done."""
    conn, _ = server.accept()
    with conn:
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
        conn.sendall(data[::-1])


def frames_of(stream: IO[bytes]) -> Iterator[tuple[int, int, bytes]]:
    while header := stream.read(HEADER.size):
        stream_id, kind, size = HEADER.unpack(header)
        yield stream_id, kind, stream.read(size)


def test_the_in_pod_programs_run_on_python_3_7(python_37: str, tmp_path: Path) -> None:
    path = str(tmp_path / "echo.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen()
    echo = threading.Thread(target=echo_once, args=(server,))
    echo.start()
    argv = [python_37, *inpod.argv("relay")[1:]]
    try:
        with subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE) as relay:
            assert relay.stdin is not None and relay.stdout is not None
            deadline = threading.Timer(20, relay.kill)  # a relay that hangs ends the reads
            deadline.start()
            sent = [
                (7, OPEN, path.encode()),
                (7, DATA, b"ping "),
                (7, DATA, b"pong"),
                (7, EOF, b""),
            ]
            relay.stdin.write(inpod.preamble("relay"))
            relay.stdin.write(b"".join(HEADER.pack(i, k, len(p)) + p for i, k, p in sent))
            relay.stdin.flush()
            got = []
            for frame in frames_of(relay.stdout):
                got.append(frame)
                if frame[1] == CLOSE:
                    break
            relay.stdin.close()  # the exec is gone: the relay ends
            assert relay.wait(timeout=10) == 0
            deadline.cancel()
        assert got == [
            (0, READY, b"stix-relay 2"),
            (7, WINDOW, CREDIT.pack(5)),  # each write to the socket is granted back
            (7, WINDOW, CREDIT.pack(4)),
            (7, DATA, b"gnop gnip"),
            (7, CLOSE, b""),
        ]
    finally:
        echo.join(timeout=10)
        server.close()

    src = make_tree(tmp_path / "src", {".gitignore": GITIGNORE, **NESTED})
    dst = tmp_path / "dst"
    plan = tarsync.plan_tree(src, str(dst), "none", {})
    tar = tarsync.TarStream(plan)
    body = b"".join(tar.chunks(at_least=1000))
    assert len(body) == tar.size  # the count announced is the count sent
    apply = inpod.preamble("tarsync") + tarsync.apply_header(plan, tar.size, tar.times) + body
    run_37 = [python_37, *inpod.argv("tarsync")[1:]]
    no_tar = {"PATH": str(tmp_path / "no-tools")}  # tarfile unpacks, not the machine's GNU tar
    subprocess.run(
        [*run_37, "apply", str(dst)], input=apply, check=True, capture_output=True, env=no_tar
    )
    listed = subprocess.run(
        [*run_37, "list", str(dst)],
        input=inpod.preamble("tarsync"),
        check=True,
        capture_output=True,
    ).stdout.decode()
    kind, there = tarsync.read_listing(listed)
    assert tarsync.plan_tree(src, str(dst), kind, there).empty
    assert {p.relative_to(dst).as_posix() for p in dst.rglob("*") if p.is_file()} == sent_by_rules(
        src
    )


# --- a connection cut mid-way -----------------------------------------------------------------


class CuttingProxy:
    """A TCP proxy in front of the API server whose open connections a test cuts at once, as a
    network drop or a restarted load balancer would."""

    def __init__(self) -> None:
        self.links: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self, upstream: str) -> str:
        target = URL(upstream)

        async def link(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            up_reader, up_writer = await asyncio.open_connection(target.host, target.port)
            self.links += [writer, up_writer]

            async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
                with contextlib.suppress(OSError):
                    while data := await src.read(65536):
                        dst.write(data)
                        await dst.drain()
                dst.close()

            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

        self.server = await asyncio.start_server(link, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def cut(self) -> None:
        for writer in self.links:
            writer.transport.abort()
        self.links.clear()

    async def aclose(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()


@pytest.fixture
async def cut_shell(
    kube: FakeProcess, pod: PodRef, tmp_path: Path
) -> AsyncIterator[tuple[ExecShell, CuttingProxy]]:
    proxy = CuttingProxy()
    config = yaml.safe_load(kube.kubeconfig.read_text())
    config["clusters"][0]["cluster"]["server"] = await proxy.start(kube.url)
    path = tmp_path / "through-proxy"
    path.write_text(yaml.safe_dump(config))
    clients = Clients(read_kubeconfig({"KUBECONFIG": str(path)}), tmp_path / "private")
    shell = await open_shell(clients, pod)
    try:
        yield shell, proxy
    finally:
        await shell.aclose()
        await clients.aclose()
        await proxy.aclose()


async def test_a_stream_cut_mid_way_fails_the_call_at_once_and_the_relay_comes_back(
    kube: FakeProcess, cut_shell: tuple[ExecShell, CuttingProxy], pyz: Path
) -> None:
    shell, proxy = cut_shell
    ep = await ensure_agent(
        shell, cluster="cut", rank=0, node_ip="127.0.0.1", pyz=pyz, build=build_id()
    )
    agent = shell.agent_client(ep.socket_path, "cut-0")
    started = time.monotonic()
    async with anyio.create_task_group() as tg:

        async def cut_when_running() -> None:
            await until(lambda: pids_running(kube, b"sleep", b"32"))  # the command runs
            proxy.cut()  # its connection and the relay's

        tg.start_soon(cut_when_running)
        with pytest.raises(ExecError) as caught:
            await shell.run("echo started; sleep 32", timeout=20)
    assert time.monotonic() - started < 10
    assert caught.value.retryable and "\n" not in str(caught.value)
    assert "ended without an exit status" in str(caught.value) or "broke" in str(caught.value)
    await until(lambda: not shell.relay.alive)
    assert (await agent.call("hello"))["pid"] == ep.pid
    assert shell.relay.starts == 2


async def test_output_past_the_bound_fails_the_call(
    shell: ExecShell, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pod_exec, "MAX_OUTPUT", 100_000)
    with pytest.raises(ExecError, match="printed more than"):
        await shell.run("head -c 5000000 /dev/zero", timeout=20, stdin=b"x")
    assert await shell.run("echo fine", timeout=10) == (0, "fine\n", "")


# --- the relay's framing and flow control -----------------------------------------------------


@pytest.fixture
def sockets_dir() -> Iterator[Path]:
    """A short folder for Unix sockets the pod's relay connects to (a path has 107 bytes)."""
    with tempfile.TemporaryDirectory(prefix="kx-", dir="/tmp") as made:
        yield Path(made)


Serve = Callable[[socket.socket], object]
StartServer = Callable[[str, Serve], str]


class Server:
    """A Unix socket in this process that a pod's relay connects to (the fake's pods are
    processes on this machine); ``serve`` runs on a thread for each connection."""

    def __init__(self, path: Path, serve: Serve) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(self.path)
        self.sock.listen()
        self.serve = serve
        self.threads: list[threading.Thread] = []
        self.accepter = threading.Thread(target=self._accept, daemon=True)
        self.accepter.start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.sock.accept()
                thread = threading.Thread(target=self._run, args=(conn,), daemon=True)
                self.threads.append(thread)
                thread.start()

    def _run(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            self.serve(conn)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.accepter.join(timeout=5)
        for thread in self.threads:
            thread.join(timeout=5)


@pytest.fixture
def servers(sockets_dir: Path) -> Iterator[StartServer]:
    made: list[Server] = []

    def start(name: str, serve: Serve) -> str:
        made.append(Server(sockets_dir / name, serve))
        return made[-1].path

    yield start
    for server in made:
        server.close()


def echo_lines(conn: socket.socket) -> None:
    while data := conn.recv(65536):
        conn.sendall(data)


async def round_trip(stream: anyio.abc.ByteStream, line: bytes) -> bytes:
    await stream.send(line)
    got = b""
    while not got.endswith(b"\n"):
        got += await stream.receive()
    return got


async def prompt_round_trips(stream: anyio.abc.ByteStream, count: int = 20) -> None:
    for i in range(count):
        with anyio.fail_after(3):
            assert await round_trip(stream, b"ping %d\n" % i) == b"ping %d\n" % i


LYING_RELAY = b"""
import struct, sys
header = struct.Struct(">IBI")
out, inp = sys.stdout.buffer, sys.stdin.buffer
out.write(header.pack(0, 5, 12) + b"stix-relay 2")
out.flush()
stream, kind, size = header.unpack(inp.read(9))
inp.read(size)  # the first OPEN: its stream then gets a frame that says 4 GiB
out.write(header.pack(stream, 2, 0xFFFFFFF0) + b"x" * 1000)
out.flush()
inp.read()  # the exec stays open until the daemon ends it
"""


async def test_a_relay_frame_over_the_bound_ends_the_relay_and_the_next_call_starts_anew(
    kube: FakeProcess,
    shell: ExecShell,
    servers: StartServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    echo = servers("echo", echo_lines)
    monkeypatch.setattr(inpod, "preamble", lambda name: b"%d\n" % len(LYING_RELAY) + LYING_RELAY)
    started = time.monotonic()
    with pytest.raises(AgentUnreachable) as caught:
        await shell.agent_client(echo, "liar").call("hello", deadline=20)
    assert time.monotonic() - started < 5  # not the call's deadline: the frame ended it
    message = str(caught.value)
    assert "\n" not in message and "over the 16 MiB bound" in message
    assert not shell.relay.alive
    await until(lambda: not pids_running(kube, b"stix-inpod", b"relay"))  # its exec ended

    monkeypatch.undo()
    stream = await shell.relay.open_stream(echo)
    try:
        await prompt_round_trips(stream, 1)
    finally:
        await stream.aclose()
    assert shell.relay.starts == 2 and shell.relay.alive


def relay_in_a_process(frames: bytes, timeout: float = 20) -> subprocess.CompletedProcess[bytes]:
    """The pod's relay run here on ``frames`` for stdin (never closed: it must end itself)."""
    argv = [sys.executable, *inpod.argv("relay")[1:]]
    with subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    ) as relay:
        assert relay.stdin is not None and relay.stderr is not None
        relay.stdin.write(inpod.preamble("relay") + frames)
        relay.stdin.flush()
        try:
            err = relay.stderr.read()  # until the relay ends
            status = relay.wait(timeout=timeout)
        finally:
            relay.kill()
            relay.stdin.close()
    return subprocess.CompletedProcess(argv, status, b"", err)


def test_the_relay_in_the_pod_refuses_a_lying_frame_in_one_line(
    servers: StartServer,
) -> None:
    huge = relay_in_a_process(HEADER.pack(1, DATA, 0xFFFFFFFF) + b"x" * 100)
    assert huge.returncode != 0
    assert huge.stderr.decode().splitlines() == [
        "stix-relay: the daemon sent a frame of 4294967295 bytes, over the 16 MiB bound"
    ]

    never_reads = threading.Event()
    sink = servers("sink", lambda conn: never_reads.wait(20))
    piece = b"y" * (1024 * 1024)
    past_window = [HEADER.pack(3, OPEN, len(sink)) + sink.encode()]
    past_window += [HEADER.pack(3, DATA, len(piece)) + piece] * 3  # the window is 2 MiB
    try:
        over = relay_in_a_process(b"".join(past_window))
    finally:
        never_reads.set()
    assert over.returncode != 0
    assert over.stderr.decode().splitlines() == [
        "stix-relay: the daemon sent past the window on stream 3"
    ]


async def test_a_slow_reader_gets_every_byte_while_another_stream_answers_promptly(
    shell: ExecShell, servers: StartServer
) -> None:
    blob = os.urandom(32 * 1024 * 1024)  # far past the window: only flow control keeps it all
    written = [0]

    def chatty(conn: socket.socket) -> None:  # a `logs -f` of a chatty job
        for start in range(0, len(blob), 65536):
            conn.sendall(blob[start : start + 65536])
            written[0] = start + 65536

    slow = await shell.relay.open_stream(servers("chatty", chatty))
    other = await shell.relay.open_stream(servers("echo", echo_lines))
    assert isinstance(slow, RelayStream)
    try:
        await until(lambda: slow.unread >= WINDOW_BYTES)  # its window is used up, none read
        await prompt_round_trips(other)
        assert slow.unread == WINDOW_BYTES  # the pod stopped reading that socket ...
        assert written[0] < len(blob) // 2  # ... so the job's writes wait, as over SSH
        got = bytearray()
        with anyio.fail_after(60):
            while len(got) < len(blob):
                got += await slow.receive(16384)  # a slow reader: small pieces
                assert slow.unread <= WINDOW_BYTES
            with pytest.raises(anyio.EndOfStream):
                await slow.receive()
        assert hashlib.sha256(got).digest() == hashlib.sha256(blob).digest()
        await prompt_round_trips(other, 2)
    finally:
        await slow.aclose()
        await other.aclose()
    assert shell.relay.starts == 1


async def test_a_socket_in_the_pod_that_does_not_read_holds_back_only_its_own_stream(
    shell: ExecShell, servers: StartServer
) -> None:
    blob = os.urandom(8 * 1024 * 1024)
    may_read = threading.Event()
    received: list[bytes] = []

    def late_reader(conn: socket.socket) -> None:
        may_read.wait(30)
        data = bytearray()
        while chunk := conn.recv(65536):
            data += chunk
        received.append(bytes(data))

    stuck = await shell.relay.open_stream(servers("late", late_reader))
    other = await shell.relay.open_stream(servers("echo", echo_lines))
    sent = anyio.Event()
    try:
        async with anyio.create_task_group() as tg:

            async def send_all() -> None:
                await stuck.send(blob)
                await stuck.send_eof()
                sent.set()

            tg.start_soon(send_all)
            await prompt_round_trips(other)  # the relay's reader is never stuck on the socket
            assert not sent.is_set()  # the window, not the relay's memory, holds the rest
            may_read.set()
            with anyio.fail_after(30):
                await sent.wait()
        await until(lambda: bool(received), 30)
        assert hashlib.sha256(received[0]).digest() == hashlib.sha256(blob).digest()
    finally:
        may_read.set()
        await stuck.aclose()
        await other.aclose()


# --- large files in a sync --------------------------------------------------------------------


def write_blob(path: Path, size: int, seed: int) -> str:
    """A file of ``size`` bytes that differ (written a slice at a time); its sha256."""
    digest = hashlib.sha256()
    with path.open("wb") as out:
        for start in range(0, size, 1024 * 1024):
            piece = hashlib.sha256(b"%d-%d" % (seed, start)).digest() * 32768
            piece = piece[: min(len(piece), size - start)]
            digest.update(piece)
            out.write(piece)
    return digest.hexdigest()


async def test_syncing_a_file_far_larger_than_a_slice_keeps_the_daemons_memory_bounded(
    shell: ExecShell, tmp_path: Path
) -> None:
    src = tmp_path / "mount"
    src.mkdir()
    size = 48 * 1024 * 1024 + 123  # many slices, and not a whole number of tar blocks
    digest = write_blob(src / "weights.bin", size, seed=1)
    (src / "small.txt").write_text("small\n")
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        assert await shell.put_tree(src, "mount", timeout=120) == 2
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 12 * 1024 * 1024  # slices and pieces in flight, not the 48 MiB file
    status, out, _ = await shell.run("sha256sum mount/weights.bin; cat mount/small.txt", timeout=30)
    assert status == 0 and out.split()[0] == digest and out.endswith("small\n")


def test_a_file_that_changes_size_while_sent_goes_as_it_was_at_its_lstat(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    sizes = {"shrinks": 3 * tarsync.SLICE + 7, "grows": 2 * tarsync.SLICE + 1}
    for name, size in sizes.items():
        write_blob(src / name, size, seed=len(name))
    before = {name: (src / name).read_bytes() for name in sizes}
    tar = tarsync.TarStream(tarsync.plan_tree(src, "dst", "none", {}))
    with (src / "shrinks").open("r+b") as shrinking:
        shrinking.truncate(tarsync.SLICE + 5)
    with (src / "grows").open("ab") as growing:
        growing.write(b"later" * 100_000)
    body = b"".join(tar.chunks())
    assert len(body) == tar.size  # the count announced is the count sent
    with tarfile.open(fileobj=io.BytesIO(body)) as unpacked:
        got = {m.name: unpacked.extractfile(m).read() for m in unpacked if m.isfile()}  # type: ignore[union-attr]
    shrunk = tarsync.SLICE + 5
    assert got["shrinks"] == before["shrinks"][:shrunk] + bytes(sizes["shrinks"] - shrunk)
    assert got["grows"] == before["grows"]
    assert set(tar.times) == set(sizes)  # their stat-time mtimes: the next sync sends them again
