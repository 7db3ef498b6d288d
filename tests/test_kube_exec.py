"""The channel into a pod over the API server's exec only (no SSH), on the fake API server:
commands with stdin and exit status, files and trees as byte-counted streams, the agent
reached through one long-lived relay per pod, and ``ensure_agent`` putting a real agent in a
pod through it."""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
import signal
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import pytest
import yaml

from stixd.agent_bundle import build_agent_zipapp, build_id
from stixd.agent_client import AgentError, AgentUnreachable
from stixd.providers.kubernetes import exec as pod_exec
from stixd.providers.kubernetes.contexts import Clients, read_kubeconfig
from stixd.providers.kubernetes.exec import ExecError
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
    fake = FakeProcess(tmp_path_factory.mktemp("kube"))
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture(scope="module")
def pyz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_agent_zipapp(tmp_path_factory.mktemp("bundle"))


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
