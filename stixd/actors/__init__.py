"""Actor kinds and how to build each one from its stored row."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

from stixd.runtime.actor import Actor
from stixd.store.db import Row

if TYPE_CHECKING:
    from stixd.app import App


KINDS = ("cluster", "job", "managed_job", "job_pool", "service", "replica", "volume", "storage")
"""Every kind `factory_for` builds: a live row of any other kind is shown as damaged."""


def factory_for(app: App, kind: str) -> Callable[[Row], Actor] | None:
    """How to build the actor of a row of `kind`; None for a kind no stix writes."""
    from stixd.actors.cluster import ClusterActor
    from stixd.actors.job import JobActor
    from stixd.actors.job_pool import JobPoolActor
    from stixd.actors.managed_job import ManagedJobActor
    from stixd.actors.replica import ReplicaActor
    from stixd.actors.service import ServiceActor
    from stixd.actors.storage import StorageActor
    from stixd.actors.volume import VolumeActor

    kinds: dict[
        str,
        type[
            ClusterActor
            | JobActor
            | ManagedJobActor
            | JobPoolActor
            | ServiceActor
            | ReplicaActor
            | VolumeActor
            | StorageActor
        ],
    ] = {
        ClusterActor.kind: ClusterActor,
        JobActor.kind: JobActor,
        ManagedJobActor.kind: ManagedJobActor,
        JobPoolActor.kind: JobPoolActor,
        ServiceActor.kind: ServiceActor,
        ReplicaActor.kind: ReplicaActor,
        VolumeActor.kind: VolumeActor,
        StorageActor.kind: StorageActor,
    }
    actor = kinds.get(kind)
    # a partial, not a closure over a table: each supervised actor holds its factory for good
    return None if actor is None else functools.partial(actor, app=app)
