"""The Python SDK: build tasks in code and drive stixd from Python, sync or async.

    from stixctl import sdk

    task = sdk.Task(run="python train.py", resources=sdk.Resources(cpus="2+"))
    result = sdk.launch(task, cluster="dev")            # returns once the job is submitted
    for chunk in sdk.logs("dev", result.job_id, follow=True):
        print(chunk, end="")
    sdk.down("dev")

    # the same from asyncio code
    result = await sdk.AsyncClient().launch(task, cluster="dev")

Every operation is the CLI's: the same request to the same daemon (started if needed).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

from stixctl.aclient import acall, astream
from stixctl.client import call, stream
from stixproto import messages as m
from stixproto.paths import stix_home
from stixproto.task import Resources, Task, load_task_file

__all__ = [
    "AsyncClient",
    "Client",
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

TaskLike = Task | str | Path


def _task(task: TaskLike) -> Task:
    if isinstance(task, Task):
        return task
    path = Path(task)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        return load_task_file(path)
    return Task(run=str(task))


class _Requests:
    """The requests behind each operation, shared by the sync and async clients."""

    @staticmethod
    def launch(
        task: TaskLike,
        cluster: str | None,
        detach: bool,
        down: bool,
        idle_minutes: float | None,
        no_setup: bool,
    ) -> m.Launch:
        return m.Launch(
            task=_task(task),
            cluster=cluster,
            detach=detach,
            down=down,
            idle_minutes=idle_minutes,
            no_setup=no_setup,
        )

    @staticmethod
    def logs(cluster: str, job_id: int | None, follow: bool, tail: int | None) -> m.Logs:
        return m.Logs(cluster=cluster, job_id=job_id, follow=follow, tail=tail)


def _names(clusters: str | Sequence[str]) -> list[str]:
    return [clusters] if isinstance(clusters, str) else list(clusters)


class Client:
    """Synchronous client; each call is one request to the daemon of `home`."""

    def __init__(self, home: str | Path | None = None, *, autostart: bool = True) -> None:
        self.home = Path(home).expanduser() if home else stix_home()
        self.autostart = autostart

    def _call(self, request: Any) -> Any:
        return call(self.home, request, autostart=self.autostart)

    def launch(
        self,
        task: TaskLike,
        cluster: str | None = None,
        *,
        detach: bool = True,
        down: bool = False,
        idle_minutes: float | None = None,
        no_setup: bool = False,
    ) -> m.LaunchResult:
        """Provision (or reuse) `cluster` and submit the task; with detach=False, wait for it."""
        req = _Requests.launch(task, cluster, detach, down, idle_minutes, no_setup)
        result: m.LaunchResult = self._call(req)
        return result

    def exec(self, cluster: str, task: TaskLike, *, detach: bool = True) -> m.LaunchResult:
        result: m.LaunchResult = self._call(
            m.Exec(cluster=cluster, task=_task(task), detach=detach)
        )
        return result

    def status(
        self, clusters: Sequence[str] = (), *, refresh: bool = False, all: bool = False
    ) -> list[m.ClusterRecord]:
        reply = self._call(m.Status(clusters=list(clusters), refresh=refresh, all=all))
        return list(reply.clusters)

    def queue(
        self, clusters: str | Sequence[str] = (), *, skip_finished: bool = False
    ) -> list[m.JobRecord]:
        reply = self._call(m.Queue(clusters=_names(clusters), skip_finished=skip_finished))
        return list(reply.jobs)

    def job_status(self, cluster: str, job_id: int | None = None) -> str:
        reply = self._call(m.Logs(cluster=cluster, job_id=job_id, status_only=True))
        return str(reply.status)

    def logs(
        self,
        cluster: str,
        job_id: int | None = None,
        *,
        follow: bool = False,
        tail: int | None = None,
    ) -> Iterator[str]:
        """The job's log as it arrives (with follow=True, until the job ends)."""
        req = _Requests.logs(cluster, job_id, follow, tail)
        for msg in stream(self.home, req, autostart=self.autostart):
            if isinstance(msg, m.LogChunk):
                yield msg.data

    def cancel(self, cluster: str, job_ids: Sequence[int] = (), *, all: bool = False) -> list[int]:
        reply = self._call(m.Cancel(cluster=cluster, job_ids=list(job_ids), all=all))
        return list(reply.job_ids)

    def stop(self, clusters: str | Sequence[str]) -> None:
        self._call(m.Stop(clusters=_names(clusters)))

    def start(self, clusters: str | Sequence[str], *, idle_minutes: float | None = None) -> None:
        self._call(m.Start(clusters=_names(clusters), idle_minutes=idle_minutes))

    def down(self, clusters: str | Sequence[str]) -> None:
        self._call(m.Down(clusters=_names(clusters)))

    def autostop(
        self, clusters: str | Sequence[str], idle_minutes: float | None, *, down: bool = False
    ) -> None:
        cancel = idle_minutes is None
        self._call(
            m.Autostop(
                clusters=_names(clusters), idle_minutes=idle_minutes, down=down, cancel=cancel
            )
        )


