"""What a submitted job asks for, and the environment its setup and run see."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from typing import Any


@dataclasses.dataclass(frozen=True)
class JobSpec:
    job_id: int
    name: str | None
    setup: str | None
    run: str | None
    envs: dict[str, str]
    workdir: str | None
    num_gpus: float
    task_id: str
    node_rank: int
    node_ips: list[str]
    num_nodes: int
    cluster_info: dict[str, Any]
    gang: bool = False
    """Wait after setup until the daemon releases every node of the job together."""
    secrets: list[str] = dataclasses.field(default_factory=list)
    """Names in ``envs`` that are secrets: the queue forgets their values once the job started."""
    mounts: list[str] | None = None
    """Where the task mounts buckets on this node: a job's end waits for those mounts' writes
    only (None, from an older daemon: every mount of the node)."""

    def without_secrets(self) -> JobSpec | None:
        """This spec with the secrets' values dropped; None when it holds none."""
        if not set(self.secrets) & set(self.envs):
            return None
        kept = {k: v for k, v in self.envs.items() if k not in self.secrets}
        return dataclasses.replace(self, envs=kept)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> JobSpec:
        return cls(**json.loads(text))


def job_environment(spec: JobSpec, base: Mapping[str, str], *, setup: bool) -> dict[str, str]:
    """The agent's environment, then the user's ``envs``, then ours, which users cannot override."""
    ours = {
        "NODE_RANK": str(spec.node_rank),
        "NODE_IPS": "\n".join(spec.node_ips),
        "NUM_NODES": str(spec.num_nodes),
        "NUM_GPUS_PER_NODE": str(math.ceil(spec.num_gpus)),
        "TASK_ID": spec.task_id,
        "CLUSTER_INFO": json.dumps(spec.cluster_info),
        "JOB_ID": str(spec.job_id),
    }
    if setup:
        for key in ("NODE_RANK", "NODE_IPS", "NUM_GPUS_PER_NODE"):
            ours["SETUP_" + key] = ours[key]
    env = dict(base)
    env.update(spec.envs)
    for key, value in ours.items():
        env["SKYPILOT_" + key] = value
        env["STIX_" + key] = value
    return env
