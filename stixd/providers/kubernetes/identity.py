"""Who a cluster's pods are to the API server: ``kubernetes.remote_identity``, as SkyPilot
means it.

- ``SERVICE_ACCOUNT`` (the default), ``LOCAL_CREDENTIALS`` and ``NO_UPLOAD``: pods run as
  stix's own service account, ``ACCOUNT``, made in the namespace on first use together with a
  Role granting it everything in that namespace and the RoleBinding between them (SkyPilot's
  ``skypilot-service-account`` and its role); what exists is kept (409 is success), so two
  launches, or two daemons, make each object once. They are shared by every cluster of the
  namespace and carry no cluster's label: ``down`` leaves them, the leak scan ignores them.
- ``LOCAL_CREDENTIALS`` also puts the user's kubeconfig in each pod at ``~/.kube/config``,
  cut down to the one context the cluster runs in (its cluster and user, certificate files
  inlined), as SkyPilot uploads ``kubectl config view --minify --flatten``.
- ``NO_UPLOAD``: the account, and nothing uploaded.
- Any other value names an existing service account the pods run as; stix makes no account,
  role or binding for it, and a launch fails at once, in one line, when it does not exist.
"""

from __future__ import annotations

import base64
import copy
import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import yaml

from stixd.providers.kubernetes.api import KubeApi, KubeApiError, path
from stixd.providers.kubernetes.config import KubernetesConfig
from stixd.providers.kubernetes.seams import PodShell
from stixproto.errors import ProvisionError

ACCOUNT = "stix-service-account"
ROLE = f"{ACCOUNT}-role"
BINDING = f"{ACCOUNT}-role-binding"
MODES = ("SERVICE_ACCOUNT", "LOCAL_CREDENTIALS", "NO_UPLOAD")
"""SkyPilot's modes: each runs pods as ``ACCOUNT``; any other value is an account's name."""
KUBECONFIG_IN_POD = "~/.kube/config"
LABEL_PART_OF = "app.kubernetes.io/part-of"
_RBAC = "rbac.authorization.k8s.io"
_FILE_FIELDS = {
    "certificate-authority": "certificate-authority-data",
    "client-certificate": "client-certificate-data",
    "client-key": "client-key-data",
}


def account_of(remote_identity: str) -> str:
    """The service account pods run as."""
    return ACCOUNT if remote_identity in MODES else remote_identity


def uploads_kubeconfig(remote_identity: str) -> bool:
    return remote_identity == "LOCAL_CREDENTIALS"


def objects(namespace: str, config: KubernetesConfig) -> list[tuple[str, dict[str, Any]]]:
    """(collection path, body) of the account, its Role and its RoleBinding, in that order
    (a binding names both)."""
    metadata = {
        "namespace": namespace,
        "labels": {**config.custom_metadata.labels, LABEL_PART_OF: "stix"},
        **(
            {"annotations": dict(config.custom_metadata.annotations)}
            if config.custom_metadata.annotations
            else {}
        ),
    }
    rbac = f"/apis/{_RBAC}/v1/namespaces/{quote(namespace, safe='')}"

    def named(name: str) -> dict[str, Any]:
        return {**copy.deepcopy(metadata), "name": name}

    return [
        (
            path("namespaces", namespace, "serviceaccounts"),
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": named(ACCOUNT)},
        ),
        (
            f"{rbac}/roles",
            {
                "apiVersion": f"{_RBAC}/v1",
                "kind": "Role",
                "metadata": named(ROLE),
                # what SkyPilot grants its account: everything in the namespace (so a job in
                # the pod can itself launch and take down pods there)
                "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}],
            },
        ),
        (
            f"{rbac}/rolebindings",
            {
                "apiVersion": f"{_RBAC}/v1",
                "kind": "RoleBinding",
                "metadata": named(BINDING),
                "subjects": [{"kind": "ServiceAccount", "name": ACCOUNT, "namespace": namespace}],
                "roleRef": {"apiGroup": _RBAC, "kind": "Role", "name": ROLE},
            },
        ),
    ]


