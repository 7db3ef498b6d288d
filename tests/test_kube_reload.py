"""The kubeconfig is read again when its file changes, by a running daemon: a context added is
seen by `check` and `show-gpus`, a rotated token is used, and a file that breaks keeps the last
good kubeconfig, said once in the log and in `check`."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from stixd.providers.kubernetes.contexts import Clients, read_kubeconfig
from tests.conftest import Stix
from tests.kube_fake.auth import TOKEN
from tests.kube_fake.process import FakeProcess

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="needs kubectl")

CONTEXT = "kube-r"


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeProcess]:
    with FakeProcess(tmp_path_factory.mktemp("kube-reload"), "--context", CONTEXT) as made:
        yield made


def write(where: Path, config: dict[str, Any] | str) -> None:
    """Written whole and renamed into place, as editors and `kubectl config` do."""
    tmp = where.with_name(f".{where.name}.tmp")
    tmp.write_text(config if isinstance(config, str) else yaml.safe_dump(config))
    os.replace(tmp, where)


def fake_config(fake: FakeProcess, token: str = TOKEN, added: str | None = None) -> dict[str, Any]:
    """The fake's kubeconfig with ``token``; with ``added``, one more context of that name on
    the same cluster and user."""
    config: dict[str, Any] = yaml.safe_load(fake.kubeconfig.read_text())
    config["users"][0]["user"]["token"] = token
    if added:
        inner = {"cluster": CONTEXT, "user": CONTEXT, "namespace": "default"}
        config["contexts"].append({"name": added, "context": inner})
    return config


def said_of(stix: Stix, context: str) -> str:
    """What `check` says of ``context`` (its line in the kubernetes section)."""
    checked = stix.run("check", timeout=60)
    section = checked.stdout.split("\nkubernetes")[-1]
    lines = [line.strip() for line in section.splitlines() if line.strip().startswith(context)]
    return lines[0] if lines else section


@pytest.fixture
def k8s(stix: Stix, fake: FakeProcess, tmp_path: Path) -> tuple[Stix, Path]:
    kubeconfig = tmp_path / "kubeconfig"
    write(kubeconfig, fake_config(fake))
    stix.env["KUBECONFIG"] = str(kubeconfig)
    stix.env["STIX__KUBERNETES__ALLOWED_CONTEXTS"] = json.dumps([CONTEXT, "added"])
    assert "reachable" in said_of(stix, f"{CONTEXT}:")
    return stix, kubeconfig


def test_a_context_added_to_the_kubeconfig_is_used_without_a_restart(
    k8s: tuple[Stix, Path], fake: FakeProcess
) -> None:
    stix, kubeconfig = k8s
    pid = stix.daemon_pid()
    assert "reachable" not in said_of(stix, "added:")
    write(kubeconfig, fake_config(fake, added="added"))
    assert "reachable" in said_of(stix, "added:")
    gpus = stix.run("show-gpus", "--infra", "k8s/added", timeout=60)
    assert gpus.returncode == 0 and "gpu-1" in gpus.stdout, gpus.stdout + gpus.stderr
    assert stix.daemon_pid() == pid, "the daemon restarted"
    log = (stix.home / "stixd.log").read_text()
    assert "kubeconfig_reread" in log and "added" in log


def test_a_rotated_token_is_used_by_the_next_call(
    k8s: tuple[Stix, Path], fake: FakeProcess
) -> None:
    stix, kubeconfig = k8s
    write(kubeconfig, fake_config(fake, token="expired"))
    assert "credentials refused" in said_of(stix, f"{CONTEXT}:")
    write(kubeconfig, fake_config(fake, token=TOKEN))
    assert "reachable" in said_of(stix, f"{CONTEXT}:")


def test_a_kubeconfig_that_breaks_keeps_the_last_good_one_said_once(
    k8s: tuple[Stix, Path], fake: FakeProcess
) -> None:
    stix, kubeconfig = k8s
    write(kubeconfig, "apiVersion: v1\nclusters: [\n  - {name: : :\n\t}}}")
    for _ in range(2):
        checked = stix.run("check", timeout=60)
        section = checked.stdout.split("\nkubernetes")[-1]
        assert "reachable" in said_of(stix, f"{CONTEXT}:"), section
        assert "goes on with the kubeconfig it read before" in section, section
        assert "cannot be read" in section, section
    log = (stix.home / "stixd.log").read_text()
    assert log.count("kubeconfig_unreadable_kept_last_good") == 1, log[-2000:]
    write(kubeconfig, fake_config(fake))
    checked = stix.run("check", timeout=60)
    assert "read before" not in checked.stdout and "reachable" in checked.stdout


def test_only_the_contexts_that_changed_get_a_new_client(fake: FakeProcess, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    write(kubeconfig, fake_config(fake, added="added"))

    async def main() -> tuple[bool, bool, bool]:
        config = read_kubeconfig({"KUBECONFIG": str(kubeconfig)})
        clients = Clients(config, tmp_path / "certs")
        try:
            first, other = await clients.client(CONTEXT), await clients.client("added")
            changed = fake_config(fake, added="added")
            changed["contexts"][1]["context"]["namespace"] = "elsewhere"
            changed["current-context"] = "added"
            write(kubeconfig, changed)
            same = await clients.client(CONTEXT) is first
            remade = await clients.client("added") is not other
            return same, remade, clients.config.current == "added"
        finally:
            await clients.aclose()

    assert asyncio.run(main()) == (True, True, True)
