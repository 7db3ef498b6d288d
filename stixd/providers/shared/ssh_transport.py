"""One multiplexed SSH connection per host: commands, atomic uploads, and agent streams.

``SshConnection`` owns at most one asyncssh connection to its host at a time. Every use goes
through it: command channels, SFTP sessions and direct-streamlocal channels to the on-node
agent's Unix socket all share that connection. Keepalives close a connection whose host went
silent within ``keepalive_interval * keepalive_count_max`` seconds; the next use reconnects,
spacing failed attempts by an exponential backoff.

Every failure is an ``SshError`` (an ``OSError``, so ``AgentClient`` reports it as the agent
being unreachable) whose message is one sentence naming the host, and whose ``retryable``
says whether trying again later can help.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import re
import secrets
import shlex
import socket
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, NamedTuple

import anyio
from anyio.abc import ByteStream

from stixd.agent_client import AgentClient
from stixd.providers.shared.lazy import lazy_module

SESSION_CHANNELS = 8
"""Concurrent command/SFTP channels per connection: OpenSSH's MaxSessions defaults to 10.
Agent streams are not sessions and are not limited by it."""

if TYPE_CHECKING:
    import asyncssh
else:  # loaded by the first connection: a daemon with no SSH host does not pay for it
    asyncssh = lazy_module("asyncssh")


class SshError(OSError):
    """A host could not be reached or used over SSH."""

    retryable = True

    def __init__(self, host: str, problem: str) -> None:
        super().__init__(f"host {host}: {problem}")
        self.host = host
        self.problem = problem

    def __str__(self) -> str:
        return str(self.args[0])


class SshAuthError(SshError):
    """The host refused our credentials: fix the key, user or password; retrying won't help."""

    retryable = False


class SshHostKeyError(SshError):
    retryable = False


class SshUnreachable(SshError):
    """No TCP connection or SSH handshake: the host may be down, booting or partitioned."""


class SshConnectionLost(SshError):
    """An established connection died (keepalive timeout, reset, host shut down)."""


class SshTimeout(SshError):
    """A command or transfer did not finish in time; the connection itself may be fine."""


class AgentSocketMissing(SshError):
    """Nothing listens on the agent's socket path on the host: the agent is not running."""


@dataclasses.dataclass(frozen=True)
class SshTarget:
    host: str
    port: int = 22
    user: str = "root"
    identity_file: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)
    known_hosts: str | None = None
    """An OpenSSH known_hosts file to verify the host key against; None accepts any key."""
    jump: SshTarget | None = None
    """A bastion the connection is tunnelled through (OpenSSH's ProxyJump)."""
    proxy_command: str | None = None
    """An OpenSSH ProxyCommand whose stdin/stdout carry the connection (``%h %p %r`` expanded)."""

    def expanded_proxy_command(self) -> str | None:
        if self.proxy_command is None:
            return None
        tokens = {"h": self.host, "p": str(self.port), "r": self.user, "%": "%"}
        return re.sub(r"%([hpr%])", lambda m: tokens[m.group(1)], self.proxy_command)

    def credential(self) -> str:
        if self.identity_file:
            return f"key {self.identity_file}"
        if self.password is not None:
            return "password"
        return "default keys"


class RunResult(NamedTuple):
    exit_status: int
    stdout: str
    stderr: str


@dataclasses.dataclass(frozen=True)
class SshSettings:
    connect_timeout: float = 10.0
    keepalive_interval: float = 5.0
    keepalive_count_max: int = 3
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    backoff_wait_max: float = 2.0
    """A call waits out a reconnect backoff this short; during a longer one it fails at once,
    saying when the next try is (a status refresh or a `down` in an outage must not hang)."""

    @property
    def dead_after(self) -> float:
        """Upper bound on noticing a silent host on an open connection."""
        return self.keepalive_interval * self.keepalive_count_max + 1.0


