"""A pod's sandbox: a directory as its home and the real processes that run in it — the
container's command and every `exec` — each in its own process group and each marked by an
environment variable, so deleting the pod finds and kills them all, even those that daemonized.

By default pods share the machine's network (pod IP 127.0.0.1, one port space). Given a
`NodeNetworks` (root, `ip`, `nsenter`), each pod gets a network namespace of its own with an
address of the fake's subnet, made by the local provider's code, and every process of the pod
enters it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import time
from pathlib import Path

from stixd.providers.local.netns import NodeNet, NodeNetworks
from tests.kube_fake.meta import Obj

MARK = "KUBE_FAKE_SANDBOX"
POD_IP = "127.0.0.1"  # the nodes' address, and every pod's without a network of its own
POD_SUBNET = "10.179.0.0/16"  # pod networks, apart from the local provider's 10.177.0.0/16


def pids_marked(mark: str) -> list[int]:
    """Live processes whose environment carries `KUBE_FAKE_SANDBOX=<mark>` (or a path under it)."""
    needle = f"{MARK}={mark}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(") ", 1)[-1].split()[0]
        except OSError:
            continue
        if state != "Z" and any(v.startswith(needle) for v in environ.split(b"\0")):
            found.append(int(entry))
    return found


def _container_env(container: Obj, pod: Obj) -> dict[str, str]:
    """The container's `env`: plain values, and the downward-API fields a launcher uses."""
    env = {}
    for item in container.get("env") or []:
        if "value" in item:
            env[item["name"]] = str(item["value"])
        elif path := ((item.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath"):
            node: object = pod
            for part in path.split("."):
                node = node.get(part, "") if isinstance(node, dict) else ""
            env[item["name"]] = str(node)
    return env


class Sandbox:
    def __init__(self, root: Path, pod: Obj, networks: NodeNetworks | None = None) -> None:
        meta = pod["metadata"]
        self.networks: NodeNetworks | None = networks
        self.net: NodeNet | None = None
        self.ip = POD_IP
        self.home = root / "pods" / f"{meta['namespace']}_{meta['name']}_{meta['uid'][:8]}"
        self.log = self.home.with_suffix(".log")
        self.home.mkdir(parents=True)
        self.log.touch()
        container = pod["spec"]["containers"][0]
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "HOME": str(self.home),
            "HOSTNAME": meta["name"],
            "KUBERNETES_SERVICE_HOST": POD_IP,
            **_container_env(container, pod),
            MARK: str(self.home),
        }
        self.main: asyncio.subprocess.Process | None = None

    async def make_network(self) -> None:
        """The pod's own namespace and address, when the fake gives pods networks."""
        if self.networks is not None:
            net = await asyncio.to_thread(self.networks.ensure, self.home)
            self.net, self.ip = net, net.ip

    def _enter(self, argv: list[str]) -> list[str]:
        return ["nsenter", f"--net={self.net.path}", *argv] if self.net else argv

    async def start_main(self, container: Obj) -> asyncio.subprocess.Process | None:
        """Run the container's `command` + `args`; a container without a command just idles
        (the fake has no images, so there is no entrypoint to fall back to)."""
        argv = [*(container.get("command") or []), *(container.get("args") or [])]
        if not container.get("command"):
            return None
        with self.log.open("ab") as out:
            self.main = await asyncio.create_subprocess_exec(
                *self._enter(argv),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                cwd=container.get("workingDir") or self.home,
                env=self.env,
                start_new_session=True,
            )
        return self.main

    async def spawn(
        self, argv: list[str], stdin: int, stdout: int, stderr: int
    ) -> asyncio.subprocess.Process:
        """An `exec`'s process, in the sandbox, in a process group of its own."""
        return await asyncio.create_subprocess_exec(
            *self._enter(argv),
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            cwd=self.home,
            env=self.env,
            start_new_session=True,
        )

    def processes(self) -> list[int]:
        return pids_marked(str(self.home))

    def signal_all(self, sig: signal.Signals) -> None:
        for pid in self.processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    async def stop(self, grace: float) -> None:
        """SIGTERM everything, SIGKILL what is left after `grace` seconds, then wait (bounded)
        until no process of the pod is left."""
        self.signal_all(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while self.processes() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for _ in range(100):
            if not self.processes():
                return
            self.signal_all(signal.SIGKILL)
            await asyncio.sleep(0.02)

    async def remove(self) -> None:
        if self.networks is not None:  # by its record too: a make cut short left no self.net
            net = self.net or self.networks.record(self.home)
            if net is not None:
                await asyncio.to_thread(self.networks.remove, net)
            self.net = None
        shutil.rmtree(self.home, ignore_errors=True)
        self.log.unlink(missing_ok=True)
