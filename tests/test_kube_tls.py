"""Kubernetes over HTTPS, as every real cluster is reached: the fake API server with a CA of
the test's own, a kubeconfig carrying that CA (inline as ``certificate-authority-data`` or as a
file) and a client certificate for its user. kubectl and kubernetes-asyncio prove the fake; then
stix checks the context, launches on it and runs commands in the pod through the exec relay
(a WebSocket over the same TLS). A server whose certificate another CA signed is refused in one
line naming the context.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml

from stixd.providers.kubernetes.podspec import LABEL_CLUSTER
from tests.conftest import Stix
from tests.kube_fake.process import FakeProcess
from tests.kube_fake.server import kubeconfig
from tests.kube_fake.tls import Pki, client_context, make_pki, secure

CONTEXT = "kube-tls"
BOUND_S = 25.0


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeProcess]:
    root = tmp_path_factory.mktemp("kube-tls")
    with FakeProcess(
        root, "--context", CONTEXT, "--tls", str(root / "pki"), "--client-certs"
    ) as made:
        yield made
    assert made.pod_processes() == []


def pki_of(fake: FakeProcess) -> Pki:
    return Pki(fake.workdir / "pki")


def config_for(
    fake: FakeProcess,
    where: Path,
    *,
    inline: bool,
    ca: Pki | None = None,
    client: Pki | None = None,
) -> Path:
    """A kubeconfig for the fake, its user the fake's client certificate (or ``client``'s, one
    another CA signed); trusting the fake's CA, or ``ca`` (another's: the fake's certificate
    is then one it did not sign)."""
    config = secure(kubeconfig(fake.url, CONTEXT), pki_of(fake), client_certs=True, inline=inline)
    if ca is not None:
        data = base64.b64encode(ca.ca_cert.read_bytes()).decode()
        config["clusters"][0]["cluster"] = {"server": fake.url, "certificate-authority-data": data}
    if client is not None:
        config["users"][0]["user"] = {"client-certificate": str(client.client_cert)}
        config["users"][0]["user"]["client-key"] = str(client.client_key)
    where.write_text(yaml.safe_dump(config))
    return where


def kubectl(config: Path, cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["kubectl", "--kubeconfig", str(config), "--cache-dir", str(cache), *args],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )


def one_line(said: str) -> str:
    lines = [x for x in said.strip().splitlines() if x.strip() and not x.lstrip().startswith("⚙")]
    assert len(lines) == 1, said
    return lines[0]


def test_kubectl_reaches_the_fake_over_https_by_its_ca_and_client_certificate_only(
    fake: FakeProcess, tmp_path: Path
) -> None:
    assert fake.url.startswith("https://")
    cache = tmp_path / "cache"
    for inline in (True, False):
        config = config_for(fake, tmp_path / f"inline-{inline}", inline=inline)
        nodes = kubectl(config, cache, "get", "nodes", "-o", "json")
        assert nodes.returncode == 0, nodes.stderr
        assert len(json.loads(nodes.stdout)["items"]) == 4
    other = make_pki(tmp_path / "other", "another-ca")
    wrong = config_for(fake, tmp_path / "wrong-ca", inline=True, ca=other)
    refused = kubectl(wrong, tmp_path / "cache-wrong", "get", "nodes")
    assert refused.returncode != 0 and "certificate" in refused.stderr, refused.stderr
    # neither a certificate nor a token: 401, as a server allowing no anonymous request answers
    context = client_context(pki_of(fake).ca_cert.read_text())
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
    )
    with pytest.raises(urllib.error.HTTPError) as unauthorized:
        opener.open(f"{fake.url}/api/v1/nodes", timeout=10)
    assert unauthorized.value.code == 401
    unauthorized.value.close()
    with pytest.raises(urllib.error.URLError):  # the system's CAs do not know the fake's
        urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
            f"{fake.url}/api/v1/nodes", timeout=10
        )
    context.load_cert_chain(pki_of(fake).client_cert, pki_of(fake).client_key)
    with opener.open(f"{fake.url}/api/v1/nodes", timeout=10) as answer:
        assert answer.status == 200


@pytest.mark.anyio
async def test_kubernetes_asyncio_lists_and_execs_over_https_with_a_client_certificate(
    fake: FakeProcess, tmp_path: Path
) -> None:
    from kubernetes_asyncio.client import CoreV1Api
    from kubernetes_asyncio.config import new_client_from_config

    from stixd.providers.kubernetes import exec as kube_exec
    from stixd.providers.kubernetes.seams import PodRef

    config = config_for(fake, tmp_path / "kubeconfig", inline=True)
    client = await new_client_from_config(
        config_file=str(config), context=CONTEXT, temp_file_path=str(tmp_path)
    )
    try:
        nodes = await CoreV1Api(client).list_node()
        assert len(nodes.items) == 4
        fake.kubectl("run", "tls-pod", "--image=x", "--command", "--", "sleep", "60")
        pod = PodRef(CONTEXT, "default", "tls-pod", container="tls-pod")
        deadline = time.monotonic() + 20
        while (await CoreV1Api(client).read_namespaced_pod("tls-pod", "default")).status.phase != (
            "Running"
        ):
            assert time.monotonic() < deadline, "the pod did not run"
            await anyio.sleep(0.1)
        done = await kube_exec.run(client, pod, ["sh", "-c", "echo over-tls"], timeout=20)
        assert (done.status, done.stdout) == (0, b"over-tls\n")
    finally:
        await client.close()
        fake.kubectl("delete", "pod", "tls-pod", "--grace-period", "0", check=False)


def objects(fake: FakeProcess, cluster: str) -> list[dict[str, Any]]:
    found = fake.kubectl_json("get", "pods,services", "-l", f"{LABEL_CLUSTER}={cluster}")
    return [o for o in found["items"] if not o["metadata"].get("deletionTimestamp")]


@pytest.mark.slow  # a launch over the fake: about 20 s each
@pytest.mark.parametrize("inline", [True, False], ids=["ca_inline", "ca_as_files"])
def test_stix_checks_launches_and_runs_commands_in_a_pod_over_https(
    stix: Stix, fake: FakeProcess, tmp_path: Path, inline: bool
) -> None:
    stix.env["KUBECONFIG"] = str(config_for(fake, tmp_path / "kubeconfig", inline=inline))
    stix.env["STIX__KUBERNETES__ALLOWED_CONTEXTS"] = json.dumps([CONTEXT])
    checked = stix.run("check", check=True, timeout=60)
    assert f"{CONTEXT}: reachable" in checked.stdout, checked.stdout
    launched = stix.run(
        "launch", "-y", "-c", "tls", "--infra", "k8s", "echo job-in-$STIX_POD_NAME", timeout=120
    )
    assert launched.returncode == 0, launched.stderr
    assert "job-in-tls" in launched.stdout, launched.stdout
    again = stix.run("exec", "tls", "echo second-job", timeout=60)
    assert again.returncode == 0 and "second-job" in again.stdout, again.stderr
    shell = stix.run("ssh", "tls", "echo", "shell-in-$STIX_POD_NAME", timeout=60)
    assert shell.returncode == 0 and "shell-in-tls" in shell.stdout, shell.stderr
    stix.run("down", "-y", "tls", check=True, timeout=60)
    assert objects(fake, "tls") == []


def test_a_server_certificate_another_ca_signed_is_refused_in_one_line_naming_the_context(
    stix: Stix, fake: FakeProcess, tmp_path: Path
) -> None:
    other = make_pki(tmp_path / "other", "another-ca")
    stix.env["KUBECONFIG"] = str(config_for(fake, tmp_path / "kubeconfig", inline=True, ca=other))
    stix.env["STIX__KUBERNETES__ALLOWED_CONTEXTS"] = json.dumps([CONTEXT])
    started = time.monotonic()
    checked = stix.run("check", timeout=60)
    said = checked.stdout.split("\nkubernetes")[-1]
    assert CONTEXT in said and "TLS certificate is not trusted" in said, checked.stdout
    launched = stix.run("launch", "-y", "-c", "tls-no", "--infra", "k8s", "echo never", timeout=60)
    assert launched.returncode != 0
    line = one_line(launched.stderr)
    assert CONTEXT in line and "TLS certificate is not trusted" in line, line
    assert "certificate-authority-data" in line and "Traceback" not in line, line
    assert time.monotonic() - started < 2 * BOUND_S
    assert objects(fake, "tls-no") == []
    assert stix.daemon_pid(), "the daemon died"


def test_a_client_certificate_another_ca_signed_is_refused_in_one_line_naming_the_field(
    stix: Stix, fake: FakeProcess, tmp_path: Path
) -> None:
    """The server drops the connection (TLS 1.3 refuses a client certificate after the
    handshake, so the client sees no TLS error): the line says which field to check."""
    stranger = make_pki(tmp_path / "stranger", "a-stranger-ca")
    config = config_for(fake, tmp_path / "kubeconfig", inline=True, client=stranger)
    stix.env["KUBECONFIG"] = str(config)
    stix.env["STIX__KUBERNETES__ALLOWED_CONTEXTS"] = json.dumps([CONTEXT])
    checked = stix.run("check", timeout=60)
    said = checked.stdout.split("\nkubernetes")[-1]
    assert CONTEXT in said and "client-certificate-data" in said, checked.stdout
    assert stix.daemon_pid(), "the daemon died"
