"""``kubernetes.remote_identity`` through a real daemon's launch on the fake API server: which
service account the pods run as, what stix makes for it (once), and whether the user's
kubeconfig goes into the pod. Each test has a namespace of its own; what the cluster holds is
read with kubectl."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from stixd.providers.kubernetes.identity import ACCOUNT, BINDING, ROLE
from stixd.providers.kubernetes.owner import owner_of
from stixd.providers.kubernetes.podspec import pod_name
from tests.conftest import Stix
from tests.kube_fake.process import FakeProcess

_namespaces = itertools.count()


def _setup(stix: Stix, kube: FakeProcess, identity: str, **more: str) -> str:
    """``stix`` on a fresh namespace of ``kube`` with ``remote_identity`` set; its name."""
    namespace = f"ident-{next(_namespaces)}"
    kube.kubectl("create", "namespace", namespace)
    stix.env["KUBECONFIG"] = more.pop("kubeconfig", str(kube.kubeconfig))
    stix.env["STIX__KUBERNETES__NAMESPACE"] = namespace
    stix.env["STIX__KUBERNETES__REMOTE_IDENTITY"] = identity
    stix.env["STIX__KUBERNETES__ALLOWED_CONTEXTS"] = json.dumps(["kube-fake"])
    for key, value in more.items():
        stix.env[f"STIX__KUBERNETES__{key.upper()}"] = value
    stix.run("check", check=True, timeout=60)  # lists the context's nodes for the plan
    return namespace


def _launch(stix: Stix, cluster: str, *more: str) -> None:
    stix.run("launch", "-y", "-c", cluster, "--infra", "k8s", "--cpus", "0.5", *more, "echo up",
             check=True, timeout=120)  # fmt: skip


def _pod(stix: Stix, kube: FakeProcess, namespace: str, cluster: str) -> dict[str, Any]:
    name = pod_name(cluster, 0, owner_of(stix.home))
    pod: dict[str, Any] = kube.kubectl_json("get", "pod", name, "-n", namespace)
    return pod


def _made(kube: FakeProcess, namespace: str) -> dict[str, dict[str, Any]]:
    """What of stix's identity exists in ``namespace``, by kind."""
    listed = kube.kubectl_json("get", "sa,role,rolebinding", "-n", namespace)
    return {o["kind"]: o for o in listed["items"]}


def _kubeconfig_in_pod(kube: FakeProcess, namespace: str, pod: str) -> str | None:
    shown = kube.kubectl("exec", pod, "-n", namespace, "--", "sh", "-c",
                         'cat "$HOME/.kube/config"', check=False)  # fmt: skip
    return shown.stdout if shown.returncode == 0 else None


def test_the_default_makes_stix_a_service_account_with_its_role_once_and_runs_pods_as_it(
    stix: Stix, kube: FakeProcess
) -> None:
    namespace = _setup(
        stix,
        kube,
        "SERVICE_ACCOUNT",
        custom_metadata=json.dumps({"labels": {"team": "ml"}, "annotations": {"cost": "42"}}),
    )
    _launch(stix, "one", "--ports", "8080")
    first = _made(kube, namespace)
    assert {k: o["metadata"]["name"] for k, o in first.items()} == {
        "ServiceAccount": ACCOUNT,
        "Role": ROLE,
        "RoleBinding": BINDING,
    }
    assert first["RoleBinding"]["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": ROLE,
    }
    assert first["RoleBinding"]["subjects"][0]["name"] == ACCOUNT
    ours = kube.kubectl_json("get", "pods,services", "-n", namespace)["items"]
    assert {o["kind"] for o in ours} == {"Pod", "Service"}
    for made in [*first.values(), *ours]:  # custom_metadata goes on every object stix makes
        assert made["metadata"]["labels"]["team"] == "ml", made
        assert made["metadata"]["annotations"]["cost"] == "42", made
    _launch(stix, "two")
    again = _made(kube, namespace)
    assert {k: o["metadata"]["uid"] for k, o in again.items()} == {
        k: o["metadata"]["uid"] for k, o in first.items()
    }  # made once: the second launch kept them
    for cluster in ("one", "two"):
        pod = _pod(stix, kube, namespace, cluster)
        assert pod["spec"]["serviceAccountName"] == ACCOUNT
        assert _kubeconfig_in_pod(kube, namespace, pod["metadata"]["name"]) is None
    shown = kube.kubectl("get", "sa", "-n", namespace).stdout
    assert ACCOUNT in shown, shown
    stix.run("down", "-y", "one", "two", check=True, timeout=60)
    assert set(_made(kube, namespace)) == {"ServiceAccount", "Role", "RoleBinding"}  # shared


