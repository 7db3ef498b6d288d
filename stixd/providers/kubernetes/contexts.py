"""Which Kubernetes contexts exist and an API client for each, as kubectl reads them.

The kubeconfig is ``$KUBECONFIG`` (several files joined by ``:``, the first to set a value wins,
as kubectl merges them) or ``~/.kube/config``. Listing contexts reads the YAML only; a client is
made on first use of a context, importing ``kubernetes_asyncio`` then, off the event loop (it
takes about half a second). Certificates a kubeconfig carries inline are written to the
provider's private folder, never to the system's temp dir, and the kubeconfig is never written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import structlog
import yaml

from stixd.providers.kubernetes import exec_plugin
from stixproto.errors import ProvisionError

if TYPE_CHECKING:
    from kubernetes_asyncio.client import ApiClient

DEFAULT_PATH = "~/.kube/config"
DEFAULT_NAMESPACE = "default"
MAKE_TIMEOUT_S = 20.0
"""Seconds a context's client may take to be made (its credential plugin's run included)."""
MAX_KUBECONFIG_BYTES = 4 * 2**20
"""The most of one kubeconfig file read (one with a hundred contexts and their certificates
is well under 1 MiB)."""
FAILED_FOR_S = 10.0
"""Seconds a context whose client could not be made answers with that error without trying
again: callers queued behind a hung plugin fail together, not one plugin run after another."""


class KubeconfigError(ProvisionError):
    """The kubeconfig is missing, unreadable or names no such context."""


@dataclasses.dataclass(frozen=True)
class Kubeconfig:
    paths: tuple[Path, ...]
    """The files read, in kubectl's order (those that exist)."""
    contexts: tuple[str, ...]
    current: str | None
    namespaces: Mapping[str, str]
    """Per context, the namespace it names (``default`` where it names none)."""
    unreadable: str | None = None
    """Why the kubeconfig could not be read (it is then empty), for `check` and launches."""
    fingerprints: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """Per context, a digest of its entry, cluster and user: what a client is made from."""
    watched: tuple[Path, ...] = ()
    """Every file kubectl would read, whether it exists or not (a reload looks at these)."""

    @classmethod
    def broken(cls, why: str, watched: tuple[Path, ...] = ()) -> Kubeconfig:
        """A kubeconfig with no context, because of ``why``."""
        return cls((), (), None, {}, unreadable=why, watched=watched)

    @property
    def config_file(self) -> str:
        """The files as ``kubernetes_asyncio`` takes them (joined by ``:``)."""
        return os.pathsep.join(str(p) for p in self.paths)

    def namespace(self, context: str) -> str:
        return self.namespaces.get(context, DEFAULT_NAMESPACE)


def kubeconfig_paths(env: Mapping[str, str]) -> tuple[Path, ...]:
    """The kubeconfig files kubectl would read, whether they exist or not."""
    given = env.get("KUBECONFIG", "")
    parts = [p for p in given.split(os.pathsep) if p] if given else [DEFAULT_PATH]
    return tuple(Path(p).expanduser() for p in parts)


def _read_capped(path: Path) -> str:
    """A kubeconfig file's text; ``KubeconfigError`` past ``MAX_KUBECONFIG_BYTES`` (it is read
    again on every change, so a huge file must not fill the daemon's memory)."""
    with path.open("rb") as file:
        data = file.read(MAX_KUBECONFIG_BYTES + 1)
    if len(data) > MAX_KUBECONFIG_BYTES:
        raise KubeconfigError(
            f"kubeconfig {path} is larger than {MAX_KUBECONFIG_BYTES // 2**20} MiB, more than "
            "stix reads; point KUBECONFIG at a smaller file"
        )
    return data.decode("utf-8")


