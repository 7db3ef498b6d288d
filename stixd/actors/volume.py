"""A volume (`stixctl volumes apply`): one actor per name that makes it on its infra, tells each
launch that mounts it where it is, and removes it on `volumes delete`.

Its row holds the volume as applied, its owner and workspace (`stixd.control.ownership`), where
the volume is (a folder on the nodes, a claim on Kubernetes) and the clusters that mounted it.
The state is READY or NOT_READY (written before the volume is made, so a daemon that restarts
finishes making it); IN_USE is what `volumes ls` shows for a READY volume a live cluster
mounts, computed from the clusters' rows, never stored (a cluster that ends frees the volume
without telling it). A deleted volume leaves no row.

An ephemeral volume (a task's ``{size: ...}`` entry, `stixd.actors.volume_mounts`) is made by
its cluster's launch and names that cluster in its spec: its row is written before anything is
made, so a daemon killed in between finds it at restart, makes it again (idempotent) or, its
cluster gone, removes it (`Prune`); the cluster's `down` prunes it at once.
"""

from __future__ import annotations

import contextlib
import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import msgspec

from stixd.actors.specs import _Record, spec_or_none
from stixd.providers.abilities import HasVolumes
from stixd.runtime.actor import Actor, BadRow
from stixd.runtime.machine import Machine
from stixd.runtime.mailbox import Envelope
from stixd.store import views
from stixd.store.db import Row, Store
from stixproto import messages as m
from stixproto.errors import InvalidRequest, StixError
from stixproto.volumes import VolumeConfig
from stixproto.volumes import VolumeStatus as V

if TYPE_CHECKING:
    from stixd.app import App

VOLUME = "volume"
MAX_USERS = 1000
PRUNE_WAIT_S = 60.0
"""How long a `down` waits for its ephemeral volumes to be removed (an infra that does not
answer: the volumes' actors go on trying, and their next reconcile too)."""
"""Clusters remembered as having mounted a volume (the oldest are forgotten first)."""


class VE(enum.Enum):
    MADE = "made"
    FAILED = "failed"


TRANSITIONS: dict[tuple[V, VE], V] = {
    (V.NOT_READY, VE.MADE): V.READY,
    (V.NOT_READY, VE.FAILED): V.NOT_READY,
    (V.READY, VE.MADE): V.READY,  # found again at a restart
    (V.READY, VE.FAILED): V.NOT_READY,
}


class VolumeSpec(_Record, frozen=True, kw_only=True):
    volume: dict[str, Any]
    """The `VolumeConfig` as applied (checked again when read: `config`)."""
    owner: str | None = None
    workspace: str | None = None
    cluster: str | None = None
    """An ephemeral volume's cluster: made by its launch, removed with it (None: applied)."""


class VolumeData(_Record, frozen=True, kw_only=True):
    where: str = ""
    error: str | None = None
    users: list[str] = []
    """Clusters that mounted it (IN_USE while one of them is live)."""


@dataclass(frozen=True)
class Make:
    """Make the volume on its infra (and answer when it is READY)."""


@dataclass(frozen=True)
class Attach:
    """A launch of ``cluster`` mounts the volume: answered with where it is."""

    cluster: str


@dataclass(frozen=True)
class Remove:
    """`volumes delete`: remove it from its infra (unless adopted) and end."""


@dataclass(frozen=True)
class Prune:
    """An ephemeral volume whose cluster is gone (and held by no live managed job) is removed;
    answered with whether it was."""


LIVE_JOB_CLUSTERS = (
    f"SELECT {views.OWNED_CLUSTER} FROM actors a WHERE a.kind = 'managed_job' AND a.terminal = 0"
)
"""The clusters live managed jobs keep (a recovering one may have none up right now)."""


async def live_users(store: Store) -> set[str]:
    """Every cluster that may hold a volume now: the live ones, and those live managed jobs
    keep (one recovering keeps its volume). Two queries, whatever the number of volumes."""
    live = await views.live_clusters_of(store, views.EVERY)
    live.update(str(r[0]) for r in await store._tuples(LIVE_JOB_CLUSTERS) if r[0])
    return live


def ephemeral_of(row: Row) -> str | None:
    """The cluster whose ephemeral volume ``row`` is, read through its spec (None: a volume
    of its own, or a spec no stix wrote)."""
    spec = spec_or_none(row, VolumeSpec)
    return None if spec is None else spec.cluster


def users_error(name: str, users: list[str]) -> InvalidRequest:
    return InvalidRequest(
        f"volume {name} is in use by cluster(s) {', '.join(users)}; tear them down first "
        "(`stixctl down NAME`) or wait for their managed jobs to end"
    )


def config_of(spec: VolumeSpec) -> VolumeConfig:
    return msgspec.convert(spec.volume, VolumeConfig)


def provider_for(app: App, volume: VolumeConfig) -> HasVolumes:
    """The provider that holds ``volume``; one sentence when this daemon has none that can."""
    provider = app.providers.get(volume.cloud)
    if provider is None:
        raise InvalidRequest(
            f"volume {volume.name} is on {volume.cloud}, which this daemon does not run "
            "(see `stixctl check`)"
        )
    if not isinstance(provider, HasVolumes):
        raise InvalidRequest(f"volumes on {volume.cloud} are not supported in this build yet")
    return provider


