"""A pod's sandbox: a directory as its home and the real processes that run in it — the
container's command and every `exec` — each in its own process group and each marked by an
environment variable, so deleting the pod finds and kills them all, even those that daemonized.

By default pods share the machine's network (pod IP 127.0.0.1, one port space). Given a
`NodeNetworks` (root, `ip`, `nsenter`), each pod gets a network namespace of its own with an
address of the fake's subnet, made by the local provider's code, and every process of the pod
enters it.

The pod runs as its ``securityContext`` says, as a kubelet runs it: ``runAsUser``/``runAsGroup``
(the container's over the pod's) with ``fsGroup`` and ``supplementalGroups`` as its groups
(``setpriv``), its home a folder of its own in /tmp that user owns (the fake's own folder is
root's alone). The folders of its claims and hostPaths are bind-mounted at their ``mountPath``s
in a mount namespace of the pod's own (``unshare``; every exec enters it), a claim's folder given
to ``fsGroup`` first as the kubelet's ``OnRootMismatch`` does (group, ``g+rwX``, setgid dirs).
A mount path missing on this machine is made as an empty folder, removed when no pod uses it."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from stixd.providers.local.netns import NodeNet, NodeNetworks
from tests.kube_fake.meta import Obj

MARK = "KUBE_FAKE_SANDBOX"
POD_IP = "127.0.0.1"  # the nodes' address, and every pod's without a network of its own
POD_SUBNET = "10.179.0.0/16"  # pod networks, apart from the local provider's 10.177.0.0/16
_BIND = (
    'while [ "$1" != -- ]; do mount --bind "$1" "$2" || exit 125; shift 2; done; shift; exec "$@"'
)
"""The pod's first process, in its new mount namespace: bind each (folder, point), then run."""
_POINT_USERS: collections.Counter[str] = collections.Counter()  # mount point -> sandboxes
_MADE_POINTS: set[str] = set()  # mount points the fake made, removed when unused


@dataclasses.dataclass(frozen=True)
class RunAs:
    uid: int
    gid: int
    groups: tuple[int, ...]

    def argv(self) -> list[str]:
        groups = ",".join(map(str, self.groups))
        return [
            "setpriv",
            f"--reuid={self.uid}",
            f"--regid={self.gid}",
            f"--groups={groups}" if groups else "--clear-groups",
            "--",
        ]


def run_as(pod: Obj) -> RunAs | None:
    """Who the pod's processes are; None (the image's user: root here) without ``runAsUser``."""
    spec = pod["spec"]
    pod_context = spec.get("securityContext") or {}
    context = {**pod_context, **(spec["containers"][0].get("securityContext") or {})}
    if context.get("runAsUser") is None:
        return None
    groups = [pod_context["fsGroup"]] if pod_context.get("fsGroup") is not None else []
    groups += pod_context.get("supplementalGroups") or []
    return RunAs(
        int(context["runAsUser"]),
        int(context.get("runAsGroup") or 0),
        tuple(dict.fromkeys(int(g) for g in groups)),
    )