class AsyncClient:
    """The same operations as `Client`, as coroutines (for asyncio programs)."""

    def __init__(self, home: str | Path | None = None, *, autostart: bool = True) -> None:
        self.home = Path(home).expanduser() if home else stix_home()
        self.autostart = autostart

    async def _call(self, request: Any) -> Any:
        return await acall(self.home, request, autostart=self.autostart)

    async def launch(
        self,
        task: TaskLike,
        cluster: str | None = None,
        *,
        detach: bool = True,
        down: bool = False,
        idle_minutes: float | None = None,
        no_setup: bool = False,
    ) -> m.LaunchResult:
        req = _Requests.launch(task, cluster, detach, down, idle_minutes, no_setup)
        result: m.LaunchResult = await self._call(req)
        return result

    async def exec(self, cluster: str, task: TaskLike, *, detach: bool = True) -> m.LaunchResult:
        req = m.Exec(cluster=cluster, task=_task(task), detach=detach)
        result: m.LaunchResult = await self._call(req)
        return result

    async def status(
        self, clusters: Sequence[str] = (), *, refresh: bool = False, all: bool = False
    ) -> list[m.ClusterRecord]:
        reply = await self._call(m.Status(clusters=list(clusters), refresh=refresh, all=all))
        return list(reply.clusters)

    async def queue(
        self, clusters: str | Sequence[str] = (), *, skip_finished: bool = False
    ) -> list[m.JobRecord]:
        reply = await self._call(m.Queue(clusters=_names(clusters), skip_finished=skip_finished))
        return list(reply.jobs)

    async def job_status(self, cluster: str, job_id: int | None = None) -> str:
        reply = await self._call(m.Logs(cluster=cluster, job_id=job_id, status_only=True))
        return str(reply.status)

    async def logs(
        self,
        cluster: str,
        job_id: int | None = None,
        *,
        follow: bool = False,
        tail: int | None = None,
    ) -> AsyncIterator[str]:
        req = _Requests.logs(cluster, job_id, follow, tail)
        async for msg in astream(self.home, req, autostart=self.autostart):
            if isinstance(msg, m.LogChunk):
                yield msg.data

    async def cancel(
        self, cluster: str, job_ids: Sequence[int] = (), *, all: bool = False
    ) -> list[int]:
        reply = await self._call(m.Cancel(cluster=cluster, job_ids=list(job_ids), all=all))
        return list(reply.job_ids)

    async def stop(self, clusters: str | Sequence[str]) -> None:
        await self._call(m.Stop(clusters=_names(clusters)))

    async def start(
        self, clusters: str | Sequence[str], *, idle_minutes: float | None = None
    ) -> None:
        await self._call(m.Start(clusters=_names(clusters), idle_minutes=idle_minutes))

    async def down(self, clusters: str | Sequence[str]) -> None:
        await self._call(m.Down(clusters=_names(clusters)))


def launch(task: TaskLike, cluster: str | None = None, **kwargs: Any) -> m.LaunchResult:
    return Client().launch(task, cluster, **kwargs)


def exec(cluster: str, task: TaskLike, **kwargs: Any) -> m.LaunchResult:
    return Client().exec(cluster, task, **kwargs)


def status(clusters: Sequence[str] = (), **kwargs: Any) -> list[m.ClusterRecord]:
    return Client().status(clusters, **kwargs)


def queue(clusters: str | Sequence[str] = (), **kwargs: Any) -> list[m.JobRecord]:
    return Client().queue(clusters, **kwargs)


def logs(cluster: str, job_id: int | None = None, **kwargs: Any) -> Iterator[str]:
    return Client().logs(cluster, job_id, **kwargs)


def cancel(cluster: str, job_ids: Sequence[int] = (), **kwargs: Any) -> list[int]:
    return Client().cancel(cluster, job_ids, **kwargs)


def stop(clusters: str | Sequence[str]) -> None:
    Client().stop(clusters)


def start(clusters: str | Sequence[str], **kwargs: Any) -> None:
    Client().start(clusters, **kwargs)


def down(clusters: str | Sequence[str]) -> None:
    Client().down(clusters)
