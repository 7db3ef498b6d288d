"""One function per SDK operation: the request it sends and what its reply becomes.

`stixctl.sdk.Client` and `AsyncClient` both run these, so the sync and async flavours of an
operation cannot drift apart: they differ only in how the request travels.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeAlias, TypeVar

from stixctl import taskargs
from stixproto import messages as m
from stixproto import reports as r
from stixproto.bounds import MAX_LINES
from stixproto.errors import InvalidRequest, JobNotFound, ProtocolError
from stixproto.task import Task

if TYPE_CHECKING:
    from stixctl.validate import FileReport
    from stixproto.task import Dag

R = TypeVar("R")
T = TypeVar("T")

TaskLike = Task | str | Path
"""A Task, a task YAML file, or a shell command to run."""
Names = str | Sequence[str]
ConfigFiles = Sequence[str | Path]
SshAction = Literal["up", "down", "status"]
Pipeline: TypeAlias = "Task | str | Path | Sequence[Task] | Dag"
"""A task as `TaskLike`, or a pipeline: a `Dag`, a list of Tasks, a pipeline YAML file."""
STOP_TIMEOUT = 30.0
"""Seconds `daemon_stop` waits for the daemon to exit."""


@dataclass(frozen=True)
class Op(Generic[R, T]):
    """A request, the reply it must get, and what the caller receives from that reply."""

    request: Any
    reply: type[R]
    result: Callable[[R], T]
    autostart: bool = True
    """False: an operation on the daemon itself, which must not start one to answer."""
    local: bool = False
    """True: about this machine's daemon, sent on its socket even when commands go to a
    remote API server (`stixctl.endpoint`)."""

    def finish(self, reply: Any) -> T:
        if not isinstance(reply, self.reply):
            raise ProtocolError(
                f"stixd answered {type(reply).__name__} to {type(self.request).__name__}; "
                "the client and the daemon differ: restart it with `stixctl daemon stop`"
            )
        return self.result(reply)


def _same(reply: T) -> T:
    return reply


def _nothing(reply: object) -> None:
    return None


def names(value: Names) -> list[str]:
    """One name or several; a lone string is one name, never its characters."""
    return [value] if isinstance(value, str) else list(value)


# -- tasks -----------------------------------------------------------------------------------


def task_of(task: TaskLike) -> Task:
    if isinstance(task, Task):
        return task
    path = Path(task)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        from stixproto.task import load_task_file

        return load_task_file(path)
    from stixproto.task import task_from_command

    return task_from_command(str(task))


def pipeline_of(task: Pipeline) -> tuple[list[Task], str | None]:
    """The tasks of a pipeline (a Dag, a list of Tasks, a pipeline file) and its name."""
    from stixproto.task import Dag, load_dag_file

    if isinstance(task, Dag):
        return list(task.tasks), task.name
    if isinstance(task, Task):
        return [task], None
    if isinstance(task, str | Path):
        path = Path(task)
        if path.suffix in (".yaml", ".yml") or path.is_file():
            dag = load_dag_file(path)
            return list(dag.tasks), dag.name
        return [task_of(task)], None
    tasks = list(task)
    if not tasks or not all(isinstance(t, Task) for t in tasks):
        raise InvalidRequest("a pipeline is a non-empty list of Task objects")
    return tasks, None


def config_layers(files: ConfigFiles) -> list[m.ConfigLayer]:
    """The project's `.stix.yaml` and these files, read as `--config` reads them."""
    return taskargs.config_layers([str(f) for f in files])


# -- clusters and their jobs -----------------------------------------------------------------


def launch(
    task: TaskLike,
    cluster: str | None,
    detach: bool,
    down: bool,
    idle_minutes: float | None,
    no_setup: bool,
    config: ConfigFiles,
    retry_until_up: bool = False,
    fast: bool = False,
    detach_setup: bool = False,
) -> Op[m.LaunchResult, m.LaunchResult]:
    request = m.Launch(
        task=task_of(task),
        cluster=cluster,
        detach=detach,
        down=down,
        idle_minutes=idle_minutes,
        no_setup=no_setup,
        config=config_layers(config),
        retry_until_up=retry_until_up,
        fast=fast,
        detach_setup=detach_setup,
    )
    return Op(request, m.LaunchResult, _same)


