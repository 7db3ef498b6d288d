"""The per-cloud index: a cloud's offers as msgpack, so a command reads them without parsing CSV.

One file per cloud, ``<index_dir>/<cloud>.msgpack``, built the first time the cloud is loaded and
rebuilt whenever the CSV it came from changes. It holds a small header (which CSV, its size and
modification time in nanoseconds, the index format version), the per-accelerator summaries, and
the rows as typed tuples. The rows are kept as raw msgpack when the file is opened and decoded
only when someone asks for offers, so listing accelerators touches the header and summaries only.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

from stixd.planner.catalog.model import AcceleratorSummary, Offer, summarize

__all__ = ["INDEX_VERSION", "CsvKey", "IndexFile", "build_index", "load_index", "write_index"]

# Bump when the row type, a reader or a host rule changes: old indexes are then rebuilt.
INDEX_VERSION = 1


class CsvKey(msgspec.Struct, frozen=True, array_like=True):
    """Identifies the CSV an index was built from; any change to it invalidates the index."""

    path: str
    size: int
    mtime_ns: int
    version: int = INDEX_VERSION

    @classmethod
    def of(cls, csv_path: Path) -> CsvKey:
        st = csv_path.stat()
        return cls(str(csv_path), st.st_size, st.st_mtime_ns)


class IndexFile(msgspec.Struct, frozen=True):
    key: CsvKey
    built_at: float
    summaries: list[AcceleratorSummary]
    rows: msgspec.Raw  # list[Offer], decoded on demand

    def offers(self) -> list[Offer]:
        return _ROWS.decode(self.rows)


_ROWS = msgspec.msgpack.Decoder(list[Offer])
_INDEX = msgspec.msgpack.Decoder(IndexFile)
_ENCODER = msgspec.msgpack.Encoder()


def index_path(index_dir: Path, cloud: str) -> Path:
    return index_dir / f"{cloud}.msgpack"


def load_index(path: Path, key: CsvKey) -> IndexFile | None:
    """The index at ``path`` if it was built from exactly the CSV ``key`` names, else None."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    try:
        index = _INDEX.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None  # unreadable or an older format: rebuild
    return index if index.key == key else None


def build_index(
    key: CsvKey, read: Callable[[], list[Offer]], clock: Callable[[], float] = time.time
) -> tuple[IndexFile, list[Offer]]:
    offers = read()
    index = IndexFile(
        key=key,
        built_at=clock(),
        summaries=summarize(offers),
        rows=msgspec.Raw(_ENCODER.encode(offers)),
    )
    return index, offers


def write_index(path: Path, index: IndexFile) -> None:
    """Write atomically: a reader sees the old index or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(_ENCODER.encode(index))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