def read_kubeconfig(env: Mapping[str, str] | None = None) -> Kubeconfig:
    """The contexts of the kubeconfig; an empty one when no file exists (Kubernetes is then
    simply not set up). ``KubeconfigError`` for a file that exists but cannot be read."""
    contexts: list[str] = []
    namespaces: dict[str, str] = {}
    entries: dict[str, dict[str, Any]] = {"clusters": {}, "users": {}, "contexts": {}}
    current: str | None = None
    found: list[Path] = []
    watched = kubeconfig_paths(os.environ if env is None else env)
    for path in watched:
        if not path.is_file():
            continue
        try:
            raw: Any = yaml.safe_load(_read_capped(path))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise KubeconfigError(f"kubeconfig {path} cannot be read: {why}") from None
        if raw is None:
            continue
        if not isinstance(raw, dict):
            raise KubeconfigError(f"kubeconfig {path} is not a mapping")
        found.append(path)
        if current is None and isinstance(raw.get("current-context"), str):
            current = raw["current-context"] or None
        for part, named in entries.items():
            items = raw.get(part)
            for item in items if isinstance(items, list) else []:
                if isinstance(item, dict) and isinstance(item.get("name"), str):
                    named.setdefault(item["name"], item)
        for item in raw.get("contexts") or []:
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                continue
            name = item["name"]
            if name in namespaces:
                continue  # the first file to name a context wins
            context = item.get("context") if isinstance(item.get("context"), dict) else {}
            namespace = context.get("namespace") if isinstance(context, dict) else None
            namespaces[name] = namespace if isinstance(namespace, str) else DEFAULT_NAMESPACE
            contexts.append(name)
    if current not in namespaces:
        current = None
    fingerprints = {c: _fingerprint(c, entries) for c in contexts}
    return Kubeconfig(
        tuple(found), tuple(contexts), current, namespaces, None, fingerprints, watched
    )


def _fingerprint(context: str, entries: Mapping[str, Mapping[str, Any]]) -> str:
    """A digest of what ``context``'s client is made from: its entry, its cluster, its user."""
    entry = entries["contexts"].get(context) or {}
    inner: dict[str, Any] = entry["context"] if isinstance(entry.get("context"), dict) else {}
    made_of = [
        entry,
        entries["clusters"].get(str(inner.get("cluster"))),
        entries["users"].get(str(inner.get("user"))),
    ]
    raw = json.dumps(made_of, sort_keys=True, default=str).encode()
    return hashlib.sha256(raw).hexdigest()


FileState = tuple[str, int, int, int, int, int] | tuple[str]


