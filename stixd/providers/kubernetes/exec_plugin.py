"""A kubeconfig user's ``exec`` credential plugin (kubelogin, ``aws eks get-token``,
``gke-gcloud-auth-plugin``), run with a deadline.

``kubernetes_asyncio`` runs the plugin with no timeout, and a cancelled wait leaves the plugin
running (its asyncio process is killed only when garbage collected). An expired SSO login
makes such a plugin wait for a browser forever. So the loader's ``ExecProvider`` is replaced,
once, by one whose ``run`` starts the plugin in a session of its own and, past the deadline or
when cancelled, kills that whole session. The protocol is the library's: the
``KUBERNETES_EXEC_INFO`` request in the environment, an ``ExecCredential`` on stdout.
"""

from __future__ import annotations

import contextvars
import json
import os
import signal
import subprocess
from collections.abc import Sequence
from typing import Any

import anyio
import anyio.abc

PLUGIN_TIMEOUT_S = 10.0
MAX_OUTPUT = 1 << 20
"""Bytes of a plugin's stdout (and of its stderr) read: a credential is a few kB."""

deadline_s: contextvars.ContextVar[float] = contextvars.ContextVar(
    "kube_exec_plugin_deadline_s", default=PLUGIN_TIMEOUT_S
)
"""Seconds a plugin may run, as the caller making the client set it."""


def install() -> None:
    """Make the loader run every exec plugin through `run_plugin` (idempotent)."""
    from kubernetes_asyncio.config import kube_config
    from kubernetes_asyncio.config.exec_provider import ExecProvider

    if getattr(kube_config, "ExecProvider", None) is not ExecProvider:
        return  # replaced already

    class BoundedExecProvider(ExecProvider):
        async def run(self, previous_response: str | None = None) -> Any:
            return await run_plugin(self.args, self.env, str(self.api_version), deadline_s.get())

    setattr(kube_config, "ExecProvider", BoundedExecProvider)  # noqa: B010 (not exported)


class PluginError(Exception):
    """The plugin gave no credential: one line saying why, naming it."""


async def _read(stream: anyio.abc.ByteReceiveStream | None, into: bytearray) -> None:
    if stream is None:
        return
    async for chunk in stream:
        into += chunk[: max(0, MAX_OUTPUT - len(into))]


def _kill_session(process: anyio.abc.Process) -> None:
    if process.returncode is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGKILL)  # the plugin and whatever it started
    except (ProcessLookupError, PermissionError):
        process.kill()


async def run_plugin(
    argv: Sequence[str], env: dict[str, str], api_version: str, deadline: float
) -> Any:
    """The plugin's ``status`` (token or client certificate); `PluginError` when it fails,
    answers garbage or is still running after ``deadline`` seconds (it is killed then)."""
    name = os.path.basename(str(argv[0])) if argv else "?"
    request = {"apiVersion": api_version, "kind": "ExecCredential", "spec": {"interactive": False}}
    out, err = bytearray(), bytearray()
    process = await anyio.open_process(
        [str(a) for a in argv],
        stdin=subprocess.DEVNULL,
        env={**env, "KUBERNETES_EXEC_INFO": json.dumps(request)},
        start_new_session=True,
    )
    try:
        with anyio.move_on_after(deadline) as waited:
            async with anyio.create_task_group() as tg:
                tg.start_soon(_read, process.stdout, out)
                tg.start_soon(_read, process.stderr, err)
            code = await process.wait()
    finally:
        with anyio.CancelScope(shield=True):
            _kill_session(process)
            await process.aclose()
    if waited.cancelled_caught:
        raise PluginError(
            f"credential plugin {name} gave no credential within {deadline:g} s (killed); "
            "log in again (an expired SSO login waits for a browser)"
        )
    said = err.decode(errors="replace").strip().splitlines()
    if code != 0:
        why = f": {said[-1][:200]}" if said else ""
        raise PluginError(f"credential plugin {name} exited with {code}{why}")
    try:
        data = json.loads(out)
    except (ValueError, RecursionError):
        raise PluginError(f"credential plugin {name} did not print an ExecCredential") from None
    if not isinstance(data, dict) or not isinstance(data.get("status"), dict):
        raise PluginError(f"credential plugin {name} printed no ExecCredential status")
    if data.get("apiVersion") != api_version:
        raise PluginError(
            f"credential plugin {name} answered {data.get('apiVersion')}, not {api_version}"
        )
    return data["status"]
