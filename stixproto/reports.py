"""The rows of the daemon's `Table` replies, as records: what the SDK hands its callers.

A `Table` reply carries the text the CLI prints and its rows as plain data (for `--json`); the
SDK decodes the rows into these records (`Report[Row]`), so a program reads
`report.rows[0].workers[0].status`, not a dict. The daemon builds the show-gpus, catalog fetch
and catalog status rows from these records; the managed-job, pool and SSH rows it still writes
as dicts of these fields (tests/test_sdk_parity.py decodes each from a real daemon). A field a
newer daemon adds is ignored by an older client.
"""

from __future__ import annotations

from typing import Any, Generic, Literal, TypeVar

import msgspec

from stixproto.errors import ProtocolError

RowT = TypeVar("RowT")


class Report(msgspec.Struct, Generic[RowT], frozen=True):
    """A rendered report (`text`, as the CLI prints it), its rows, and whether all went well."""

    text: str
    rows: list[RowT]
    ok: bool = True


def report_of(text: str, rows: list[dict[str, Any]], ok: bool, row: Any) -> Report[Any]:
    """The typed `Report` of a `Table` reply's fields, each row decoded as `row` (a record or
    a union of tagged records)."""
    try:
        return Report(text=text, rows=[msgspec.convert(x, row) for x in rows], ok=ok)
    except msgspec.ValidationError as exc:
        raise ProtocolError(
            f"stixd sent a report row this client cannot read ({exc}); "
            "the client and the daemon differ: restart it with `stixctl daemon stop`"
        ) from None


# -- managed jobs and pools ------------------------------------------------------------------


class ManagedJobCancel(msgspec.Struct, frozen=True):
    """What `jobs cancel` did to one managed job."""

    job_id: int
    message: str


class PoolWorker(msgspec.Struct, frozen=True):
    worker: str
    """The worker's cluster (`<pool>-<i>`)."""
    status: str
    """Its cluster's state, `-` before it exists."""
    job_id: int | None = None
    """The managed job running on it; None when idle."""


class PoolRecord(msgspec.Struct, frozen=True):
    pool: str
    status: str
    workers: list[PoolWorker]
    ready: int
    queued_jobs: list[int] = []
    failed: dict[str, str] = {}
    """Worker → why its last launch failed."""
    failure_reason: str | None = None
    """Why a pool whose stored row is damaged is shown FAILED (quarantined)."""


class PoolRef(msgspec.Struct, frozen=True):
    """A pool a request acted on (`jobs pool down`); what happened is in the report's text."""

    pool: str


class ServiceDown(msgspec.Struct, frozen=True):
    """A service `serve down` acted on, and where it ended (`DOWN`, or `FAILED_CLEANUP`)."""

    service: str
    status: str
    replica_id: int | None = None
    """`--replica-id`: the one replica taken down."""
    failure_reason: str | None = None


# -- catalog ---------------------------------------------------------------------------------

Section = Literal["COMMON_GPU", "GOOGLE_TPU", "OTHER_GPU"]


class GpuCountRow(msgspec.Struct, frozen=True, tag="count"):
    """An accelerator and the per-instance quantities offered, in one of the listing tables."""

    section: Section
    accelerator: str
    quantities: list[float]


class GpuOfferRow(msgspec.Struct, frozen=True, tag="offer"):
    """One (accelerator, count, cloud, instance type) at its cheapest region.

    ``region`` is None in ``--all`` listings, where SkyPilot leaves the REGION column out.
    """

    accelerator: str
    count: float
    cloud: str
    instance_type: str
    gpu_memory_gib: float | None
    vcpus: float | None
    memory_gib: float | None
    price: float | None
    spot_price: float | None
    region: str | None


class GpuNote(msgspec.Struct, frozen=True, tag="note"):
    """A line of text between the tables: a hint, or why nothing was found."""

    text: str


class GpuMachineRow(msgspec.Struct, frozen=True, tag="machine"):
    """A machine of a capacity infra (``local``: this one), as ``--infra local`` lists it."""

    infra: str
    vcpus: float | None
    memory_gib: float | None
    accelerator: str | None
    count: float
    price: float | None


GpuRow = GpuCountRow | GpuOfferRow | GpuNote | GpuMachineRow


class FileResult(msgspec.Struct, frozen=True):
    """What happened to one catalog file. ``age_seconds`` is the cached copy's age afterwards
    (about 0 after a successful fetch, the old copy's age after a failure, None if none)."""

    file: str
    ok: bool
    message: str
    size: int | None = None
    age_seconds: float | None = None


class CatalogAge(msgspec.Struct, frozen=True):
    cloud: str
    age_seconds: float | None
    """Seconds since the catalog file in use was written; None when it is missing."""


# -- SSH node pools --------------------------------------------------------------------------


class SshHost(msgspec.Struct, frozen=True):
    """One host of an SSH node pool, as `ssh up|status|down` probed it."""

    pool: str
    host: str
    ok: bool
    reachable: bool
    python: str | None = None
    free_bytes: int | None = None
    agents: list[str] = []
    cluster: str | None = None
    """The cluster holding this host, if any."""
    error: str | None = None
