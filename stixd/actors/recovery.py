"""Where a managed job's relaunch goes after its cluster was lost, by its `job_recovery`
strategy (SkyPilot's names):

- ``EAGER_NEXT_REGION`` (the default): leave out the region the run was lost in, falling back
  to it only when no other region is left (a region that just preempted is likely to again).
- ``FAILOVER``: the region it was lost in first; the launcher moves on only when that launch
  fails (its capacity error blocks the region and the next choice is taken).
"""

from __future__ import annotations

from stixd.actors.specs import ClusterSpec

EAGER_NEXT_REGION = "EAGER_NEXT_REGION"
FAILOVER = "FAILOVER"


def run_place(cluster_spec: ClusterSpec) -> tuple[str, str | None]:
    """(infra, region) a cluster runs in: ``fake/fake-2``, ``aws/us-east-1``, ``local``."""
    provider = cluster_spec.provider
    region = (cluster_spec.placement or {}).get("region") or cluster_spec.pool
    infra = f"{provider}/{region}" if region else provider
    return infra, region


def relaunch_hints(strategy: str, lost_region: str | None) -> tuple[list[str], str | None]:
    """(regions to avoid, region to prefer) for the next launch; `lost_region` is where the
    run was lost (None: a first launch, or a rerun after the task's own failure)."""
    if lost_region is None:
        return [], None
    if strategy == FAILOVER:
        return [], lost_region
    return [lost_region], None