@functools.cache
def _watch() -> Callable[[Callable[[Exception | None], None]], asyncssh.SSHClient]:
    """The client class of every connection (made at the first: it subclasses asyncssh's)."""

    class Watch(asyncssh.SSHClient):
        """Tells its manager when the connection ends, whatever ended it."""

        def __init__(self, on_lost: Callable[[Exception | None], None]) -> None:
            self._on_lost = on_lost

        def connection_lost(self, exc: Exception | None) -> None:
            self._on_lost(exc)

    return Watch


class SshConnection:
    def __init__(
        self,
        target: SshTarget,
        settings: SshSettings | None = None,
        *,
        via: SshConnection | None = None,
    ) -> None:
        """``via`` is the connection to ``target.jump`` to tunnel through; several hosts behind
        one bastion share it. Without it, a target with a jump host gets a private one."""
        self.target = target
        self.settings = settings or SshSettings()
        self._owns_via = via is None and target.jump is not None
        self.via = (
            via
            if via is not None or target.jump is None
            else SshConnection(target.jump, self.settings)
        )
        self._conn: asyncssh.SSHClientConnection | None = None
        self._lost_reason: str | None = None
        self._connect_lock = anyio.Lock()
        self._sessions = anyio.Semaphore(SESSION_CHANNELS)
        self._failures = 0
        self._retry_at = 0.0
        self._last_error: SshError | None = None
        self._closed = False
        self.connects = 0
        """Connections made so far (1 while the first one lives)."""
        self.failed_connects = 0
        """Connection attempts that failed (calls refused during a backoff are not attempts)."""

    @property
    def host(self) -> str:
        return (
            self.target.host if self.target.port == 22 else f"{self.target.host}:{self.target.port}"
        )

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    # -- connection ----------------------------------------------------------------------

    async def connection(self) -> asyncssh.SSHClientConnection:
        """The live connection, made (or remade) now if needed."""
        if self._closed:
            raise SshError(self.host, "the connection manager is closed")
        conn = self._conn
        if conn is not None and not conn.is_closed():
            return conn
        async with self._connect_lock:
            conn = self._conn
            if conn is not None and not conn.is_closed():
                return conn
            self._conn = None
            wait = self._retry_at - time.monotonic()
            err = self._last_error
            if wait > 0 and err is not None:  # no new attempt before the backoff is over
                if wait > self.settings.backoff_wait_max:
                    raise type(err)(err.host, f"{err.problem} (next try in {wait:.1f} s)")
                await anyio.sleep(wait)
            try:
                conn = await self._connect()
            except SshError as exc:
                self._failures += 1
                self.failed_connects += 1
                delay = self.settings.backoff_initial * 2 ** (self._failures - 1)
                self._retry_at = time.monotonic() + min(delay, self.settings.backoff_max)
                self._last_error = exc
                raise
            self._failures = 0
            self._last_error = None
            self._conn = conn
            self._lost_reason = None
            self.connects += 1
            return conn

    async def _connect(self) -> asyncssh.SSHClientConnection:
        t, s = self.target, self.settings
        options: dict[str, Any] = {
            "port": t.port,
            "username": t.user,
            "known_hosts": t.known_hosts,
            "config": None,  # the target says everything; ~/.ssh/config must not change it
            "connect_timeout": s.connect_timeout,
            "keepalive_interval": s.keepalive_interval,
            "keepalive_count_max": s.keepalive_count_max,
        }
        if t.identity_file:
            options["client_keys"] = [t.identity_file]
            options["agent_path"] = None
        if t.password is not None:
            options["password"] = t.password
            if not t.identity_file:
                options["client_keys"] = None
        if self.via is not None:
            try:
                options["tunnel"] = await self.via.connection()
            except SshError as exc:
                raise SshUnreachable(
                    self.host, f"the jump host {self.via.host} is unusable: {exc.problem}"
                ) from None
        elif t.proxy_command is not None:
            options["proxy_command"] = t.expanded_proxy_command()
        try:
            conn, _ = await asyncssh.create_connection(
                lambda: _watch()(self._on_lost), t.host, **options
            )
        except asyncssh.PermissionDenied:
            raise SshAuthError(
                self.host, f"authentication failed for user {t.user} with {t.credential()}"
            ) from None
        except asyncssh.HostKeyNotVerifiable as exc:
            raise SshHostKeyError(
                self.host, f"its host key is not trusted by {t.known_hosts} ({exc.reason})"
            ) from None
        except (asyncssh.KeyImportError, FileNotFoundError, PermissionError, ValueError) as exc:
            # ValueError: e.g. "Public key mismatch", a private key beside someone else's .pub
            raise SshAuthError(self.host, f"cannot read the {t.credential()}: {exc}") from None
        except TimeoutError:
            raise SshUnreachable(self.host, f"no answer within {s.connect_timeout:g} s") from None
        except ConnectionRefusedError:
            raise SshUnreachable(
                self.host, f"connection refused on port {t.port} (is sshd running?)"
            ) from None
        except socket.gaierror as exc:
            raise SshUnreachable(self.host, f"the name does not resolve ({exc.strerror})") from None
        except asyncssh.DisconnectError as exc:
            raise SshUnreachable(self.host, f"the server hung up: {exc.reason}") from None
        except OSError as exc:
            if exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
                raise SshUnreachable(self.host, "no route to it") from None
            raise SshUnreachable(self.host, f"cannot connect: {exc.strerror or exc}") from None
        return conn

    def _on_lost(self, exc: Exception | None) -> None:
        if isinstance(exc, asyncssh.Error):
            self._lost_reason = exc.reason
        elif exc is not None:
            self._lost_reason = str(exc) or type(exc).__name__

    def _lost(self, exc: BaseException) -> SshError:
        """The error for a use that failed: the connection went away, or refused a channel."""
        reason = exc.reason if isinstance(exc, asyncssh.Error) else str(exc) or type(exc).__name__
        conn = self._conn
        if conn is not None and not conn.is_closed():
            return SshError(self.host, f"the SSH server refused a channel ({reason})")
        return SshConnectionLost(
            self.host, f"the SSH connection was lost ({self._lost_reason or reason})"
        )

    # -- uses ----------------------------------------------------------------------------

    # ASYNC109: the timeout is ours to apply, so the error can say which phase ran out of it.
    async def run(self, command: str, timeout: float = 60.0) -> RunResult:  # noqa: ASYNC109
        """Run a shell command; a nonzero exit is a result, not an error."""
        conn: asyncssh.SSHClientConnection | None = None
        try:
            with anyio.fail_after(timeout):
                conn = await self.connection()
                async with self._sessions:
                    process = await conn.create_process(command, stdin=asyncssh.DEVNULL)
                    async with process:
                        done = await process.wait(check=False)
        except TimeoutError:
            if conn is None:
                raise SshUnreachable(self.host, f"no answer within {timeout:g} s") from None
            raise SshTimeout(
                self.host, f"{_short(command)!r} did not finish within {timeout:g} s"
            ) from None
        except (asyncssh.Error, BrokenPipeError, ConnectionResetError) as exc:
            raise self._lost(exc) from None
        status = done.exit_status if done.exit_status is not None else -1
        return RunResult(status, _text(done.stdout), _text(done.stderr))

    async def sftp_put(
        self,
        local: Path,
        remote: str,
        *,
        mode: int | None = None,
        timeout: float = 300.0,  # noqa: ASYNC109 (as for run)
    ) -> None:
        """Upload ``local`` to the absolute ``remote`` path atomically (temp name, rename)."""
        target = PurePosixPath(remote)
        partial = f"{remote}.part-{secrets.token_hex(4)}"
        try:
            with anyio.fail_after(timeout):
                conn = await self.connection()
                async with self._sessions, conn.start_sftp_client() as sftp:
                    await sftp.makedirs(str(target.parent), exist_ok=True)
                    try:
                        await sftp.put(str(local), partial)
                        if mode is not None:
                            await sftp.chmod(partial, mode)
                        await sftp.posix_rename(partial, remote)
                    except BaseException:
                        with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                            with anyio.move_on_after(5):
                                await sftp.remove(partial)
                        raise
        except TimeoutError:
            raise SshTimeout(self.host, f"uploading {local} took over {timeout:g} s") from None
        except asyncssh.SFTPError as exc:
            raise SshError(self.host, f"cannot upload to {remote}: {exc.reason}") from None
        except (asyncssh.Error, BrokenPipeError, ConnectionResetError) as exc:
            raise self._lost(exc) from None

    async def put_file(self, local: Path, remote: str, *, mode: int = 0o600) -> None:
        """``sftp_put`` by the name ``bootstrap.AgentHost`` gives it (a pod has no SFTP)."""
        await self.sftp_put(local, remote, mode=mode)

    async def open_agent_stream(self, socket_path: str) -> ByteStream:
        """A byte stream to the Unix socket ``socket_path`` on the host (direct-streamlocal)."""
        conn = await self.connection()
        try:
            reader, writer = await conn.open_unix_connection(socket_path)
        except asyncssh.ChannelOpenError as exc:
            if conn.is_closed():
                raise self._lost(exc) from None
            raise AgentSocketMissing(
                self.host, f"nothing listens on {socket_path} ({exc.reason})"
            ) from None
        except (asyncssh.Error, BrokenPipeError, ConnectionResetError) as exc:
            raise self._lost(exc) from None
        return SshChannelStream(reader, writer, self.host)

    def agent_client(self, socket_path: str, name: str | None = None) -> AgentClient:
        async def open_stream() -> ByteStream:
            return await self.open_agent_stream(socket_path)

        return AgentClient(open_stream, name or f"{self.host}:{socket_path}")

    async def close(self) -> None:
        self._closed = True
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                await conn.wait_closed()
        if self.via is not None and self._owns_via:
            await self.via.close()