def give_to_group(folder: Path, gid: int) -> None:
    """``fsGroupChangePolicy: OnRootMismatch``: nothing when the folder already has the group and
    its permissions, else chgrp -R and g+rwX, directories setgid (new files get the group)."""
    top = folder.stat()
    if top.st_gid == gid and top.st_mode & 0o2070 == 0o2070:
        return
    for path in [folder, *folder.rglob("*")]:
        if path.is_symlink():
            continue
        os.chown(path, -1, gid)
        extra = 0o2070 if path.is_dir() else 0o060
        path.chmod((path.stat().st_mode | extra) & 0o7777)


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
    def __init__(
        self,
        root: Path,
        pod: Obj,
        networks: NodeNetworks | None = None,
        mounts: Sequence[tuple[Path, str, bool]] = (),
    ) -> None:
        meta = pod["metadata"]
        self.networks: NodeNetworks | None = networks
        self.net: NodeNet | None = None
        self.ip = POD_IP
        self.home = root / "pods" / f"{meta['namespace']}_{meta['name']}_{meta['uid'][:8]}"
        self.log = self.home.with_suffix(".log")
        self.home.mkdir(parents=True)
        self.log.touch()
        self.user = run_as(pod)
        self.fs_group: int | None = (pod["spec"].get("securityContext") or {}).get("fsGroup")
        self.mounts = list(mounts)
        self._points: list[str] = []
        self.user_home = self.home  # the processes' $HOME
        path = os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")
        if self.user is not None and self.user.uid != 0:
            made = tempfile.mkdtemp(prefix=f"kube-fake-{meta['name'][:40]}-", dir="/tmp")
            self.user_home = Path(made)
            os.chown(self.user_home, self.user.uid, self.user.gid)
            path = ":".join(p for p in path.split(":") if not p.startswith("/root"))
        container = pod["spec"]["containers"][0]
        self.env = {
            "PATH": path,
            "HOME": str(self.user_home),
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

    def _enter(self, argv: list[str], cwd: Path | str, mount: Sequence[str] = ()) -> list[str]:
        """Into the pod's namespaces (its mount namespace: that of its first process, or the
        `mount` prefix making it), as its user."""
        spaces = [f"--net={self.net.path}"] if self.net else []
        if self.mounts and self.main is not None:
            spaces += [f"--mount=/proc/{self.main.pid}/ns/mnt", f"--wd={cwd}"]
        user = self.user.argv() if self.user is not None else []
        inner = [*mount, *user, *argv]
        return ["nsenter", *spaces, *inner] if spaces else inner

    def _prepare_mounts(self) -> list[str]:
        """Make the folders and points, give claims to fsGroup; the first process's prefix."""
        pairs: list[str] = []
        for folder, point, is_claim in self.mounts:
            folder.mkdir(parents=True, exist_ok=True)
            if is_claim and self.fs_group is not None:
                give_to_group(folder, int(self.fs_group))
            if point not in self._points:
                if not os.path.lexists(point):
                    Path(point).mkdir(parents=True)
                    _MADE_POINTS.add(point)
                _POINT_USERS[point] += 1
                self._points.append(point)
            pairs += [str(folder), point]
        if not pairs:
            return []
        unshare = ["unshare", "--mount", "--propagation", "private", "--"]
        return [*unshare, "sh", "-c", _BIND, "sh", *pairs, "--"]

    async def start_main(self, container: Obj) -> asyncio.subprocess.Process | None:
        """Run the container's `command` + `args`; a container without a command just idles
        (the fake has no images, so there is no entrypoint to fall back to)."""
        argv = [*(container.get("command") or []), *(container.get("args") or [])]
        if not container.get("command"):
            return None
        self.main = None  # a restart makes the pod's mount namespace anew
        cwd = container.get("workingDir") or self.user_home
        mount = await asyncio.to_thread(self._prepare_mounts)
        with self.log.open("ab") as out:
            self.main = await asyncio.create_subprocess_exec(
                *self._enter(argv, cwd, mount),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                cwd=cwd,
                env=self.env,
                start_new_session=True,
            )
        return self.main

    async def spawn(
        self, argv: list[str], stdin: int, stdout: int, stderr: int
    ) -> asyncio.subprocess.Process:
        """An `exec`'s process, in the sandbox, in a process group of its own."""
        return await asyncio.create_subprocess_exec(
            *self._enter(argv, self.user_home),
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            cwd=self.user_home,
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
        if self.user_home != self.home:
            shutil.rmtree(self.user_home, ignore_errors=True)
        self.log.unlink(missing_ok=True)
        for point in self._points:
            _POINT_USERS[point] -= 1
            if _POINT_USERS[point] <= 0 and point in _MADE_POINTS:
                del _POINT_USERS[point]
                _MADE_POINTS.discard(point)
                with contextlib.suppress(OSError):
                    os.rmdir(point)
        self._points = []