def plan(
    task: Pipeline, all_clouds: bool, minimize: Literal["cost", "time"]
) -> Op[m.PlanReply, m.PlanReply]:
    tasks, _ = pipeline_of(task)
    return Op(
        m.PlanRequest(tasks=tasks, all_clouds=all_clouds, minimize=minimize), m.PlanReply, _same
    )


def exec_(cluster: str, task: TaskLike, detach: bool) -> Op[m.LaunchResult, m.LaunchResult]:
    return Op(m.Exec(cluster=cluster, task=task_of(task), detach=detach), m.LaunchResult, _same)


def status(
    clusters: Names, refresh: bool, all: bool, limit: int | None = None, all_users: bool = False
) -> Op[m.ClusterList, list[m.ClusterRecord]]:
    request = m.Status(
        clusters=names(clusters), refresh=refresh, all=all, limit=limit, all_users=all_users
    )
    return Op(request, m.ClusterList, lambda reply: list(reply.clusters))


def queue(
    clusters: Names, all: bool, skip_finished: bool, all_users: bool = False
) -> Op[m.JobList, list[m.JobRecord]]:
    request = m.Queue(
        clusters=names(clusters), all=all, skip_finished=skip_finished, all_users=all_users
    )
    return Op(request, m.JobList, lambda reply: list(reply.jobs))


def logs(
    cluster: str, job_id: int | None, follow: bool, tail: int | None, node: int | None
) -> m.Logs:
    """A streamed request: its `LogChunk`s are the output, its `LogsEnd` the job's end."""
    return m.Logs(cluster=cluster, job_id=job_id, follow=follow, tail=tail, node=node)


def job_status(cluster: str, job_id: int | None) -> Op[m.LogsEnd, str]:
    request = m.Logs(cluster=cluster, job_id=job_id, status_only=True)
    return Op(request, m.LogsEnd, lambda reply: reply.status)


def cancel(cluster: str, job_ids: Sequence[int], all: bool) -> Op[m.Cancelled, list[int]]:
    request = m.Cancel(cluster=cluster, job_ids=list(job_ids), all=all)
    return Op(request, m.Cancelled, lambda reply: list(reply.job_ids))


def stop(clusters: Names, all: bool) -> Op[m.OkReply, None]:
    return Op(m.Stop(clusters=names(clusters), all=all), m.OkReply, _nothing)


def start(clusters: Names, idle_minutes: float | None, down: bool) -> Op[m.OkReply, None]:
    request = m.Start(clusters=names(clusters), idle_minutes=idle_minutes, down=down)
    return Op(request, m.OkReply, _nothing)


def down(clusters: Names, all: bool, purge: bool) -> Op[m.OkReply, None]:
    return Op(m.Down(clusters=names(clusters), all=all, purge=purge), m.OkReply, _nothing)


def autostop(
    clusters: Names, idle_minutes: float | None, down: bool, all: bool
) -> Op[m.OkReply, None]:
    """`idle_minutes=None` cancels the autostop (`autostop --cancel`)."""
    request = m.Autostop(
        clusters=names(clusters),
        all=all,
        idle_minutes=idle_minutes,
        down=down,
        cancel=idle_minutes is None,
    )
    return Op(request, m.OkReply, _nothing)


def ssh_command(cluster: str, node: int, command: str | None) -> Op[m.ShellCommand, m.ShellCommand]:
    request = m.NodeShell(cluster=cluster, node=node, command=command)
    return Op(request, m.ShellCommand, _same)


# -- infras, costs, history ------------------------------------------------------------------


def cost_report(all: bool, days: int) -> Op[m.CostReport, m.CostReport]:
    return Op(m.CostReportReq(all=all, days=days), m.CostReport, _same)