def test_local_credentials_puts_only_the_launch_context_of_the_kubeconfig_in_the_pod(
    stix: Stix, kube: FakeProcess, tmp_path: Path
) -> None:
    other = tmp_path / "other.yaml"  # a second context, with a token that must not travel
    other.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "elsewhere",
        "clusters": [{"name": "elsewhere", "cluster": {"server": "https://10.9.9.9"}}],
        "users": [{"name": "elsewhere", "user": {"token": "secret-of-elsewhere"}}],
        "contexts": [{"name": "elsewhere",
                      "context": {"cluster": "elsewhere", "user": "elsewhere"}}],
    }))  # fmt: skip
    merged = f"{kube.kubeconfig}:{other}"
    namespace = _setup(stix, kube, "LOCAL_CREDENTIALS", kubeconfig=merged)
    _launch(stix, "creds")
    pod = _pod(stix, kube, namespace, "creds")
    assert pod["spec"]["serviceAccountName"] == ACCOUNT  # SkyPilot's account as well
    text = _kubeconfig_in_pod(kube, namespace, pod["metadata"]["name"])
    assert text is not None, "no ~/.kube/config in the pod"
    uploaded = yaml.safe_load(text)
    assert [c["name"] for c in uploaded["contexts"]] == ["kube-fake"]
    assert [c["name"] for c in uploaded["clusters"]] == ["kube-fake"]
    assert [u["name"] for u in uploaded["users"]] == ["kube-fake"]
    assert uploaded["current-context"] == "kube-fake"
    assert "secret-of-elsewhere" not in text
    mine = yaml.safe_load(kube.kubeconfig.read_text())
    assert uploaded["users"][0]["user"] == mine["users"][0]["user"]  # it works from the pod
    stix.run("down", "-y", "creds", check=True, timeout=60)


def test_no_upload_runs_pods_as_stix_account_and_uploads_nothing(
    stix: Stix, kube: FakeProcess
) -> None:
    namespace = _setup(stix, kube, "NO_UPLOAD")
    _launch(stix, "bare")
    pod = _pod(stix, kube, namespace, "bare")
    assert pod["spec"]["serviceAccountName"] == ACCOUNT
    assert _kubeconfig_in_pod(kube, namespace, pod["metadata"]["name"]) is None
    assert set(_made(kube, namespace)) == {"ServiceAccount", "Role", "RoleBinding"}
    stix.run("down", "-y", "bare", check=True, timeout=60)


def test_a_named_service_account_is_used_as_it_is_and_nothing_is_made(
    stix: Stix, kube: FakeProcess
) -> None:
    namespace = _setup(stix, kube, "trainer")
    kube.kubectl("create", "serviceaccount", "trainer", "-n", namespace)
    _launch(stix, "named")
    assert _pod(stix, kube, namespace, "named")["spec"]["serviceAccountName"] == "trainer"
    assert [o["metadata"]["name"] for o in _made(kube, namespace).values()] == ["trainer"]
    stix.run("down", "-y", "named", check=True, timeout=60)


def test_a_named_service_account_that_does_not_exist_fails_the_launch_in_one_line(
    stix: Stix, kube: FakeProcess
) -> None:
    namespace = _setup(stix, kube, "ghost")
    launched = stix.run("launch", "-y", "-c", "nosa", "--infra", "k8s", "--cpus", "0.5",
                        "echo up", timeout=120)  # fmt: skip
    assert launched.returncode != 0
    said = [line for line in launched.stderr.splitlines() if "service account ghost" in line]
    assert len(said) == 1 and f"namespace {namespace}" in said[0], launched.stderr
    assert kube.kubectl_json("get", "pods", "-n", namespace)["items"] == []


@pytest.mark.parametrize("bad", ["Trainer", "a b", "x" * 254])
def test_a_remote_identity_that_is_no_account_name_is_refused_by_the_config(
    bad: str,
) -> None:
    import msgspec

    from stixd.providers.kubernetes.config import KubernetesConfig

    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"remote_identity": bad}, KubernetesConfig)


@pytest.mark.anyio
async def test_a_user_not_allowed_to_make_the_account_is_told_to_name_one(
    kube: FakeProcess, tmp_path: Path
) -> None:
    from stixd.providers.kubernetes import identity
    from stixd.providers.kubernetes.api import KubeApi
    from stixd.providers.kubernetes.config import KubernetesConfig
    from stixd.providers.kubernetes.contexts import Clients, read_kubeconfig
    from stixproto.errors import ProvisionError

    kube.kubectl("create", "namespace", "forbidden")
    clients = Clients(read_kubeconfig({"KUBECONFIG": str(kube.kubeconfig)}), tmp_path / "certs")
    try:
        api = KubeApi(await clients.client("kube-fake"), "kube-fake", timeout=10)
        kube.admin("faults", fail_count=1, fail_code=403)  # RBAC's answer to the first POST
        with pytest.raises(ProvisionError) as refused:
            await identity.ensure(api, "forbidden", KubernetesConfig())
        said = refused.value.message
        assert "Forbidden" in said and "remote_identity" in said and "\n" not in said, said
    finally:
        await clients.aclose()