def files_state(paths: tuple[Path, ...]) -> tuple[FileState, ...]:
    """What a change to any of ``paths`` changes (inode, size, times; or its absence): a
    ``stat`` each, cheap enough before every call."""
    state: list[FileState] = []
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            state.append((str(path),))
            continue
        state.append((str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    return tuple(state)


async def _kubernetes_config() -> Any:
    """``kubernetes_asyncio.config``, imported on a worker thread the first time."""
    return await anyio.to_thread.run_sync(importlib.import_module, "kubernetes_asyncio.config")


class Clients:
    """One ``ApiClient`` per context, made on first use and closed together. Each context is
    made under a lock of its own and within a deadline: a context whose credential plugin
    hangs fails alone, in one line naming it, and never holds up another context.

    The kubeconfig is read again when its files change (``refresh``, before every client is
    handed out and by the provider before it reads the contexts): a context added, a current
    context switched or a token rotated needs no daemon restart. Only the contexts whose
    entry, cluster or user changed get a new client; the old one stays open for what still
    uses it (a pod's relay) until the daemon ends. A kubeconfig that no longer reads keeps the
    last good one, said once in the log and in ``stale`` (`check` shows it)."""

    def __init__(
        self,
        config: Kubeconfig,
        private_dir: Path,
        *,
        plugin_timeout: float = exec_plugin.PLUGIN_TIMEOUT_S,
        make_timeout: float = MAKE_TIMEOUT_S,
        log: structlog.stdlib.BoundLogger | None = None,
    ) -> None:
        self.config = config
        self.private_dir = private_dir
        self.plugin_timeout, self.make_timeout = plugin_timeout, make_timeout
        self.log = log or structlog.get_logger()
        self.stale: str | None = None
        """Why the kubeconfig in use is not what its files say now (they do not read)."""
        self._clients: dict[str, ApiClient] = {}
        self._retired: list[ApiClient] = []
        self._locks: dict[str, anyio.Lock] = {}
        self._failed: dict[str, tuple[float, KubeconfigError]] = {}
        self._files = files_state(config.watched)
        self._reading = anyio.Lock()

    async def refresh(self) -> None:
        """Read the kubeconfig again if any of its files changed since it was last read."""
        if files_state(self.config.watched) == self._files:
            return
        async with self._reading:
            now = files_state(self.config.watched)
            if now == self._files:
                return  # another caller read it meanwhile
            env = {"KUBECONFIG": os.pathsep.join(str(p) for p in self.config.watched)}
            try:
                fresh = await anyio.to_thread.run_sync(read_kubeconfig, env)
            except KubeconfigError as exc:
                self._files = now  # said once: read again on the next change only
                self._kept(exc.message)
                return
            self._files = now
            self._use(fresh)

    def _kept(self, why: str) -> None:
        if self.config.unreadable:  # nothing good to keep
            self.config = Kubeconfig.broken(why, self.config.watched)
            self.log.warning("kubeconfig_unreadable", error=why)
            return
        self.stale = f"{why}; stix goes on with the kubeconfig it read before"
        self.log.warning("kubeconfig_unreadable_kept_last_good", error=why)

    def _use(self, fresh: Kubeconfig) -> None:
        old = self.config
        changed = [c for c in old.contexts if fresh.fingerprints.get(c) != old.fingerprints.get(c)]
        for context in changed:
            made = self._clients.pop(context, None)
            if made is not None:
                self._retired.append(made)
            self._failed.pop(context, None)
        self.config, self.stale = fresh, None
        self.log.info(
            "kubeconfig_reread",
            added=[c for c in fresh.contexts if c not in old.fingerprints],
            changed=[c for c in changed if c in fresh.fingerprints],
            removed=[c for c in old.contexts if c not in fresh.fingerprints],
            current=fresh.current,
        )

    async def client(self, context: str) -> ApiClient:
        await self.refresh()
        if self.config.unreadable:
            raise KubeconfigError(self.config.unreadable)
        if context not in self.config.namespaces:
            known = ", ".join(self.config.contexts) or "none"
            raise KubeconfigError(f"no Kubernetes context {context!r} (contexts: {known})")
        async with self._locks.setdefault(context, anyio.Lock()):
            made = self._clients.get(context)
            if made is not None:
                return made
            failed_at, error = self._failed.get(context, (-FAILED_FOR_S, None))
            if error is not None and time.monotonic() - failed_at < FAILED_FOR_S:
                raise KubeconfigError(error.message)
            try:
                made = self._clients[context] = await self._make(context)
            except KubeconfigError as exc:
                self._failed[context] = (time.monotonic(), exc)
                raise
            self._failed.pop(context, None)
            return made

    async def _make(self, context: str) -> ApiClient:
        module = await _kubernetes_config()
        exec_plugin.install()
        bound = exec_plugin.deadline_s.set(self.plugin_timeout)
        self.private_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            with anyio.fail_after(self.make_timeout):
                client: ApiClient = await module.new_client_from_config(
                    config_file=self.config.config_file,
                    context=context,
                    persist_config=False,
                    temp_file_path=str(self.private_dir),
                )
        except TimeoutError:
            raise KubeconfigError(
                f"Kubernetes context {context}: its credentials did not load within "
                f"{self.make_timeout:g} s; check the kubeconfig user's login"
            ) from None
        except Exception as exc:  # the loader raises ConfigException, ValueError, OSError...
            why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise KubeconfigError(f"Kubernetes context {context}: {why}") from None
        finally:
            exec_plugin.deadline_s.reset(bound)
        return client

    async def aclose(self) -> None:
        clients, self._clients = [*self._clients.values(), *self._retired], {}
        self._retired = []
        for client in clients:
            await client.close()