def check(infras: Sequence[str]) -> Op[m.CheckReply, list[m.InfraCheck]]:
    return Op(m.Check(infras=list(infras)), m.CheckReply, lambda reply: list(reply.infras))


def leaks(terminate: bool, ids: Sequence[str]) -> Op[m.LeakList, m.LeakList]:
    return Op(m.Leaks(terminate=terminate, ids=list(ids)), m.LeakList, _same)


def storage_ls(storages: Names) -> Op[m.StorageList, list[m.StorageRecord]]:
    return Op(m.StorageLs(names=names(storages)), m.StorageList, lambda r: list(r.storages))


def storage_delete(storages: Names, all: bool) -> Op[m.StorageList, m.StorageList]:
    return Op(m.StorageDelete(names=names(storages), all=all), m.StorageList, _same)


def events(
    name: str, kind: m.EventKind, limit: int, job_id: int | None = None
) -> Op[m.EventList, list[m.EventRecord]]:
    """A job's history is `events(cluster, kind="job", job_id=ID)`, ID as `queue` shows it."""
    request = m.Events(name=name, kind=kind, limit=limit, job_id=job_id)
    return Op(request, m.EventList, lambda reply: list(reply.events))


def _report(row: type[T]) -> Callable[[m.Table], r.Report[T]]:
    return lambda table: r.report_of(table.text, table.rows, table.ok, row)


def _gpu_report(table: m.Table) -> r.Report[r.GpuRow]:
    return r.report_of(table.text, table.rows, table.ok, r.GpuRow)


def show_gpus(
    name: str | None, count: float | None, infra: str | None, all: bool
) -> Op[m.Table, r.Report[r.GpuRow]]:
    """`name` may carry the count as the CLI's `NAME:COUNT` does (`A100:8`)."""
    if name and ":" in name and count is None:
        name, _, raw = name.partition(":")
        try:
            count = float(raw)
        except ValueError:
            raise InvalidRequest(f"{name}:{raw}: the count after ':' must be a number") from None
    request = m.ShowGpus(name=name, count=count, infra=infra, all=all)
    return Op(request, m.Table, _gpu_report)


def catalog_update(clouds: Sequence[str]) -> Op[m.Table, r.Report[r.FileResult]]:
    return Op(m.CatalogUpdate(clouds=list(clouds)), m.Table, _report(r.FileResult))


def catalog_status() -> Op[m.Table, r.Report[r.CatalogAge]]:
    return Op(m.CatalogStatus(), m.Table, _report(r.CatalogAge))


def ssh_pools(action: SshAction, pool: str | None) -> Op[m.Table, r.Report[r.SshHost]]:
    return Op(m.SshPools(action=action, pool=pool), m.Table, _report(r.SshHost))


def daemon_status() -> Op[m.DaemonInfo, m.DaemonInfo]:
    return Op(m.DaemonStatus(), m.DaemonInfo, _same, autostart=False, local=True)


def daemon_shutdown() -> Op[m.OkReply, None]:
    return Op(m.Shutdown(), m.OkReply, _nothing, autostart=False, local=True)


def api_info() -> Op[m.ApiServerInfo, m.ApiServerInfo]:
    """Whoever serves the commands (a remote API server, else the local daemon)."""
    return Op(m.ApiInfo(), m.ApiServerInfo, _same, autostart=False)


def api_start(host: str | None, port: int | None) -> Op[m.ApiServerInfo, m.ApiServerInfo]:
    return Op(m.ApiServe(host=host, port=port), m.ApiServerInfo, _same, local=True)


def api_stop() -> Op[m.ApiServerInfo, None]:
    return Op(m.ApiStop(), m.ApiServerInfo, _nothing, local=True)