class SshChannelStream(ByteStream):
    """An SSH channel as an anyio byte stream; a dead channel is ``BrokenResourceError``."""

    def __init__(
        self,
        reader: asyncssh.SSHReader[bytes],
        writer: asyncssh.SSHWriter[bytes],
        host: str,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._host = host

    def _broken(self, exc: BaseException) -> anyio.BrokenResourceError:
        reason = exc.reason if isinstance(exc, asyncssh.Error) else str(exc)
        return anyio.BrokenResourceError(f"host {self._host}: the channel broke ({reason})")

    async def receive(self, max_bytes: int = 65536) -> bytes:
        try:
            data = await self._reader.read(max_bytes)
        except (asyncssh.Error, OSError) as exc:
            raise self._broken(exc) from None
        if not data:
            raise anyio.EndOfStream
        return data

    async def send(self, item: bytes) -> None:
        try:
            self._writer.write(item)
            await self._writer.drain()
        except (asyncssh.Error, OSError) as exc:
            raise self._broken(exc) from None

    async def send_eof(self) -> None:
        with contextlib.suppress(asyncssh.Error, OSError):
            self._writer.write_eof()

    async def aclose(self) -> None:
        self._writer.close()
        with (
            anyio.CancelScope(shield=True),
            anyio.move_on_after(2),
            contextlib.suppress(asyncssh.Error, OSError),
        ):
            await self._writer.wait_closed()


def _text(data: str | bytes | None) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data


def _short(command: str, limit: int = 60) -> str:
    one_line = " ".join(command.split())
    return one_line if len(one_line) <= limit else one_line[: limit - 3] + "..."


def quote(*words: str) -> str:
    """A shell command line from words, each quoted for a POSIX shell."""
    return " ".join(shlex.quote(w) for w in words)
