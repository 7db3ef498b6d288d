"""`AsyncClient`: the SDK's operations as coroutines, one for each method of `stixctl.sdk.Client`.

Each builds its request with the same `stixctl.sdk_ops` function as its sync twin; only the
transport differs (`stixctl.aclient`, asyncio streams).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

from stixctl import identity_ops as iops
from stixctl import sdk_ops as ops
from stixctl.aclient import acall, astream
from stixctl.client import ensure_started, wait_gone
from stixctl.sdk_ops import ConfigFiles, Names, Pipeline, SshAction, TaskLike
from stixctl.validate import FileReport
from stixproto import messages as m
from stixproto import reports as r
from stixproto.errors import DaemonUnavailable, InternalError
from stixproto.paths import stix_home

T = TypeVar("T")


class AsyncClient:
    """The same operations as `Client`, as coroutines (for asyncio programs)."""

    def __init__(self, home: str | Path | None = None, *, autostart: bool = True) -> None:
        self.home = Path(home).expanduser() if home else stix_home()
        self.autostart = autostart

    async def _run(self, op: ops.Op[Any, T]) -> T:
        autostart = self.autostart and op.autostart
        reply = await acall(self.home, op.request, autostart=autostart, local=op.local)
        return op.finish(reply)

    async def _chunks(self, request: m.Logs | m.JobsLogs | m.ServeLogs) -> AsyncIterator[str]:
        async for msg in astream(self.home, request, autostart=self.autostart):
            if isinstance(msg, m.LogChunk):
                yield msg.data

    # -- clusters and their jobs

    async def launch(
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
        return await self._run(
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

    async def plan(
        self,
        task: Pipeline,
        *,
        all_clouds: bool = False,
        minimize: Literal["cost", "time"] = "cost",
    ) -> m.PlanReply:
        return await self._run(ops.plan(task, all_clouds, minimize))

    async def exec(self, cluster: str, task: TaskLike, *, detach: bool = True) -> m.LaunchResult:
        return await self._run(ops.exec_(cluster, task, detach))

    async def status(
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
        return await self._run(ops.status(clusters, refresh, all, limit, all_users))

    async def queue(
        self,
        clusters: Names = (),
        *,
        all: bool = False,
        skip_finished: bool = False,
        all_users: bool = False,
    ) -> list[m.JobRecord]:
        return await self._run(ops.queue(clusters, all, skip_finished, all_users))

    async def job_status(self, cluster: str, job_id: int | None = None) -> str:
        return await self._run(ops.job_status(cluster, job_id))

    def logs(
        self,
        cluster: str,
        job_id: int | None = None,
        *,
        follow: bool = False,
        tail: int | None = None,
        node: int | None = None,
    ) -> AsyncIterator[str]:
        return self._chunks(ops.logs(cluster, job_id, follow, tail, node))

    async def cancel(
        self, cluster: str, job_ids: Sequence[int] = (), *, all: bool = False
    ) -> list[int]:
        return await self._run(ops.cancel(cluster, job_ids, all))

    async def stop(self, clusters: Names = (), *, all: bool = False) -> None:
        await self._run(ops.stop(clusters, all))

    async def start(
        self, clusters: Names, *, idle_minutes: float | None = None, down: bool = False
    ) -> None:
        await self._run(ops.start(clusters, idle_minutes, down))

    async def down(self, clusters: Names = (), *, all: bool = False, purge: bool = False) -> None:
        await self._run(ops.down(clusters, all, purge))

    async def autostop(
        self,
        clusters: Names,
        idle_minutes: float | None,
        *,
        down: bool = False,
        all: bool = False,
    ) -> None:
        await self._run(ops.autostop(clusters, idle_minutes, down, all))

    async def ssh_command(
        self, cluster: str, *, node: int = 0, command: str | None = None
    ) -> m.ShellCommand:
        return await self._run(ops.ssh_command(cluster, node, command))

    # -- infras, costs, history

    async def cost_report(self, *, all: bool = False, days: int = 30) -> m.CostReport:
        return await self._run(ops.cost_report(all, days))

    async def check(self, infras: Sequence[str] = ()) -> list[m.InfraCheck]:
        return await self._run(ops.check(infras))

    async def leaks(self) -> m.LeakList:
        return await self._run(ops.leaks(False, ()))

    async def terminate_leaks(self, ids: Sequence[str] = ()) -> m.LeakList:
        return await self._run(ops.leaks(True, ids))

    async def events(
        self,
        name: str,
        job_id: int | None = None,
        *,
        kind: m.EventKind | None = None,
        limit: int = 200,
    ) -> list[m.EventRecord]:
        kind = kind or ("job" if job_id is not None else "cluster")
        return await self._run(ops.events(name, kind, limit, job_id))

    async def show_gpus(
        self,
        name: str | None = None,
        count: float | None = None,
        *,
        infra: str | None = None,
        all: bool = False,
    ) -> r.Report[r.GpuRow]:
        return await self._run(ops.show_gpus(name, count, infra, all))

    async def catalog_update(self, clouds: Sequence[str] = ()) -> r.Report[r.FileResult]:
        return await self._run(ops.catalog_update(clouds))

    async def catalog_status(self) -> r.Report[r.CatalogAge]:
        return await self._run(ops.catalog_status())

    async def ssh_pools(self, action: SshAction, pool: str | None = None) -> r.Report[r.SshHost]:
        return await self._run(ops.ssh_pools(action, pool))

    async def validate(
        self,
        files: str | Path | Sequence[str | Path],
        *,
        env: Mapping[str, str] | None = None,
        secrets: Mapping[str, str] | None = None,
    ) -> list[FileReport]:
        # reading and parsing files blocks: off the event loop
        return await asyncio.to_thread(ops.validate, files, env, secrets)

    # -- the HTTP API server

    async def api_info(self) -> m.ApiServerInfo:
        return await self._run(ops.api_info())

    async def api_start(
        self, *, host: str | None = None, port: int | None = None
    ) -> m.ApiServerInfo:
        return await self._run(ops.api_start(host, port))

    async def api_stop(self) -> None:
        await self._run(ops.api_stop())

    # -- the daemon

    async def daemon_status(self) -> m.DaemonInfo:
        return await self._run(ops.daemon_status())

    async def daemon_start(self) -> m.DaemonInfo:
        await asyncio.to_thread(ensure_started, self.home)
        return await self._run(ops.daemon_status())

    async def daemon_stop(self) -> bool:
        try:
            pid = (await self._run(ops.daemon_status())).pid
            await self._run(ops.daemon_shutdown())
        except DaemonUnavailable:
            return False
        if not await asyncio.to_thread(wait_gone, self.home, pid, ops.STOP_TIMEOUT):
            raise InternalError(f"stixd (pid {pid}) did not stop within {ops.STOP_TIMEOUT:g}s")
        return True

    async def daemon_log(self, *, tail: int = 50) -> list[str]:
        return await asyncio.to_thread(ops.daemon_log, self.home, tail)

    # -- managed jobs and pools

    async def jobs_launch(
        self,
        task: Pipeline,
        *,
        name: str | None = None,
        detach: bool = True,
        pool: str | None = None,
        num_jobs: int = 1,
        config: ConfigFiles = (),
    ) -> m.ManagedLaunched:
        return await self._run(ops.jobs_launch(task, name, detach, pool, num_jobs, config))

    async def jobs_queue(
        self,
        *,
        all: bool = False,
        skip_finished: bool = False,
        limit: int | None = None,
        all_users: bool = False,
    ) -> list[m.ManagedJobRecord]:
        """`limit`: the newest so many (None: those in progress and the last 50 that ended)."""
        return await self._run(ops.jobs_queue(all, skip_finished, limit, all_users))

    async def jobs_status(self, job_id: int | None = None, *, name: str | None = None) -> str:
        return await self._run(ops.jobs_status(job_id, name))

    async def jobs_cancel(
        self,
        job_ids: Sequence[int] = (),
        *,
        name: str | None = None,
        all: bool = False,
        pool: str | None = None,
    ) -> r.Report[r.ManagedJobCancel]:
        return await self._run(ops.jobs_cancel(job_ids, name, all, pool))

    def jobs_logs(
        self,
        job_id: int | None = None,
        *,
        name: str | None = None,
        follow: bool = False,
        controller: bool = False,
    ) -> AsyncIterator[str]:
        return self._chunks(ops.jobs_logs(job_id, name, follow, controller))

    async def pool_apply(
        self, task: TaskLike, name: str | None = None, *, config: ConfigFiles = ()
    ) -> str:
        return await self._run(ops.pool_apply(task, name, config))

    async def pool_status(self, pools: Names = ()) -> r.Report[r.PoolRecord]:
        return await self._run(ops.pool_status(pools))

    async def pool_down(self, pools: Names = (), *, all: bool = False) -> r.Report[r.PoolRef]:
        return await self._run(ops.pool_down(pools, all))

    # -- services

    async def serve_up(
        self, task: TaskLike, name: str | None = None, *, config: ConfigFiles = ()
    ) -> m.ServiceUp:
        return await self._run(ops.serve_up(task, name, config))

    async def serve_update(
        self,
        service: str,
        task: TaskLike,
        *,
        mode: Literal["rolling", "blue_green"] = "rolling",
        config: ConfigFiles = (),
    ) -> m.ServiceUp:
        return await self._run(ops.serve_update(service, task, mode, config))

    async def serve_status(
        self, services: Names = (), *, all_users: bool = False
    ) -> list[m.ServiceRecord]:
        return await self._run(ops.serve_status(services, all_users))

    async def storage_ls(self, storages: Names = ()) -> list[m.StorageRecord]:
        return await self._run(ops.storage_ls(storages))

    async def storage_delete(self, storages: Names = (), *, all: bool = False) -> m.StorageList:
        return await self._run(ops.storage_delete(storages, all))

    async def workspaces_ls(self) -> list[m.WorkspaceRecord]:
        """The server's workspaces the caller may see."""
        return await self._run(ops.workspaces_ls())

    async def workspaces_create(
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
        return await self._run(iops.workspaces_create(name, spec))

    async def workspaces_update(
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
        return await self._run(iops.workspaces_update(name, spec))

    async def workspaces_delete(self, name: str) -> str:
        """Admins: remove a workspace with no live clusters, managed jobs, pools or services."""
        return await self._run(iops.workspaces_delete(name))

    async def volumes_apply(
        self, volume: str | Path | Mapping[str, Any], config: ConfigFiles = ()
    ) -> str:
        """Make a volume from its YAML file (or the map one holds); the daemon's answer."""
        return await self._run(ops.volumes_apply(volume, config))

    async def volumes_ls(self, *, all_users: bool = False) -> list[m.VolumeRecord]:
        return await self._run(ops.volumes_ls(all_users))

    async def volumes_delete(self, volumes: Names = (), *, all: bool = False) -> str:
        """Delete volumes no live cluster mounts (-a: all of yours)."""
        return await self._run(ops.volumes_delete(volumes, all))

    def serve_logs(
        self,
        service: str,
        replica_id: int | None = None,
        *,
        controller: bool = False,
        load_balancer: bool = False,
        follow: bool = False,
        tail: int | None = None,
    ) -> AsyncIterator[str]:
        return self._chunks(
            ops.serve_logs(service, replica_id, controller, load_balancer, follow, tail)
        )

    async def serve_down(
        self,
        services: Names = (),
        *,
        all: bool = False,
        purge: bool = False,
        replica_id: int | None = None,
    ) -> r.Report[r.ServiceDown]:
        return await self._run(ops.serve_down(services, all, purge, replica_id))

    # -- users and API tokens (admins)

    async def users_create(self, name: str, *, role: m.RoleName = "user") -> m.UserRecord:
        return await self._run(iops.users_create(name, role))

    async def users_ls(self) -> list[m.UserRecord]:
        return await self._run(iops.users_ls())

    async def users_delete(self, name: str) -> str:
        """Remove the user and revoke their tokens; the daemon's answer."""
        return await self._run(iops.users_delete(name))

    async def users_role(self, name: str, role: m.RoleName) -> m.UserRecord:
        return await self._run(iops.users_role(name, role))

    async def tokens_create(
        self, user: str, *, expires_days: int | None = None, name: str | None = None
    ) -> m.TokenIssued:
        """A new token for `user`: `secret` is the token, shown this once."""
        return await self._run(iops.tokens_create(user, expires_days, name))

    async def tokens_ls(self, user: str | None = None) -> list[m.TokenRecord]:
        return await self._run(iops.tokens_ls(user))

    async def tokens_revoke(self, token_id: str) -> m.TokenRecord:
        return await self._run(iops.tokens_revoke(token_id))

    async def tokens_rotate(self, token_id: str) -> m.TokenIssued:
        """A new secret for the token (same id, user and lifetime); the old one stops working."""
        return await self._run(iops.tokens_rotate(token_id))