class VolumeActor(Actor):
    kind = VOLUME
    machine = Machine(VOLUME, TRANSITIONS)
    state_type = V
    spec_type = VolumeSpec
    data_type = VolumeData
    spec: VolumeSpec
    data: VolumeData

    def __init__(self, row: Any, app: App) -> None:
        super().__init__(row, app.store, app.log)
        self.app = app
        self.gone = False

    @staticmethod
    def is_terminal(state: Any) -> bool:
        return False  # a deleted volume leaves no row

    def done(self) -> bool:
        return self.gone

    @classmethod
    def decode_row(cls, row: Any) -> tuple[Any, Any]:
        """As every kind's, and the volume in the spec must be one `volumes apply` accepts."""
        spec, data = super().decode_row(row)
        try:
            config_of(spec)
        except (msgspec.ValidationError, StixError) as exc:
            raise BadRow(f"its volume is not valid: {str(exc)[:200]}") from None
        return spec, data

    @property
    def config(self) -> VolumeConfig:
        return config_of(self.spec)

    async def reconcile(self) -> None:
        if self.spec.cluster is not None:
            self.tell(Prune())  # its cluster may have gone while the daemon was away
        if self.state is V.NOT_READY and self.data.error is None:
            self.tell(Make())  # made before a restart, or not yet: finish it

    async def handle(self, message: Any) -> None:
        if isinstance(message, Envelope):
            message.answer(await self._request(message.payload))
        elif isinstance(message, Make) and not self.gone:
            with contextlib.suppress(StixError):  # recorded as its error: `volumes ls` shows it
                await self._make()
        elif isinstance(message, Prune) and not self.gone:
            try:
                await self._prune()
            except StixError as exc:  # the next prune (a down, a restart) tries again
                self.log.warning("volume_prune_failed", volume=self.id, error=exc.message)

    async def _request(self, req: Any) -> Any:
        if isinstance(req, Make):
            await self._make()
            return m.OkReply(f"Volume {self.id} is {self.state.value} at {self.data.where}.")
        if isinstance(req, Attach):
            return await self._attach(req.cluster)
        if isinstance(req, Remove):
            return await self._remove()
        if isinstance(req, Prune):
            return m.OkReply("removed" if await self._prune() else "kept")
        raise InvalidRequest(f"volume actor cannot handle {type(req).__name__}")

    async def _make(self) -> None:
        volume = self.config
        try:
            where = await provider_for(self.app, volume).make_volume(volume, self.spec.cluster)
        except StixError as exc:
            await self.transition(VE.FAILED, exc.message, error=exc.message)
            raise
        await self.transition(VE.MADE, f"at {where}", where=where, error=None)

    async def _attach(self, cluster: str) -> m.OkReply:
        if self.state is not V.READY:
            why = f": {self.data.error}" if self.data.error else ""
            raise InvalidRequest(f"volume {self.id} is {self.state.value}{why}")
        if cluster not in self.data.users:
            users = [u for u in self.data.users if u != cluster][-(MAX_USERS - 1) :]
            await self.save(users=[*users, cluster])
        return m.OkReply(self.data.where)

    async def _remove(self) -> m.OkReply:
        volume = self.config
        live = await live_users(self.store)  # read here too: a launch may have attached since
        users = [u for u in self.data.users if u in live]
        if users:
            raise users_error(self.id, users)
        if self.state is V.READY or self.data.where or self.spec.cluster is not None:
            await provider_for(self.app, volume).remove_volume(volume, self.spec.cluster)
        await self.store.delete(self.row, "deleted")
        self.gone = True
        kept = " (adopted with use_existing: left in place)" if volume.use_existing else ""
        return m.OkReply(f"Volume {self.id} deleted{kept}.")

    async def _prune(self) -> bool:
        cluster = self.spec.cluster
        if cluster is None or cluster in await live_users(self.store):
            return False
        await self._remove()
        return True


async def prune_ephemeral(app: App, cluster: str | None = None) -> None:
    """A cluster went (``cluster``), or a managed job ended (None: every cluster): each
    ephemeral volume of it whose cluster is gone for good is removed. Never raises into the
    caller's down: a failure is logged, and the volume's next reconcile prunes it."""
    from stixd.actors.volume_mounts import ask_volume

    try:
        rows = await app.store.rows(VOLUME)
    except Exception as exc:
        app.log.warning("volume_prune_failed", error=str(exc))
        return
    with anyio.move_on_after(PRUNE_WAIT_S) as waited:
        for row in rows:
            owner = ephemeral_of(row)
            if owner is None or (cluster is not None and owner != cluster) or row.quarantined:
                continue
            try:
                await ask_volume(app, row.id, Prune())
            except StixError as exc:
                app.log.warning("volume_prune_failed", volume=row.id, error=exc.message)
    if waited.cancelled_caught:  # the actors finish on their own; a down does not wait longer
        app.log.warning("volume_prune_slow", cluster=cluster, waited_s=PRUNE_WAIT_S)
