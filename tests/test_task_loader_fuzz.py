"""Mutated corpus files — flipped bytes, truncation, duplicated lines, injected anchors, aliases,
merge keys, bombs and deep nesting — end in a Task, a pipeline or one-line errors, in bounded
time: never another exception, never a hang.

The corpus is `$STIX_SHARED/compat/skypilot-yamls` (default: `../shared` beside the repository);
without it these tests are skipped (failed when CI is set).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stixctl.validate import judge
from stixproto.errors import StixError
from stixproto.task import Dag, Task, from_yaml
from tests.conftest import REPO
from tests.shared_data import needs

SHARED = Path(os.environ.get("STIX_SHARED") or REPO.parent / "shared")
CORPUS = sorted((SHARED / "compat" / "skypilot-yamls").glob("*.y*ml"))
pytestmark = needs(SHARED / "compat" / "skypilot-yamls", "compat corpus")

SECONDS = 5.0  # per file, on a loaded two-core machine; an unbounded walk takes hours
SIGNIFICANT = [*b":-[]{}&*!|>'\"#%@?,\n\t 0", 0x00, 0x85, 0xC2, 0xE2, 0xEF, 0xFF]

Draw = st.DrawFn


def _int(draw: Draw, low: int, high: int) -> int:
    value = draw(st.integers(min_value=low, max_value=max(low, high)))
    assert isinstance(value, int)
    return value


def flip(draw: Draw, data: bytes) -> bytes:
    if not data:
        return data
    at = _int(draw, 0, len(data) - 1)
    byte = draw(st.one_of(st.sampled_from(SIGNIFICANT), st.integers(0, 255)))
    return data[:at] + bytes([byte]) + data[at + 1 :]


def truncate(draw: Draw, data: bytes) -> bytes:
    return data[: _int(draw, 0, len(data))]


def duplicate(draw: Draw, data: bytes) -> bytes:
    lines = data.split(b"\n")
    start = _int(draw, 0, len(lines) - 1)
    end = _int(draw, start + 1, min(len(lines), start + 5))
    times = _int(draw, 1, 50)
    return b"\n".join(lines[:end] + lines[start:end] * times + lines[end:])


def _valued(lines: list[bytes]) -> list[int]:
    return [i for i, line in enumerate(lines) if b": " in line]


def anchors(draw: Draw, data: bytes) -> bytes:
    """An anchor on one value, aliases (or merge keys) to it from other keys."""
    lines = data.split(b"\n")
    valued = _valued(lines)
    if not valued:
        return data
    target = draw(st.sampled_from(valued))
    key, _, value = lines[target].partition(b": ")
    lines[target] = key + b": &a " + value
    for _ in range(_int(draw, 1, 20)):
        at = _int(draw, 0, len(lines))
        indent = b" " * _int(draw, 0, 6)
        line = draw(st.sampled_from([b"x%d: *a", b"<<: *a", b"- *a", b"x%d: [*a, *a, *a]"]))
        assert isinstance(line, bytes)
        lines.insert(at, indent + (line % at if b"%d" in line else line))
    return b"\n".join(lines)


def bomb(draw: Draw, data: bytes) -> bytes:
    """Billion laughs under a key of the task, in flow or block form, any size."""
    levels, width = _int(draw, 2, 9), _int(draw, 2, 12)
    block = draw(st.booleans())
    lines = [b"l0: &l0 [" + b", ".join([b"lol"] * width) + b"]"]
    for i in range(1, levels):
        refs = [b"*l%d" % (i - 1)] * width
        if block:
            lines += [b"l%d: &l%d" % (i, i), *(b"  - " + r for r in refs)]
        else:
            lines.append(b"l%d: &l%d [" % (i, i) + b", ".join(refs) + b"]")
    under = draw(st.sampled_from([b"", b"config", b"envs", b"resources", b"file_mounts"]))
    assert isinstance(under, bytes)
    if under:
        lines = [under + b":"] + [b"  " + line for line in lines]
    return data.rstrip(b"\n") + b"\n" + b"\n".join(lines) + b"\n"


def nest(draw: Draw, data: bytes) -> bytes:
    lines = data.split(b"\n")
    valued = _valued(lines)
    if not valued:
        return data
    target = draw(st.sampled_from(valued))
    depth = _int(draw, 1, 10_000)
    opening = draw(st.sampled_from([b"[", b"{a: ", b"- "]))
    assert isinstance(opening, bytes)
    key = lines[target].partition(b": ")[0]
    closing = {b"[": b"]", b"{a: ": b"}", b"- ": b""}[opening]
    lines[target] = key + b": " + opening * depth + b"x" + closing * depth
    return b"\n".join(lines)


MUTATIONS = [flip, truncate, duplicate, anchors, bomb, nest]


@st.composite
def mutated_files(draw: Draw) -> tuple[str, bytes]:
    path = draw(st.sampled_from(CORPUS))
    assert isinstance(path, Path)
    data = path.read_bytes()
    for _ in range(_int(draw, 1, 4)):
        mutation = draw(st.sampled_from(MUTATIONS))
        data = mutation(draw, data)
    return path.name, data


@settings(
    max_examples=250,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(mutated_files())
def test_a_mutated_corpus_file_ends_in_a_task_or_one_line_errors_in_bounded_time(
    case: tuple[str, bytes],
) -> None:
    name, data = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        start = time.perf_counter()
        report = judge(str(path), {}, {})  # what `stixctl validate` does with the file
        seconds = time.perf_counter() - start
    for line in report.errors + report.warnings:
        assert "\n" not in line and "Traceback" not in line, line
    assert report.valid == (not report.errors)
    assert seconds < SECONDS, f"{seconds:.1f} s"

    text = data.decode("utf-8", errors="surrogateescape")  # as os.environ holds bad bytes
    start = time.perf_counter()
    try:
        parsed = from_yaml(text, name)
    except StixError as exc:
        assert "\n" not in exc.message, exc.message
    else:
        assert isinstance(parsed, Task | Dag)
    assert time.perf_counter() - start < SECONDS