def validate(
    files: str | Path | Sequence[str | Path],
    env: Mapping[str, str] | None,
    secrets: Mapping[str, str] | None,
) -> list[FileReport]:
    """Judge task files here, as `stixctl validate` does: one verdict per file."""
    from stixctl.validate import judge

    paths = [files] if isinstance(files, str | Path) else list(files)
    return [judge(str(p), dict(env or {}), dict(secrets or {})) for p in paths]


def daemon_log(home: Path, tail: int) -> list[str]:
    """The last `tail` lines of the daemon's log file (none yet: an empty list)."""
    if not 0 <= tail <= MAX_LINES:
        raise InvalidRequest(f"daemon log: tail must be from 0 to {MAX_LINES}, not {tail}")
    try:
        data = (home / "stixd.log").read_bytes()
    except FileNotFoundError:
        return []
    lines = data.decode(errors="replace").splitlines()
    return lines[-tail:] if tail else []


# -- managed jobs and pools ------------------------------------------------------------------


def jobs_launch(
    task: Pipeline,
    name: str | None,
    detach: bool,
    pool: str | None,
    num_jobs: int,
    config: ConfigFiles,
) -> Op[m.ManagedLaunched, m.ManagedLaunched]:
    tasks, dag_name = pipeline_of(task)
    request = m.JobsLaunch(
        tasks=tasks,
        name=name or dag_name,
        detach=detach,
        config=config_layers(config),
        pool=pool,
        num_jobs=num_jobs,
    )
    return Op(request, m.ManagedLaunched, _same)


def jobs_queue(
    all: bool, skip_finished: bool, limit: int | None = None, all_users: bool = False
) -> Op[m.ManagedJobList, list[m.ManagedJobRecord]]:
    request = m.JobsQueue(all=all, skip_finished=skip_finished, limit=limit, all_users=all_users)
    return Op(request, m.ManagedJobList, lambda reply: list(reply.jobs))


def jobs_status(job_id: int | None, name: str | None) -> Op[m.ManagedJobList, str]:
    """The state of a managed job: by id, the latest of that name, or the latest of all."""

    def result(reply: m.ManagedJobList) -> str:
        found = [
            j
            for j in reply.jobs
            if (job_id is None or j.job_id == job_id) and (name is None or j.name == name)
        ]
        if not found:
            what = f" {job_id}" if job_id is not None else f" named {name!r}" if name else "s"
            raise JobNotFound(f"no managed job{what}")
        return max(found, key=lambda j: j.job_id).status

    return Op(m.JobsQueue(all=True), m.ManagedJobList, result)


def jobs_cancel(
    job_ids: Sequence[int], name: str | None, all: bool, pool: str | None = None
) -> Op[m.Table, r.Report[r.ManagedJobCancel]]:
    if not (job_ids or name or all or pool):
        raise InvalidRequest("name the managed jobs to cancel: job_ids, name, pool or all=True")
    request = m.JobsCancel(job_ids=list(job_ids), name=name, all=all, pool=pool)
    return Op(request, m.Table, _report(r.ManagedJobCancel))


def jobs_logs(job_id: int | None, name: str | None, follow: bool, controller: bool) -> m.JobsLogs:
    """A streamed request, as `logs`: `LogChunk`s, then a `LogsEnd` with the job's status."""
    return m.JobsLogs(job_id=job_id, name=name, follow=follow, controller=controller)


def pool_apply(task: TaskLike, name: str | None, config: ConfigFiles) -> Op[m.OkReply, str]:
    loaded = task_of(task)
    pool = name or loaded.name
    if not pool:
        raise InvalidRequest("name the pool: pool_apply(task, name=...) or `name:` in the task")
    request = m.PoolApply(name=pool, task=loaded, config=config_layers(config))
    return Op(request, m.OkReply, lambda reply: reply.message)


def pool_status(pools: Names) -> Op[m.Table, r.Report[r.PoolRecord]]:
    return Op(m.PoolStatusReq(names=names(pools)), m.Table, _report(r.PoolRecord))


