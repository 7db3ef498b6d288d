"""The task model (stixproto.task) turned into the planner's own request types."""

from __future__ import annotations

from typing import Literal

from stixd.planner.request import (
    Accelerator,
    Amount,
    DataSize,
    ResourceRequest,
    TaskRequest,
)
from stixproto.task import Dag, Resources, Task
from stixproto.task.resources import (
    accelerator_choice,
    candidates,
    cpus_amount,
    disk_size_gb,
    memory_amount,
    placement,
)

_STORE_CLOUD = {"s3": "aws", "gs": "gcp", "r2": "cloudflare", "oci": "oci", "nebius": "nebius"}


def resource_request(res: Resources) -> ResourceRequest:
    place = placement(res)
    choice = accelerator_choice(res)
    cpus, memory = cpus_amount(res), memory_amount(res)
    ports = res.ports
    if ports is None:
        port_list: tuple[str, ...] = ()
    elif isinstance(ports, list):
        port_list = tuple(str(p) for p in ports)
    else:
        port_list = (str(ports),)
    return ResourceRequest(
        cloud=place.cloud,
        region=place.region,
        zone=place.zone,
        instance_type=res.instance_type,
        cpus=Amount(cpus.amount, cpus.at_least) if cpus else None,
        memory_gib=Amount(memory.amount, memory.at_least) if memory else None,
        accelerators=tuple(Accelerator(a.name, float(a.count)) for a in choice.candidates)
        if choice
        else (),
        accelerators_ordered=bool(choice and choice.ordered),
        use_spot=res.use_spot,
        disk_size_gb=disk_size_gb(res),
        disk_tier=res.disk_tier,
        network_tier=res.network_tier,
        image_id=dict(res.image_id) if isinstance(res.image_id, dict) else res.image_id,
        ports=port_list,
        labels=dict(res.labels or {}),
    )


def _inputs(task: Task) -> DataSize | None:
    if not task.inputs:
        return None
    [(url, size)] = list(task.inputs.items())[:1]
    scheme = url.split("://", 1)[0].lower() if "://" in url else None
    return DataSize(float(size), _STORE_CLOUD.get(scheme) if scheme else None)


def task_request(task: Task) -> TaskRequest:
    res = task.resources or Resources()
    alternatives = candidates(res)
    mode: Literal["single", "any_of", "ordered"]
    if res.any_of:
        mode = "any_of"
    elif res.ordered:
        mode = "ordered"
    else:
        mode = "single"
    outputs = sum(float(v) for v in task.outputs.values()) if task.outputs else None
    return TaskRequest(
        name=task.name,
        num_nodes=task.num_nodes,
        alternatives=tuple(resource_request(r) for r in alternatives),
        mode=mode,
        inputs=_inputs(task),
        outputs_gb=outputs,
    )


def task_requests(task_or_dag: Task | Dag) -> list[TaskRequest]:
    if isinstance(task_or_dag, Dag):
        return [task_request(t) for t in task_or_dag.tasks]
    return [task_request(task_or_dag)]
