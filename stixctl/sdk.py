"""The Python SDK: build tasks in code and drive stixd from Python, sync or async.

    from stixctl import sdk

    task = sdk.Task(run="python train.py", resources=sdk.Resources(cpus="2+"))
    result = sdk.launch(task, cluster="dev")            # returns once the job is submitted
    for chunk in sdk.logs("dev", result.job_id, follow=True):
        print(chunk, end="")
    sdk.down("dev")

    # the same from asyncio code
    result = await sdk.AsyncClient().launch(task, cluster="dev")

Every CLI command has a method on `Client` and its twin, same name and arguments, on
`AsyncClient` (`stixctl.sdk_async`); `CLI_EQUIVALENTS` pairs commands with methods. Both send
the CLI's request (built once, in `stixctl.sdk_ops`) to the same daemon, started if needed.
Results are the protocol's typed records (`stixproto.messages`, `stixproto.reports`);
failures raise the `stixproto.errors.StixError` subclasses the CLI turns into exit codes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

from stixctl import identity_ops as iops
from stixctl import sdk_ops as ops
from stixctl.client import call, ensure_started, stream, wait_gone
from stixctl.sdk_async import AsyncClient
from stixctl.sdk_ops import ConfigFiles, Names, Pipeline, SshAction, TaskLike
from stixctl.validate import FileReport
from stixproto import messages as m
from stixproto import reports as r
from stixproto.errors import DaemonUnavailable, InternalError
from stixproto.paths import stix_home
from stixproto.task import Resources, Task

__all__ = [
    "CLI_EQUIVALENTS",
    "CLI_ONLY",
    "AsyncClient",
    "Client",
    "FileReport",
    "Resources",
    "Task",
    "cancel",
    "down",
    "exec",
    "launch",
    "logs",
    "queue",
    "start",
    "status",
    "stop",
]

T = TypeVar("T")

CLI_EQUIVALENTS: dict[str, str] = {
    "launch": "launch",
    "launch --dryrun": "plan",
    "exec": "exec",
    "status": "status",
    "queue": "queue",
    "logs": "logs",
    "logs --status": "job_status",
    "cancel": "cancel",
    "stop": "stop",
    "start": "start",
    "down": "down",
    "autostop": "autostop",
    "cost-report": "cost_report",
    "check": "check",
    "leaks": "leaks",
    "leaks --terminate": "terminate_leaks",
    "events": "events",
    "storage ls": "storage_ls",
    "storage delete": "storage_delete",
    "show-gpus": "show_gpus",
    "catalog update": "catalog_update",
    "catalog status": "catalog_status",
    "ssh up": "ssh_pools",
    "ssh down": "ssh_pools",
    "ssh status": "ssh_pools",
    "ssh CLUSTER": "ssh_command",
    "validate": "validate",
    "daemon start": "daemon_start",
    "daemon stop": "daemon_stop",
    "daemon status": "daemon_status",
    "daemon logs": "daemon_log",
    "jobs launch": "jobs_launch",
    "jobs queue": "jobs_queue",
    "jobs cancel": "jobs_cancel",
    "jobs logs": "jobs_logs",
    "jobs logs --status": "jobs_status",
    "jobs pool apply": "pool_apply",
    "jobs pool status": "pool_status",
    "jobs pool down": "pool_down",
    "serve up": "serve_up",
    "serve update": "serve_update",
    "serve status": "serve_status",
    "serve logs": "serve_logs",
    "serve down": "serve_down",
    "users create": "users_create",
    "users ls": "users_ls",
    "workspaces ls": "workspaces_ls",
    "workspaces create": "workspaces_create",
    "workspaces update": "workspaces_update",
    "workspaces delete": "workspaces_delete",
    "volumes apply": "volumes_apply",
    "volumes ls": "volumes_ls",
    "volumes delete": "volumes_delete",
    "users delete": "users_delete",
    "users role": "users_role",
    "tokens create": "tokens_create",
    "tokens ls": "tokens_ls",
    "tokens revoke": "tokens_revoke",
    "tokens rotate": "tokens_rotate",
    "api info": "api_info",
    "api start": "api_start",
    "api stop": "api_stop",
}
"""CLI command → the method of `Client` and `AsyncClient` that does the same."""

CLI_ONLY: dict[str, str] = {
    "daemon install": "writes this user's service unit: a one-time setup, done from a shell",
    "fake preempt": "drives the test-only fake provider; not an operation of real infra",
    "completion bash": "prints a shell's completion script; nothing a program calls",
    "completion zsh": "prints a shell's completion script; nothing a program calls",
    "completion fish": "prints a shell's completion script; nothing a program calls",
    "api login": "writes this user's login file; a program sets STIX_API_SERVER/STIX_API_TOKEN",
    "api logout": "deletes this user's login file; a program unsets STIX_API_SERVER",
    "api status": "prints whether the server answers; a program calls api_info",
}
"""CLI commands with no SDK method, and why."""


class Client:
    """Synchronous client; each call is one request to the daemon of `home`."""

    def __init__(self, home: str | Path | None = None, *, autostart: bool = True) -> None:
        self.home = Path(home).expanduser() if home else stix_home()
        self.autostart = autostart

    def _run(self, op: ops.Op[Any, T]) -> T:
        autostart = self.autostart and op.autostart
        return op.finish(call(self.home, op.request, autostart=autostart, local=op.local))

    def _chunks(self, request: m.Logs | m.JobsLogs | m.ServeLogs) -> Iterator[str]:
        for msg in stream(self.home, request, autostart=self.autostart):
            if isinstance(msg, m.LogChunk):
                yield msg.data

    # -- clusters and their jobs

    def launch(
        self,
        task: TaskLike,
        cluster: str | None = None,
        *,
        detach: bool = True,
        down: bool = False,
        idle_minutes: float | None = None,
        no_setup: bool = False,
        config: ConfigFiles = (),
        retry_until_up: bool = False,
        fast: bool = False,
        detach_setup: bool = False,
    ) -> m.LaunchResult:
        """Provision (or reuse) `cluster` and submit the task; with detach=False, wait for it."""
        return self._run(
            ops.launch(
                task,
                cluster,
                detach,
                down,
                idle_minutes,
                no_setup,
                config,
                retry_until_up,
                fast,
                detach_setup,
            )
        )

    def plan(
        self,
        task: Pipeline,
        *,
        all_clouds: bool = False,
        minimize: Literal["cost", "time"] = "cost",
    ) -> m.PlanReply:
        """`launch --dryrun`: the optimizer's plan (`no_fit_reason` set when nothing fits)."""
        return self._run(ops.plan(task, all_clouds, minimize))

    def exec(self, cluster: str, task: TaskLike, *, detach: bool = True) -> m.LaunchResult:
        return self._run(ops.exec_(cluster, task, detach))

    def status(
        self,
        clusters: Names = (),
        *,
        refresh: bool = False,
        all: bool = False,
        limit: int | None = None,
        all_users: bool = False,
    ) -> list[m.ClusterRecord]:
        """`limit`: at most so many of the clusters managed jobs keep up (None: every one);
        `all_users`: every user's (else the caller's own)."""
        return self._run(ops.status(clusters, refresh, all, limit, all_users))

    def queue(
        self,
        clusters: Names = (),
        *,
        all: bool = False,
        skip_finished: bool = False,
        all_users: bool = False,
    ) -> list[m.JobRecord]:
        return self._run(ops.queue(clusters, all, skip_finished, all_users))

    def job_status(self, cluster: str, job_id: int | None = None) -> str:
        return self._run(ops.job_status(cluster, job_id))

    def logs(
        self,
        cluster: str,
        job_id: int | None = None,
        *,
        follow: bool = False,
        tail: int | None = None,
        node: int | None = None,
    ) -> Iterator[str]:
        """The job's log as it arrives (with follow=True, until the job ends)."""
        return self._chunks(ops.logs(cluster, job_id, follow, tail, node))

    def cancel(self, cluster: str, job_ids: Sequence[int] = (), *, all: bool = False) -> list[int]:
        """Cancel jobs on `cluster` as `stixctl cancel` does: these ids, or all=True."""
        return self._run(ops.cancel(cluster, job_ids, all))

    def stop(self, clusters: Names = (), *, all: bool = False) -> None:
        self._run(ops.stop(clusters, all))

    def start(
        self, clusters: Names, *, idle_minutes: float | None = None, down: bool = False
    ) -> None:
        self._run(ops.start(clusters, idle_minutes, down))

    def down(self, clusters: Names = (), *, all: bool = False, purge: bool = False) -> None:
        self._run(ops.down(clusters, all, purge))

    def autostop(
        self,
        clusters: Names,
        idle_minutes: float | None,
        *,
        down: bool = False,
        all: bool = False,
    ) -> None:
        """Stop (or `down`) after `idle_minutes` idle; None cancels the autostop."""
        self._run(ops.autostop(clusters, idle_minutes, down, all))

    def ssh_command(
        self, cluster: str, *, node: int = 0, command: str | None = None
    ) -> m.ShellCommand:
        """How to open a shell on (or run `command` on) a node: argv, cwd and env to add."""
        return self._run(ops.ssh_command(cluster, node, command))

    # -- infras, costs, history

    def cost_report(self, *, all: bool = False, days: int = 30) -> m.CostReport:
        return self._run(ops.cost_report(all, days))

    def check(self, infras: Sequence[str] = ()) -> list[m.InfraCheck]:
        return self._run(ops.check(infras))

    def leaks(self) -> m.LeakList:
        """Scan the infras now for instances of stix's that no cluster owns."""
        return self._run(ops.leaks(False, ()))

    def terminate_leaks(self, ids: Sequence[str] = ()) -> m.LeakList:
        """Terminate the leaks a scan finds now (only those in `ids`, when given)."""
        return self._run(ops.leaks(True, ids))

    def events(
        self,
        name: str,
        job_id: int | None = None,
        *,
        kind: m.EventKind | None = None,
        limit: int = 200,
    ) -> list[m.EventRecord]:
        kind = kind or ("job" if job_id is not None else "cluster")
        return self._run(ops.events(name, kind, limit, job_id))

    def show_gpus(
        self,
        name: str | None = None,
        count: float | None = None,
        *,
        infra: str | None = None,
        all: bool = False,
    ) -> r.Report[r.GpuRow]:
        return self._run(ops.show_gpus(name, count, infra, all))

    def catalog_update(self, clouds: Sequence[str] = ()) -> r.Report[r.FileResult]:
        return self._run(ops.catalog_update(clouds))

    def catalog_status(self) -> r.Report[r.CatalogAge]:
        return self._run(ops.catalog_status())

    def ssh_pools(self, action: SshAction, pool: str | None = None) -> r.Report[r.SshHost]:
        return self._run(ops.ssh_pools(action, pool))

    def validate(
        self,
        files: str | Path | Sequence[str | Path],
        *,
        env: Mapping[str, str] | None = None,
        secrets: Mapping[str, str] | None = None,
    ) -> list[FileReport]:
        """Judge task files on this machine (no daemon): one report per file, never raises
        for a bad file: its problems are in `errors` (invalid) and `warnings`."""
        return ops.validate(files, env, secrets)

    # -- the HTTP API server

    def api_info(self) -> m.ApiServerInfo:
        """The server commands go to: its version, who you are there (`user`, `role`)."""
        return self._run(ops.api_info())

    def api_start(self, *, host: str | None = None, port: int | None = None) -> m.ApiServerInfo:
        """Make this machine's daemon serve the HTTP API (`serving`: its URL), also after
        restarts; host and port None: the last ones, else the config's `api:` section."""
        return self._run(ops.api_start(host, port))

    def api_stop(self) -> None:
        """Stop serving the HTTP API (the socket stays), also after restarts."""
        self._run(ops.api_stop())

    # -- the daemon

    def daemon_status(self) -> m.DaemonInfo:
        """The running daemon (never starts one: DaemonUnavailable when none runs)."""
        return self._run(ops.daemon_status())

    def daemon_start(self) -> m.DaemonInfo:
        ensure_started(self.home)
        return self._run(ops.daemon_status())

    def daemon_stop(self) -> bool:
        """Stop the daemon (clusters and jobs keep running); False when none was running."""
        try:
            pid = self._run(ops.daemon_status()).pid
            self._run(ops.daemon_shutdown())
        except DaemonUnavailable:
            return False
        if not wait_gone(self.home, pid, ops.STOP_TIMEOUT):
            raise InternalError(f"stixd (pid {pid}) did not stop within {ops.STOP_TIMEOUT:g}s")
        return True

    def daemon_log(self, *, tail: int = 50) -> list[str]:
        """The last `tail` lines of the daemon's log."""
        return ops.daemon_log(self.home, tail)

    # -- managed jobs and pools

    def jobs_launch(
        self,
        task: Pipeline,
        *,
        name: str | None = None,
        detach: bool = True,
        pool: str | None = None,
        num_jobs: int = 1,
        config: ConfigFiles = (),
    ) -> m.ManagedLaunched:
        """Run a task (or pipeline) as a managed job, recovered when its cluster is lost."""
        return self._run(ops.jobs_launch(task, name, detach, pool, num_jobs, config))

    def jobs_queue(
        self,
        *,
        all: bool = False,
        skip_finished: bool = False,
        limit: int | None = None,
        all_users: bool = False,
    ) -> list[m.ManagedJobRecord]:
        """`limit`: the newest so many (None: those in progress and the last 50 that ended)."""
        return self._run(ops.jobs_queue(all, skip_finished, limit, all_users))

    def jobs_status(self, job_id: int | None = None, *, name: str | None = None) -> str:
        """A managed job's state (`RUNNING`, `SUCCEEDED`, ...): by id, the latest of `name`,
        or the latest of all."""
        return self._run(ops.jobs_status(job_id, name))

    def jobs_cancel(
        self,
        job_ids: Sequence[int] = (),
        *,
        name: str | None = None,
        all: bool = False,
        pool: str | None = None,
    ) -> r.Report[r.ManagedJobCancel]:
        return self._run(ops.jobs_cancel(job_ids, name, all, pool))

    def jobs_logs(
        self,
        job_id: int | None = None,
        *,
        name: str | None = None,
        follow: bool = False,
        controller: bool = False,
    ) -> Iterator[str]:
        """A managed job's output (the latest job's when none is named), or with
        controller=True the controller's decisions about it."""
        return self._chunks(ops.jobs_logs(job_id, name, follow, controller))

    def pool_apply(
        self, task: TaskLike, name: str | None = None, *, config: ConfigFiles = ()
    ) -> str:
        """Create the pool (`task.pool.workers` workers) or resize it; the daemon's answer."""
        return self._run(ops.pool_apply(task, name, config))

    def pool_status(self, pools: Names = ()) -> r.Report[r.PoolRecord]:
        return self._run(ops.pool_status(pools))

    def pool_down(self, pools: Names = (), *, all: bool = False) -> r.Report[r.PoolRef]:
        return self._run(ops.pool_down(pools, all))

    # -- services

    def serve_up(
        self, task: TaskLike, name: str | None = None, *, config: ConfigFiles = ()
    ) -> m.ServiceUp:
        """Start a service (its task has a `service:` section); returns once its balancer
        answers, with the endpoint."""
        return self._run(ops.serve_up(task, name, config))

    def serve_update(
        self,
        service: str,
        task: TaskLike,
        *,
        mode: Literal["rolling", "blue_green"] = "rolling",
        config: ConfigFiles = (),
    ) -> m.ServiceUp:
        """Roll the service to a new version of its task."""
        return self._run(ops.serve_update(service, task, mode, config))

    def serve_status(
        self, services: Names = (), *, all_users: bool = False
    ) -> list[m.ServiceRecord]:
        return self._run(ops.serve_status(services, all_users))

    def storage_ls(self, storages: Names = ()) -> list[m.StorageRecord]:
        """The storages (of these names), each bucket looked at in its store now."""
        return self._run(ops.storage_ls(storages))

    def storage_delete(self, storages: Names = (), *, all: bool = False) -> m.StorageList:
        """Delete the buckets stix created for these storages (or all of yours) and forget
        them; a storage whose bucket stix did not create is only forgotten, its bucket kept."""
        return self._run(ops.storage_delete(storages, all))

    def workspaces_ls(self) -> list[m.WorkspaceRecord]:
        """The server's workspaces the caller may see."""
        return self._run(ops.workspaces_ls())

    def workspaces_create(
        self,
        name: str,
        *,
        infras: Sequence[str] = (),
        private: bool = False,
        users: Sequence[str] = (),
    ) -> m.WorkspaceRecord:
        """Admins: a new workspace whose launches may use `infras` (none: any), seen only by
        `users` (and admins) when `private`."""
        spec = m.WorkspaceSpec(
            allowed_clouds=list(infras) or None, private=private, allowed_users=list(users)
        )
        return self._run(iops.workspaces_create(name, spec))

    def workspaces_update(
        self,
        name: str,
        *,
        infras: Sequence[str] = (),
        private: bool = False,
        users: Sequence[str] = (),
    ) -> m.WorkspaceRecord:
        """Admins: replace the workspace's definition (as `workspaces_create` takes it)."""
        spec = m.WorkspaceSpec(
            allowed_clouds=list(infras) or None, private=private, allowed_users=list(users)
        )
        return self._run(iops.workspaces_update(name, spec))

    def workspaces_delete(self, name: str) -> str:
        """Admins: remove a workspace with no live clusters, managed jobs, pools or services."""
        return self._run(iops.workspaces_delete(name))

    def volumes_apply(
        self, volume: str | Path | Mapping[str, Any], config: ConfigFiles = ()
    ) -> str:
        """Make a volume from its YAML file (or the map one holds); the daemon's answer."""
        return self._run(ops.volumes_apply(volume, config))

    def volumes_ls(self, *, all_users: bool = False) -> list[m.VolumeRecord]:
        return self._run(ops.volumes_ls(all_users))

    def volumes_delete(self, volumes: Names = (), *, all: bool = False) -> str:
        """Delete volumes no live cluster mounts (-a: all of yours)."""
        return self._run(ops.volumes_delete(volumes, all))

    def serve_logs(
        self,
        service: str,
        replica_id: int | None = None,
        *,
        controller: bool = False,
        load_balancer: bool = False,
        follow: bool = False,
        tail: int | None = None,
    ) -> Iterator[str]:
        """A replica's log, or the service's decisions (controller=True), or its balancer's
        log (load_balancer=True)."""
        return self._chunks(
            ops.serve_logs(service, replica_id, controller, load_balancer, follow, tail)
        )

    def serve_down(
        self,
        services: Names = (),
        *,
        all: bool = False,
        purge: bool = False,
        replica_id: int | None = None,
    ) -> r.Report[r.ServiceDown]:
        """Take services down (their replicas' clusters with them), or one replica."""
        return self._run(ops.serve_down(services, all, purge, replica_id))

    # -- users and API tokens (admins)

    def users_create(self, name: str, *, role: m.RoleName = "user") -> m.UserRecord:
        return self._run(iops.users_create(name, role))

    def users_ls(self) -> list[m.UserRecord]:
        return self._run(iops.users_ls())

    def users_delete(self, name: str) -> str:
        """Remove the user and revoke their tokens; the daemon's answer."""
        return self._run(iops.users_delete(name))

    def users_role(self, name: str, role: m.RoleName) -> m.UserRecord:
        return self._run(iops.users_role(name, role))

    def tokens_create(
        self, user: str, *, expires_days: int | None = None, name: str | None = None
    ) -> m.TokenIssued:
        """A new token for `user`: `secret` is the token, shown this once."""
        return self._run(iops.tokens_create(user, expires_days, name))

    def tokens_ls(self, user: str | None = None) -> list[m.TokenRecord]:
        return self._run(iops.tokens_ls(user))

    def tokens_revoke(self, token_id: str) -> m.TokenRecord:
        return self._run(iops.tokens_revoke(token_id))

    def tokens_rotate(self, token_id: str) -> m.TokenIssued:
        """A new secret for the token (same id, user and lifetime); the old one stops working."""
        return self._run(iops.tokens_rotate(token_id))


def launch(task: TaskLike, cluster: str | None = None, **kwargs: Any) -> m.LaunchResult:
    return Client().launch(task, cluster, **kwargs)


def exec(cluster: str, task: TaskLike, **kwargs: Any) -> m.LaunchResult:
    return Client().exec(cluster, task, **kwargs)


def status(clusters: Names = (), **kwargs: Any) -> list[m.ClusterRecord]:
    return Client().status(clusters, **kwargs)


def queue(clusters: Names = (), **kwargs: Any) -> list[m.JobRecord]:
    return Client().queue(clusters, **kwargs)


def logs(cluster: str, job_id: int | None = None, **kwargs: Any) -> Iterator[str]:
    return Client().logs(cluster, job_id, **kwargs)


def cancel(cluster: str, job_ids: Sequence[int] = (), **kwargs: Any) -> list[int]:
    return Client().cancel(cluster, job_ids, **kwargs)


def stop(clusters: Names) -> None:
    Client().stop(clusters)


def start(clusters: Names, **kwargs: Any) -> None:
    Client().start(clusters, **kwargs)


def down(clusters: Names) -> None:
    Client().down(clusters)