def pool_down(pools: Names, all: bool) -> Op[m.Table, r.Report[r.PoolRef]]:
    return Op(m.PoolDown(names=names(pools), all=all), m.Table, _report(r.PoolRef))


# -- services --------------------------------------------------------------------------------


def with_local_tls(task: Task) -> Task:
    """The service's TLS key and certificate paths made absolute here: the balancer reads
    them from the daemon, whose directory is not this one."""
    import os

    import msgspec

    service = task.service
    if service is None or not service.tls:
        return task
    tls = {
        k: os.path.abspath(os.path.expanduser(v)) if k in ("keyfile", "certfile") else v
        for k, v in service.tls.items()
    }
    return msgspec.structs.replace(task, service=msgspec.structs.replace(service, tls=tls))


def serve_up(task: TaskLike, name: str | None, config: ConfigFiles) -> Op[m.ServiceUp, m.ServiceUp]:
    loaded = with_local_tls(task_of(task))
    request = m.ServeUp(task=loaded, name=name, config=config_layers(config))
    return Op(request, m.ServiceUp, _same)


def serve_update(
    name: str, task: TaskLike, mode: Literal["rolling", "blue_green"], config: ConfigFiles
) -> Op[m.ServiceUp, m.ServiceUp]:
    loaded = with_local_tls(task_of(task))
    request = m.ServeUpdate(name=name, task=loaded, mode=mode, config=config_layers(config))
    return Op(request, m.ServiceUp, _same)


def serve_status(
    services: Names, all_users: bool = False
) -> Op[m.ServiceList, list[m.ServiceRecord]]:
    request = m.ServeStatus(names=names(services), all_users=all_users)
    return Op(request, m.ServiceList, lambda r: list(r.services))


def workspaces_ls() -> Op[m.WorkspaceList, list[m.WorkspaceRecord]]:
    return Op(m.WorkspacesList(), m.WorkspaceList, lambda r: list(r.workspaces))


def volumes_apply(
    volume: str | Path | Mapping[str, Any], config: ConfigFiles = ()
) -> Op[m.OkReply, str]:
    """A volume from its YAML file, or from the map such a file holds."""
    from stixproto import volumes

    if isinstance(volume, Mapping):
        spec = volumes.from_yaml(dict(volume))
    else:
        from stixctl.volumes import read_volume

        spec = read_volume(str(volume))
    request = m.VolumesApply(volume=spec, config=config_layers(config))
    return Op(request, m.OkReply, lambda r: r.message)


def volumes_ls(all_users: bool = False) -> Op[m.VolumeList, list[m.VolumeRecord]]:
    return Op(m.VolumesList(all_users=all_users), m.VolumeList, lambda r: list(r.volumes))


def volumes_delete(volumes: Names = (), all: bool = False) -> Op[m.OkReply, str]:
    return Op(m.VolumesDelete(names=names(volumes), all=all), m.OkReply, lambda r: r.message)


def serve_logs(
    service: str,
    replica_id: int | None,
    controller: bool,
    load_balancer: bool,
    follow: bool,
    tail: int | None,
) -> m.ServeLogs:
    """A streamed request: its `LogChunk`s are the log."""
    if controller and load_balancer:
        raise InvalidRequest("ask for the controller's log or the load balancer's, not both")
    target: Literal["replica", "controller", "load_balancer"] = (
        "controller" if controller else "load_balancer" if load_balancer else "replica"
    )
    if target == "replica" and replica_id is None:
        raise InvalidRequest("name a replica_id, or pass controller=True or load_balancer=True")
    return m.ServeLogs(name=service, replica_id=replica_id, target=target, follow=follow, tail=tail)


def serve_down(
    services: Names, all: bool, purge: bool, replica_id: int | None
) -> Op[m.Table, r.Report[r.ServiceDown]]:
    request = m.ServeDown(names=names(services), all=all, purge=purge, replica_id=replica_id)
    if not (request.names or all):
        raise InvalidRequest("name the services to take down, or all=True")
    return Op(request, m.Table, _report(r.ServiceDown))
