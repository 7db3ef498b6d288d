"""The agent's Unix-socket server: JSON-lines requests in, one reply line each, plus its clock.

``AgentServer.run`` serves until something decides how the agent ends (``Exit``): SIGTERM, a
``shutdown`` or ``upgrade`` request, the autostop switch, or a crash of its periodic loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import socket
import sqlite3
import time
import zipfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import PROTOCOL, gate
from .fetch import fetch
from .files import NodeFiles
from .idle import (
    Autostop,
    autostop_due,
    idle_since,
    load_autostop,
    load_self_stop,
    save_autostop,
    save_self_stop,
    stop_machine,
    stop_node,
)
from .jobs import POLL_S, JobManager
from .logs import LogChunk, read_log
from .mount import mount, mount_keys, unmount_all
from .protocol import (
    MAX_LINE,
    RequestError,
    decode_request,
    encode,
    error,
    get_bool,
    get_float,
    get_int,
    get_optional_float,
    get_optional_ints,
    get_optional_str,
    get_state,
    get_str,
    ok,
    parse_submit,
)
from .runner import log_path, read_run_mark
from .store import JobRow

if TYPE_CHECKING:
    from .protocol import Reply, Request

TICK_S = 0.25
"""Period of the loop that reaps runners, notices their writes and checks autostop."""
MAX_TAIL_BYTES = 8 * 1024 * 1024
MAX_WAIT_S = 3600.0

log = logging.getLogger("stix_agent.server")


@dataclasses.dataclass(frozen=True)
class NodeIdentity:
    cluster: str
    rank: int
    num_gpus: float
    node_ip: str
    node_dir: Path
    socket_path: Path
    down_removes: Path | None = None
    """What autostop with ``down`` removes: the node directory, or a directory holding it."""


@dataclasses.dataclass(frozen=True)
class Exit:
    """How the agent process ends. Running jobs are left alone in every case."""

    code: int = 0
    exec_pyz: str | None = None
    """Re-exec this zipapp in place (same pid) instead of exiting."""
    unlink_socket: bool = True


@dataclasses.dataclass(frozen=True)
class Answer:
    reply: Reply
    then: Exit | None = None
    """Set when the agent ends once this reply is sent."""


def _bounded(request: Request, name: str, default: float, low: float, high: float) -> float:
    value = get_float(request, name, default)
    if not low <= value <= high:
        raise RequestError("bad_request", f'the field "{name}" must be between {low} and {high}')
    return value


def _runnable_zipapp(raw_path: str) -> Path:
    pyz = Path(raw_path).expanduser().resolve()
    if not zipfile.is_zipfile(pyz):
        raise RequestError("bad_pyz", f"{pyz} is not a zipapp readable by this agent")
    with zipfile.ZipFile(pyz) as archive:
        if "__main__.py" not in archive.namelist():
            raise RequestError("bad_pyz", f"{pyz} has no __main__.py, so it cannot run")
    return pyz


class AgentServer:
    def __init__(
        self,
        identity: NodeIdentity,
        jobs: JobManager,
        *,
        build: str,
        boot_time: float,
        listener: socket.socket,
        notify_fd: int,
        files: NodeFiles | None = None,
    ) -> None:
        self.identity = identity
        self.jobs = jobs
        self.build = build
        self.boot_time = boot_time
        self.started_at = time.time()
        self._listener = listener
        self.socket_inode = identity.socket_path.stat().st_ino
        self._notify_fd = notify_fd
        self._files = files
        self._servers: list[asyncio.AbstractServer] = []
        self._rebinds: list[asyncio.Future[None]] = []
        self._stopping = False
        self._outcome: asyncio.Future[Exit] | None = None
        self._connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self._ops: dict[str, Callable[[Request], Awaitable[Answer]]] = {
            "hello": self._hello,
            "submit": self._submit,
            "jobs": self._jobs,
            "wait": self._wait,
            "release": self._release,
            "cancel": self._cancel,
            "tail": self._tail,
            "autostop": self._autostop,
            "self_stop": self._self_stop,
            "upgrade": self._upgrade,
            "shutdown": self._shutdown,
            "fetch": self._fetch,
            "mount": self._mount,
            "mount_keys": self._mount_keys,
        }

    # -- lifecycle -----------------------------------------------------------------------

    async def run(self) -> Exit:
        loop = asyncio.get_running_loop()
        self._outcome = loop.create_future()
        loop.add_signal_handler(signal.SIGTERM, self._finish, Exit())
        loop.add_signal_handler(signal.SIGINT, self._finish, Exit())
        loop.add_signal_handler(signal.SIGCHLD, self._refresh)
        loop.add_reader(self._notify_fd, self._on_notify)
        await self._serve_on(self._listener)
        self.jobs.schedule()  # jobs left pending by a previous agent start now
        ticker = asyncio.ensure_future(self._tick_forever())
        try:
            either: list[asyncio.Future[Any]] = [self._outcome, ticker]
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            if self._outcome.done():
                return self._outcome.result()
            log.error("agent_crashed: the periodic loop failed", exc_info=ticker.exception())
            return Exit(code=1)
        finally:
            self._stopping = True
            for server in self._servers:
                server.close()
            ticker.cancel()
            loop.remove_reader(self._notify_fd)
            self.jobs.kill_cancelled_now()
            await self._close_connections()

    async def _serve_on(self, listener: socket.socket) -> None:
        server = await asyncio.start_unix_server(
            self._serve_connection, sock=listener, limit=MAX_LINE + 1
        )
        self._servers.append(server)

    def close_listener(self) -> None:
        self._listener.close()  # (the servers closed theirs; this one may not be served yet)

    # -- the node's files ------------------------------------------------------------------

    def _guard_files(self) -> None:
        """A job deleted the node's own files (`rm -rf ~`): put them back, so the daemon still
        reaches this agent, and end the started jobs, whose logs and records were cut."""
        if self._files is None or self._stopping:
            return
        lost = self._files.lost()
        if not lost:
            return
        reason = (
            f"stix's node files in {self._files.node_dir} were deleted while the job ran "
            "(by a job?), so it was stopped; keep tasks from cleaning that directory"
        )
        log.error("node_files_deleted paths=%s", ", ".join(map(str, lost)))
        try:
            listener = self._files.restore(self.jobs.store)
        except (OSError, sqlite3.Error):  # e.g. the home is not writable now: try next tick
            log.exception("node_files_restore_failed")
            return
        if listener is not None:
            for server in self._servers:  # closes the old listener; connections stay open
                server.close()
            self._listener = listener
            self.socket_inode = self._files.socket_path.stat().st_ino
            self._rebinds.append(asyncio.ensure_future(self._serve_on(listener)))
        if not self._files.cuts_jobs(lost):
            return  # only the socket or the lock (a /tmp cleaner?): the jobs are intact
        ended = self.jobs.fail_started(reason)
        self.jobs.explain_lost_logs()
        if ended:
            log.error("jobs_ended_for_deleted_files job_ids=%s", ended)
            self.jobs.changed.fire()

    async def _close_connections(self) -> None:
        """End every connection's task by itself (hanging up, waking its long-poll).

        A connection task must not end cancelled: asyncio (3.11) then logs a spurious error.
        """
        for writer in self._connections.values():
            writer.close()
        self.jobs.changed.fire()
        if self._connections:
            await asyncio.wait(list(self._connections), timeout=2.0)

    def _finish(self, outcome: Exit) -> None:
        self._stopping = True
        if self._outcome is not None and not self._outcome.done():
            log.info("agent_finishing outcome=%s", outcome)
            self._outcome.set_result(outcome)

    async def _tick_forever(self) -> None:
        while not self._stopping:
            try:
                self._guard_files()
                self.jobs.refresh()
                self._check_autostop()
            except sqlite3.OperationalError:  # e.g. locked past the busy timeout: transient
                log.exception("tick_failed (retried on the next tick)")
            await asyncio.sleep(TICK_S)

    def _refresh(self) -> None:
        """Take in runners' news at once (on SIGCHLD or a runner's wake-up byte)."""
        if self._stopping:
            return
        try:
            self._guard_files()
            self.jobs.refresh()
        except sqlite3.OperationalError:
            log.exception("refresh_failed (retried on the next tick)")

    def _on_notify(self) -> None:
        try:
            while os.read(self._notify_fd, 4096):
                pass
        except BlockingIOError:
            pass
        self._refresh()

    def _check_autostop(self) -> None:
        if self._stopping:
            return
        store = self.jobs.store
        autostop = load_autostop(store)
        since = idle_since(store, self.jobs.active_count(), self.boot_time)
        now = time.time()
        if not autostop_due(autostop, since, now):
            return
        assert autostop is not None and since is not None
        log.warning("autostop_stopping_node idle_for=%.1f down=%s", now - since, autostop.down)
        self._stopping = True  # from here on no request is served, so no job can slip in
        command = load_self_stop(store)
        store.close()
        unmount_all(self.identity.node_dir)  # before a `down` removes the folders they are in
        stop_node(
            self.identity.node_dir,
            autostop,
            now,
            now - since,
            remove=self.identity.down_removes or self.identity.node_dir,
        )
        if command:  # a cloud VM: the machine itself stops, so it stops costing
            log.warning(
                "autostop_stopping_machine command=%s pid=%d", command, stop_machine(command)
            )
        self._finish(Exit())

    # -- connections ---------------------------------------------------------------------

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = writer
        try:
            while not self._stopping:
                try:
                    line = await reader.readline()
                except ValueError:
                    limit = f"{MAX_LINE} bytes"
                    writer.write(encode(error("line_too_long", f"a request exceeds {limit}")))
                    await writer.drain()
                    return
                if not line:
                    return
                answer = await self._answer(line)
                writer.write(encode(answer.reply))
                await writer.drain()
                if answer.then is not None:
                    self._finish(answer.then)
                    return
        except ConnectionError:
            log.debug("client_went_away")
        finally:
            writer.close()
            del self._connections[task]

    async def _answer(self, line: bytes) -> Answer:
        op = None
        try:
            request = decode_request(line)
            op = request["op"]
            handler = self._ops.get(op)
            if handler is None:
                known = ", ".join(sorted(self._ops))
                raise RequestError("unknown_op", f"unknown op {op!r}; known ops: {known}")
            if self._stopping:
                raise RequestError("stopping", "the agent is shutting down; retry after restart")
            self._guard_files()
            return await handler(request)
        except RequestError as exc:
            return Answer(error(exc.code, exc.message))
        except Exception:  # the boundary: record the bug with its traceback, keep serving
            log.exception("request_failed op=%s", op)
            message = "the agent failed on this request; its log on the node has the traceback"
            return Answer(error("internal", message))

    # -- ops -----------------------------------------------------------------------------

    async def _hello(self, request: Request) -> Answer:
        store = self.jobs.store
        active = self.jobs.active_count()
        autostop = load_autostop(store)
        return Answer(
            ok(
                protocol=PROTOCOL,
                build=self.build,
                cluster=self.identity.cluster,
                rank=self.identity.rank,
                pid=os.getpid(),
                started_at=self.started_at,
                now=time.time(),
                idle_since=idle_since(store, active, self.boot_time),
                active_jobs=active,
                autostop=autostop.to_wire() if autostop else None,
                num_gpus=self.identity.num_gpus,
            )
        )

    async def _submit(self, request: Request) -> Answer:
        spec = parse_submit(
            request,
            default_rank=self.identity.rank,
            default_ip=self.identity.node_ip,
            cluster=self.identity.cluster,
        )
        return Answer(ok(job=self._wire(self.jobs.submit(spec))))

    def _wire(self, row: JobRow) -> dict[str, Any]:
        """A job record, plus whether it waits at its gang's gate after setup."""
        return {**row.to_wire(), "setup_done": gate.is_ready(self.identity.node_dir, row.job_id)}

    async def _jobs(self, request: Request) -> Answer:
        rows = self.jobs.store.jobs(get_optional_ints(request, "job_ids"))
        return Answer(ok(jobs=[self._wire(row) for row in rows]))

    async def _release(self, request: Request) -> Answer:
        """Let a gang job's runner go on from setup to run (idempotent)."""
        job_id = get_int(request, "job_id")
        if self.jobs.job(job_id) is None:
            raise RequestError("no_such_job", f"job {job_id} does not exist on this node")
        gate.release(self.identity.node_dir, job_id)
        return Answer(ok())

    async def _wait(self, request: Request) -> Answer:
        job_id = get_int(request, "job_id")
        state = get_state(request, "state")
        known_ready = get_bool(request, "setup_done", False)
        timeout = _bounded(request, "timeout", 0.0, 0.0, MAX_WAIT_S)
        deadline = time.monotonic() + timeout
        while True:
            row = self.jobs.job(job_id)
            if row is None:
                raise RequestError("no_such_job", f"job {job_id} does not exist on this node")
            remaining = deadline - time.monotonic()
            wire = self._wire(row)
            if row.state != state or wire["setup_done"] != known_ready or remaining <= 0:
                return Answer(ok(job=wire))
            await self._until_change(remaining)

    async def _fetch(self, request: Request) -> Answer:
        """COPY mode: a bucket's objects from signed URLs into a folder (fetch.py)."""
        return Answer(ok(**await fetch(request)))

    async def _mount(self, request: Request) -> Answer:
        """MOUNT / MOUNT_CACHED: one bucket through rclone (mount.py), off the event loop."""
        node_dir = self.identity.node_dir
        loop = asyncio.get_running_loop()
        return Answer(ok(**await loop.run_in_executor(None, mount, node_dir, request)))

    async def _mount_keys(self, request: Request) -> Answer:
        """Fresh keys for a running mount (mount.py), before its old ones end."""
        node_dir = self.identity.node_dir
        loop = asyncio.get_running_loop()
        return Answer(ok(**await loop.run_in_executor(None, mount_keys, node_dir, request)))

    async def _cancel(self, request: Request) -> Answer:
        job_ids = get_optional_ints(request, "job_ids")
        if get_bool(request, "all", False):
            job_ids = None
        elif job_ids is None:
            raise RequestError("bad_request", 'cancel needs "job_ids" or "all": true')
        return Answer(ok(cancelled=self.jobs.cancel(job_ids)))

    async def _tail(self, request: Request) -> Answer:
        job_id = get_int(request, "job_id")
        offset = get_int(request, "offset", 0)
        if offset < 0:
            raise RequestError("bad_request", 'the field "offset" must be zero or more')
        wait = _bounded(request, "wait", 0.0, 0.0, MAX_WAIT_S)
        max_bytes = int(_bounded(request, "max_bytes", 1024 * 1024, 1, MAX_TAIL_BYTES))
        from_run = request.get("from_run") is True  # only the run's output, none of setup's
        logs_dir = self.jobs.ctx.logs_dir
        path = log_path(logs_dir, job_id)
        deadline = time.monotonic() + wait
        while True:
            row = self.jobs.job(job_id)
            if row is None:
                raise RequestError("no_such_job", f"job {job_id} does not exist on this node")
            finished = row.state.terminal  # read before the log: a finished log is complete
            run_starts = read_run_mark(logs_dir, job_id) if from_run else 0
            if run_starts is None:  # setup still runs (or the job never got past it)
                chunk = LogChunk(b"", offset, offset)
            else:
                chunk = read_log(path, max(offset, run_starts), max_bytes, finished=finished)
            remaining = deadline - time.monotonic()
            if chunk.data or finished or remaining <= 0:
                break
            await self._until_change(remaining)
        return Answer(
            ok(
                data=chunk.data.decode("utf-8", errors="replace"),
                offset=chunk.next_offset,
                state=row.state.value,
                eof=finished and chunk.next_offset >= chunk.file_size,
            )
        )

    async def _until_change(self, remaining: float) -> None:
        """Pause a long-poll until a job changes or the next poll, whichever is sooner."""
        await self.jobs.changed.wait(min(POLL_S, remaining))
        if self._stopping:
            raise RequestError("stopping", "the agent is shutting down; retry after restart")

    async def _autostop(self, request: Request) -> Answer:
        idle_minutes = get_optional_float(request, "idle_minutes")
        autostop = None
        if idle_minutes is not None:
            if idle_minutes < 0:
                raise RequestError("bad_request", 'the field "idle_minutes" must be zero or more')
            grace = _bounded(request, "grace_minutes", 0.0, 0.0, float("inf"))
            autostop = Autostop(idle_minutes, get_bool(request, "down", False), grace)
        save_autostop(self.jobs.store, autostop, time.time())
        log.info("autostop_set setting=%s", autostop)
        return Answer(ok(autostop=autostop.to_wire() if autostop else None))

    async def _self_stop(self, request: Request) -> Answer:
        """Set (or clear, with no ``command``) how autostop stops this machine itself."""
        command = get_optional_str(request, "command")
        save_self_stop(self.jobs.store, command)
        log.info("self_stop_set command=%s", command)
        return Answer(ok(command=command))

    async def _upgrade(self, request: Request) -> Answer:
        pyz = _runnable_zipapp(get_str(request, "pyz"))
        log.info("agent_upgrading pyz=%s", pyz)
        return Answer(ok(), then=Exit(exec_pyz=str(pyz), unlink_socket=False))

    async def _shutdown(self, request: Request) -> Answer:
        if get_bool(request, "kill_jobs", False):
            await self.jobs.cancel_all_and_wait()
            # the jobs are gone: their buckets' writes are flushed and the mounts go (a down
            # then removes the node's files, never the bucket's through a mount left there)
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, unmount_all, self.identity.node_dir)
        return Answer(ok(), then=Exit())
