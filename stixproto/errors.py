"""Error classes shared by both sides, each with a wire code and a CLI exit code.

The daemon sends `ErrorReply(code, message)`; the client turns the code back into the class
with `error_from_code` and exits with its `exit_code`. A message is one sentence that says what
went wrong and, where there is one, what to do next.
"""

from __future__ import annotations

from typing import ClassVar


class StixError(Exception):
    code: ClassVar[str] = "internal"
    exit_code: ClassVar[int] = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(StixError):
    """The request itself is wrong: bad arguments, bad task file, bad config."""

    code = "invalid_request"
    exit_code = 2


class InvalidTask(InvalidRequest):
    code = "invalid_task"


class TaskFieldError(InvalidTask):
    """A bad task with the key it is about: `source: key.path: problem (did you mean 'x'?)`.

    `path` is dotted with list indices as numbers (`resources.any_of.1.cpus`); empty when the
    problem is the whole document. On the wire it travels as a plain `InvalidTask`.
    """

    def __init__(
        self, path: str, problem: str, *, suggestion: str | None = None, source: str = "task"
    ) -> None:
        self.path = path
        self.problem = problem
        self.suggestion = suggestion
        self.source = source
        where = f"{source}: {path}: " if path else f"{source}: "
        hint = f" (did you mean '{suggestion}'?)" if suggestion else ""
        super().__init__(f"{where}{problem}{hint}")

    def at(self, source: str) -> TaskFieldError:
        """The same problem, told against a file (or `command line`, …)."""
        return TaskFieldError(self.path, self.problem, suggestion=self.suggestion, source=source)


class InvalidConfig(InvalidRequest):
    code = "invalid_config"


class ClusterNotFound(StixError):
    code = "cluster_not_found"
    exit_code = 3


class JobNotFound(StixError):
    code = "job_not_found"
    exit_code = 3


class ServiceNotFound(StixError):
    code = "service_not_found"
    exit_code = 3


class StorageNotFound(StixError):
    code = "storage_not_found"
    exit_code = 3


class ClusterNotUp(StixError):
    code = "cluster_not_up"
    exit_code = 4


class ProvisionError(StixError):
    """The infra refused or failed; `retryable` tells whether trying again can help."""

    code = "provision_failed"
    exit_code = 5


class ProtocolError(StixError):
    """Garbage, a truncated or oversized frame, or an unknown message on the socket."""

    code = "protocol"
    exit_code = 6


class VersionMismatch(ProtocolError):
    code = "version_mismatch"


class PermissionDenied(StixError):
    code = "permission_denied"
    exit_code = 7


class Unauthenticated(StixError):
    """A remote request whose token is unknown, revoked, rotated away, expired or malformed."""

    code = "unauthenticated"
    exit_code = 7


class UserNotFound(StixError):
    code = "user_not_found"
    exit_code = 3


class TokenNotFound(StixError):
    code = "token_not_found"
    exit_code = 3


class DaemonUnavailable(StixError):
    code = "daemon_unavailable"
    exit_code = 8


class JobFailed(StixError):
    """Raised by the client when a followed job ends in a failure state."""

    code = "job_failed"
    exit_code = 100


class Cancelled(StixError):
    code = "cancelled"
    exit_code = 130


class InternalError(StixError):
    code = "internal"
    exit_code = 1


_BY_CODE: dict[str, type[StixError]] = {
    cls.code: cls
    for cls in (
        InvalidRequest,
        InvalidTask,
        InvalidConfig,
        ClusterNotFound,
        ServiceNotFound,
        StorageNotFound,
        JobNotFound,
        ClusterNotUp,
        ProvisionError,
        ProtocolError,
        VersionMismatch,
        PermissionDenied,
        Unauthenticated,
        UserNotFound,
        TokenNotFound,
        DaemonUnavailable,
        JobFailed,
        Cancelled,
        InternalError,
    )
}


def error_from_code(code: str, message: str) -> StixError:
    return _BY_CODE.get(code, InternalError)(message)
