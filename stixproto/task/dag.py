"""Pipelines (multi-document task files): tasks run one after another, or as a job group."""

from __future__ import annotations

from typing import Any

import msgspec

from stixproto.task.model import Task

HEADER_KEYS = ("name", "execution", "primary_tasks", "placement")
JOB_GROUP_KEYS = ("execution", "primary_tasks", "placement")


class Dag(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """A pipeline. `name`/`execution`/`primary_tasks`/`placement` come from the header document
    (`name:` alone, or a job-group header); without a header they stay None."""

    tasks: list[Task] = msgspec.field(default_factory=list)
    name: str | None = None
    execution: str | None = None
    primary_tasks: list[str] | None = None
    placement: Any = None

    def header(self) -> dict[str, Any] | None:
        """The header document as written, or None when the file had none."""
        values = {k: getattr(self, k) for k in HEADER_KEYS if getattr(self, k) is not None}
        return values or None

    @property
    def is_job_group(self) -> bool:
        """True when the documents run together (`execution: parallel`), not one by one."""
        return (self.execution or "").lower() == "parallel"

    def __rshift__(self, other: Task | Dag) -> Dag:
        """`dag >> task`: the same pipeline with `task` (or every task of a dag) run last."""
        more = other.tasks if isinstance(other, Dag) else [other]
        return msgspec.structs.replace(self, tasks=[*self.tasks, *more])

    def __rrshift__(self, other: Task) -> Dag:
        """`task >> dag`: `task` first, then the dag's tasks."""
        return msgspec.structs.replace(self, tasks=[other, *self.tasks])
