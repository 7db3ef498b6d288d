"""The cluster's renewal of its mounts' keys, decided step by step (stixd.actors.mount_keys).

The node side (the agent's ``mount_keys`` under a real rclone on moto) and the daemon's timer
re-armed after ``kill -9`` are proven end to end in tests/test_storage_mount.py; here the
actor's decisions with keys of a tiny lifetime and nodes that answer, cannot be reached or no
longer have the mount: when the next renewal is due, how retries back off (bounded), and when
a record goes."""

from __future__ import annotations

import time
from typing import Any, cast

import anyio
import msgspec
import pytest

from stixd.actors import mount_keys
from stixd.actors.cluster import ClusterActor
from stixd.actors.specs import ClusterData, MountKeys
from stixd.agent_client import AgentError, AgentUnreachable
from stixd.providers.base import NodeInfo, NodeStatus
from stixd.storage.stores import RcloneRemote, StoreError
from stixproto.states import ClusterStatus

KEYS = {"access_key_id": "AK", "secret_access_key": "SK", "session_token": "ST"}


class Node:
    """How one node's agent answers ``mount_keys`` (``None``: it takes the keys)."""

    def __init__(self, log: list[tuple[int, dict[str, Any]]], rank: int) -> None:
        self.log, self.rank = log, rank
        self.fails: Exception | None = None

    async def call(self, op: str, *, deadline: float, **fields: Any) -> dict[str, Any]:
        assert op == "mount_keys" and deadline <= 30
        if self.fails is not None:
            raise self.fails
        self.log.append((self.rank, fields))
        return {"renewed": True}


class Cluster:
    """What ``renew_due`` uses of a cluster actor: its row, nodes, agents, store and timer."""

    def __init__(self, valid_s: int = 90) -> None:
        self.state = ClusterStatus.UP
        self.data = ClusterData()
        self.calls: list[tuple[int, dict[str, Any]]] = []
        self.agents = [Node(self.calls, rank) for rank in range(2)]
        self.nodes = [
            NodeInfo(rank, "127.0.0.1", NodeStatus.RUNNING, "", "/w", f"/home/n{rank}")
            for rank in range(2)
        ]
        self.remote = RcloneRemote("s3", {"provider": "AWS", **KEYS}, valid_s=valid_s)
        self.store_fails = False
        self.timer: float | None = None
        self.provider, self.app, self.log = self, self, self

    # the provider, the app's stores, the log
    def connector(self, node: NodeInfo) -> Node:
        return self.agents[node.rank]

    def object_stores(self) -> Cluster:
        return self

    def bucket(self, kind: Any, name: str) -> Cluster:
        return self

    async def rclone_remote(self) -> RcloneRemote:
        if self.store_fails:
            raise StoreError("STS is not answering")
        return self.remote

    def warning(self, event: str, **fields: Any) -> None:
        pass

    info = warning

    # the actor's row and timer
    async def save(self, **data: Any) -> None:
        self.data = msgspec.structs.replace(self.data, **data)

    def after(self, name: str, delay: float, message: Any) -> None:
        assert name == mount_keys.TIMER and isinstance(message, mount_keys.RenewMountKeys)
        self.timer = delay

    def cancel_timer(self, name: str) -> None:
        self.timer = None

    def actor(self) -> ClusterActor:
        return cast(ClusterActor, self)

    def entry(self) -> MountKeys:
        [only] = self.data.mount_keys
        return only

    def due_now(self) -> None:
        """Time passes: the mount's renewal is due."""
        due = msgspec.structs.replace(self.entry(), renew_at=time.time() - 1)
        self.data = msgspec.structs.replace(self.data, mount_keys=[due])


def run(fn: Any, *args: Any) -> None:
    async def go() -> None:
        await fn(*args)

    anyio.run(go)


def test_keys_are_renewed_at_two_thirds_retried_in_bounded_backoff_and_dropped_with_mounts() -> (
    None
):
    cluster = Cluster(valid_s=90)
    actor = cluster.actor()
    run(mount_keys.note_mount, actor, "s3", "bkt", "~/ckpt", 90)
    entry = cluster.entry()
    assert entry.renew_at - entry.expires_at == pytest.approx(-30, abs=1)
    assert cluster.timer == pytest.approx(60, abs=1)
    run(mount_keys.renew_due, actor)  # rings early (a daemon restart's re-arm): nothing yet
    assert cluster.calls == [] and cluster.entry() == entry

    # due: every node gets the keys alone, at its own path of the mount
    cluster.due_now()
    run(mount_keys.renew_due, actor)
    assert cluster.calls == [
        (rank, {"dest": f"/home/n{rank}/ckpt", "keys": KEYS, "valid_s": 90}) for rank in (0, 1)
    ]
    renewed = cluster.entry()
    assert renewed.failures == 0 and renewed.renew_at > time.time() + 55
    assert cluster.timer == pytest.approx(60, abs=1)

    # a node out of reach, then the store: tried again after 1, 2, 4 ... minutes, at most 15
    cluster.agents[1].fails = AgentUnreachable("connection refused")
    delays = []
    for turn in range(6):
        cluster.store_fails = turn == 2
        cluster.due_now()
        run(mount_keys.renew_due, actor)
        delays.append(round(cluster.entry().renew_at - time.time()))
        assert cluster.entry().expires_at == renewed.expires_at  # the old keys' end stays
    assert delays == [60, 120, 240, 480, 900, 900]
    cluster.agents[1].fails = None
    cluster.due_now()
    run(mount_keys.renew_due, actor)
    assert cluster.entry().failures == 0 and cluster.entry().expires_at > renewed.expires_at

    # a node whose mount went is left out; once no node has it, the record goes
    cluster.agents[0].fails = AgentError("not_mounted", "no bucket is mounted there")
    cluster.due_now()
    run(mount_keys.renew_due, actor)
    assert cluster.entry().failures == 0
    cluster.agents[1].fails = AgentError("not_mounted", "no bucket is mounted there")
    cluster.due_now()
    run(mount_keys.renew_due, actor)
    assert cluster.data.mount_keys == [] and cluster.timer is None

    # a stopped cluster's mounts went with its nodes: nothing left to renew
    run(mount_keys.note_mount, actor, "s3", "bkt", "~/ckpt", 90)
    cluster.state = ClusterStatus.STOPPED
    cluster.due_now()
    run(mount_keys.renew_due, actor)
    assert cluster.data.mount_keys == [] and cluster.timer is None

    # keys that do not end (R2's, or the daemon's own) are not recorded
    cluster.state = ClusterStatus.UP
    run(mount_keys.note_mount, actor, "r2", "bkt", "~/ckpt", None)
    assert cluster.data.mount_keys == []
