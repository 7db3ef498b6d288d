"""A context that does not answer (a credential plugin waiting for a login that never comes, an
API server behind a black hole) fails alone, within a bound, and holds up neither the other
contexts nor a launch that Kubernetes cannot take."""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import anyio
import pytest
import yaml

from stixd.providers.kubernetes.api import KubeApi
from stixd.providers.kubernetes.config import KubernetesConfig
from stixd.providers.kubernetes.contexts import Clients, KubeconfigError, read_kubeconfig
from stixd.providers.kubernetes.node_catalog import READ_TIMEOUT_S, NodeCatalog, catalog_root
from tests.conftest import Stix
from tests.kube_fake.auth import TOKEN
from tests.kube_fake.process import FakeProcess

HUNG_SLEEP = "977.31"  # a sleep no other test starts: its process is found by this argument


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeProcess]:
    with FakeProcess(tmp_path_factory.mktemp("kube-slow"), "--context", "kube-ok") as made:
        yield made


def other_context(path: Path, name: str, server: str, user: Mapping[str, object]) -> Path:
    """A kubeconfig of one more context, ``name``, at ``server`` as ``user``."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": server}}],
        "users": [{"name": name, "user": dict(user)}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
    }
    path.write_text(yaml.safe_dump(config))
    return path


def hung_login(tmp_path: Path, fake: FakeProcess) -> str:
    """KUBECONFIG of the fake's context and ``hung``, whose credential plugin never answers
    (as kubelogin waiting for a browser after the SSO session expired)."""
    plugin = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "command": "sleep",
            "args": [HUNG_SLEEP],
        }
    }
    hung = other_context(tmp_path / "hung.yaml", "hung", fake.url, plugin)
    return f"{fake.kubeconfig}:{hung}"


def plugins_running() -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv[:2] == [b"sleep", HUNG_SLEEP.encode()]:
                found.append(int(proc.name))
    return found


def test_a_hung_credential_plugin_fails_its_context_alone_in_one_line_and_is_killed(
    fake: FakeProcess, tmp_path: Path
) -> None:
    env = {"KUBECONFIG": hung_login(tmp_path, fake)}
    clients = Clients(read_kubeconfig(env), tmp_path / "certs", plugin_timeout=3)
    failed: list[str] = []

    async def go() -> bool:
        async def hung() -> None:
            with pytest.raises(KubeconfigError) as refused:
                await clients.client("hung")
            failed.append(refused.value.message)

        try:
            with anyio.fail_after(20):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(hung)
                    while not plugins_running():
                        await anyio.sleep(0.02)
                    await clients.client("kube-ok")  # another context is not held up
                    other_first = not failed
            return other_first
        finally:
            await clients.aclose()

    started = time.monotonic()
    assert anyio.run(go)
    assert time.monotonic() - started < 10
    [message] = failed
    assert "\n" not in message and "hung" in message and "plugin sleep" in message
    assert "within 3 s" in message
    assert plugins_running() == []


def test_a_node_listing_is_bounded_when_a_plugin_hangs_and_names_the_context(
    fake: FakeProcess, tmp_path: Path
) -> None:
    env = {"KUBECONFIG": hung_login(tmp_path, fake)}
    clients = Clients(read_kubeconfig(env), tmp_path / "certs", plugin_timeout=1.5)
    nodes = NodeCatalog(
        clients, KubernetesConfig(allowed_contexts=("hung", "kube-ok")), catalog_root(tmp_path)
    )

    async def go() -> None:
        try:
            with anyio.fail_after(15):
                await nodes.refresh()
        finally:
            await clients.aclose()

    anyio.run(go)
    assert "plugin sleep" in nodes.problems["hung"]
    assert "kube-ok" in nodes.path.read_text()
    assert plugins_running() == []


def test_a_credential_plugin_that_answers_gives_its_token_to_the_context(
    fake: FakeProcess, tmp_path: Path
) -> None:
    answer = {
        "apiVersion": "client.authentication.k8s.io/v1beta1",
        "kind": "ExecCredential",
        "status": {"token": TOKEN},
    }
    plugin = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "command": sys.executable,
            "args": ["-c", f"print({json.dumps(json.dumps(answer))})"],
        }
    }
    path = other_context(tmp_path / "sso.yaml", "sso", fake.url, plugin)
    clients = Clients(read_kubeconfig({"KUBECONFIG": str(path)}), tmp_path / "certs")

    async def go() -> dict[str, object]:
        try:
            return await KubeApi(await clients.client("sso"), "sso").call("GET", "/api/v1/nodes")
        finally:
            await clients.aclose()

    assert anyio.run(go)["items"]


def test_a_stale_node_listing_is_redone_in_the_background_while_plans_read_the_last(
    fake: FakeProcess, tmp_path: Path
) -> None:
    now = [0.0]
    clients = Clients(read_kubeconfig({"KUBECONFIG": str(fake.kubeconfig)}), tmp_path / "certs")
    nodes = NodeCatalog(
        clients, KubernetesConfig(), catalog_root(tmp_path), max_age=30, clock=lambda: now[0]
    )

    async def go() -> None:
        try:
            await nodes.refresh_soon()  # the first listing is waited for
            assert "kube-ok" in nodes.path.read_text()
            fake.admin("faults", delay=30)  # the API server stops answering
            now[0] = 31.0
            started = time.monotonic()
            await nodes.refresh_soon()
            assert time.monotonic() - started < 0.5  # the plan goes on at once ...
            assert "kube-ok" in nodes.path.read_text()  # ... on the last listing
            with anyio.fail_after(READ_TIMEOUT_S + 5):  # the listing in the background ends
                while "kube-ok" not in nodes.problems:
                    await anyio.sleep(0.05)
            assert "no answer" in nodes.problems["kube-ok"]
        finally:
            fake.admin("faults", delay=0)
            await nodes.aclose()
            await clients.aclose()

    anyio.run(go)


@pytest.mark.parametrize("infra", [None, "fake"])
def test_a_launch_kubernetes_cannot_take_never_asks_a_kubernetes_api(
    stix: Stix, tmp_path: Path, infra: str | None
) -> None:
    """The kubeconfig's current context is a black hole (connections are taken, never
    answered): a task this machine runs, or one naming another cloud, launches without a
    single connection to it."""
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(64)
    taken: list[socket.socket] = []

    def take() -> None:
        with contextlib.suppress(OSError):
            while True:
                taken.append(hole.accept()[0])

    threading.Thread(target=take, daemon=True).start()
    try:
        url = f"https://127.0.0.1:{hole.getsockname()[1]}"
        kubeconfig = other_context(tmp_path / "hole.yaml", "hole", url, {"token": "x"})
        config = yaml.safe_load(kubeconfig.read_text())
        kubeconfig.write_text(yaml.safe_dump({**config, "current-context": "hole"}))
        stix.env.update(
            KUBECONFIG=str(kubeconfig), STIX__FAKE__ENABLED="true", STIX__FAKE__RUN_SECONDS="0"
        )
        named = ["--infra", infra, "-d"] if infra else []
        started = time.monotonic()
        stix.run("launch", "-c", "here", "-y", *named, "echo hi", check=True)
        took = time.monotonic() - started
        assert taken == [], f"{len(taken)} connection(s) to the Kubernetes API"
        assert took < READ_TIMEOUT_S + 10
    finally:
        stix.run("down", "-y", "here")
        hole.close()
        for conn in taken:
            conn.close()


def test_callers_queued_behind_a_hung_plugin_fail_together_not_one_run_after_another(
    fake: FakeProcess, tmp_path: Path
) -> None:
    env = {"KUBECONFIG": hung_login(tmp_path, fake)}
    clients = Clients(read_kubeconfig(env), tmp_path / "certs", plugin_timeout=2)
    failed: list[str] = []

    async def one() -> None:
        with pytest.raises(KubeconfigError) as refused:
            await clients.client("hung")
        failed.append(refused.value.message)

    async def go() -> float:
        started = time.monotonic()
        try:
            async with anyio.create_task_group() as tg:
                for _ in range(3):
                    tg.start_soon(one)
            return time.monotonic() - started
        finally:
            await clients.aclose()

    took = anyio.run(go)
    assert len(failed) == 3 and len(set(failed)) == 1 and "plugin sleep" in failed[0]
    assert took < 3.5  # one plugin run of 2 s, not three
    assert plugins_running() == []