async def ensure(api: KubeApi, namespace: str, config: KubernetesConfig) -> None:
    """The service account the pods will run as exists: made with its role (SkyPilot's
    modes), or checked (an account's name)."""
    if config.remote_identity not in MODES:
        await _exists(api, namespace, config.remote_identity)
        return
    for where, body in objects(namespace, config):
        try:
            await api.call("POST", where, body=body)
        except KubeApiError as exc:
            if exc.status == 403:
                raise ProvisionError(
                    f"{exc.message}; stix cannot make its service account {ACCOUNT} here: set "
                    "kubernetes.remote_identity to an existing service account's name"
                ) from None
            if exc.status != 409:  # made before (or meanwhile by another launch): kept
                raise


async def _exists(api: KubeApi, namespace: str, account: str) -> None:
    try:
        await api.call("GET", path("namespaces", namespace, "serviceaccounts", account))
    except KubeApiError as exc:
        if exc.status != 404:
            raise
        raise ProvisionError(
            f"service account {account} (kubernetes.remote_identity) does not exist in "
            f"namespace {namespace} of context {api.context}: create it, or set "
            "remote_identity to SERVICE_ACCOUNT for stix to make its own"
        ) from None


def minified(paths: tuple[Path, ...], context: str) -> str:
    """The kubeconfig files ``paths`` (kubectl's order: the first to name an entry wins) cut
    down to ``context``: its entry, cluster and user, files referred to inlined as data."""
    found: dict[str, dict[str, Any]] = {"contexts": {}, "clusters": {}, "users": {}}
    home: dict[tuple[str, str], Path] = {}
    for file in paths:
        try:
            raw = yaml.safe_load(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise ProvisionError(f"kubeconfig {file} cannot be read: {exc}") from None
        for part, named in found.items():
            entries = raw.get(part) if isinstance(raw, dict) else None
            for item in entries if isinstance(entries, list) else []:
                name = item.get("name") if isinstance(item, dict) else None
                if isinstance(name, str) and name not in named:
                    named[name] = copy.deepcopy(item)
                    home[(part, name)] = file.parent
    entry = found["contexts"].get(context)
    inner = entry.get("context") if isinstance(entry, dict) else None
    if not isinstance(inner, dict):
        raise ProvisionError(f"kubeconfig names no context {context}")
    cluster_name, user_name = str(inner.get("cluster")), str(inner.get("user"))
    cluster = found["clusters"].get(cluster_name, {"name": cluster_name, "cluster": {}})
    user = found["users"].get(user_name, {"name": user_name, "user": {}})
    _inline(cluster.get("cluster"), home.get(("clusters", cluster_name), Path(".")))
    _inline(user.get("user"), home.get(("users", user_name), Path(".")))
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [user],
        "contexts": [entry],
        "current-context": context,
        "preferences": {},
    }
    return yaml.safe_dump(doc, sort_keys=False)


def _inline(fields: Any, base: Path) -> None:
    """Certificate and key files as ``*-data`` (the pod has none of this machine's files)."""
    if not isinstance(fields, dict):
        return
    for key, data_key in _FILE_FIELDS.items():
        name = fields.pop(key, None)
        if not isinstance(name, str) or data_key in fields:
            continue
        file = (base / Path(name).expanduser()).resolve()
        try:
            fields[data_key] = base64.b64encode(file.read_bytes()).decode()
        except OSError as exc:
            raise ProvisionError(f"kubeconfig names {key} {file}, unreadable: {exc}") from None


def for_pod(paths: tuple[Path, ...], context: str, into: Path) -> Path:
    """The minified kubeconfig written to a private file under ``into`` (to be sent)."""
    into.mkdir(parents=True, exist_ok=True, mode=0o700)
    file = into / f"kubeconfig-{base64.urlsafe_b64encode(context.encode()).decode()[:64]}"
    file.touch(mode=0o600)
    file.write_text(minified(paths, context), encoding="utf-8")
    return file


async def give_kubeconfig(shells: Sequence[PodShell], paths: tuple[Path, ...], context: str,
                          into: Path) -> None:  # fmt: skip
    """``LOCAL_CREDENTIALS``: the minified kubeconfig at ``~/.kube/config`` in every pod."""
    file = for_pod(paths, context, into)
    try:
        async with anyio.create_task_group() as tg:
            for shell in shells:
                tg.start_soon(functools.partial(shell.put_file, file, KUBECONFIG_IN_POD))
    finally:
        file.unlink(missing_ok=True)
