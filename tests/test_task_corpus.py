"""Every file of the SkyPilot compatibility corpus loads, validates and round-trips.

The corpus lives in `$STIX_SHARED/compat/skypilot-yamls` (default: `../shared` beside the
repository). Round trip: `to_yaml(from_yaml(text))` loads to what the file loads to after the
normalisations documented in `stixproto.task.dump` — computed here independently: envs substituted
the way SkyPilot does it (JSON text and its regular expression), env/secret values as strings,
`num_nodes: 1` left out.
"""

from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from stixctl.validate import judge
from stixproto.task import Dag, Task, from_yaml, to_dict, to_yaml
from stixproto.task.resources import (
    accelerator_choice,
    autostop_spec,
    candidates,
    cpus_amount,
    disk_size_gb,
    memory_amount,
    placement,
    port_ranges,
    recovery,
)
from stixproto.task.service import effective_probe, effective_scaling
from stixproto.task.storage import git_workdir
from tests.shared_data import needs, require

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("STIX_SHARED", REPO.parent / "shared"))
CORPUS = SHARED / "compat" / "skypilot-yamls"
FILES = sorted(CORPUS.glob("*.y*ml")) if CORPUS.is_dir() else []

REJECTED: dict[str, str] = {}
"""Corpus files stix refuses, with the reason. None: every file is one SkyPilot accepts."""

SUBSTITUTED = ("file_mounts", "volumes", "workdir", "service")
HEADER_KEYS = {"name", "execution", "primary_tasks", "placement"}


def _skypilot_fill(section: Any, values: dict[str, str]) -> Any:
    """SkyPilot's own substitution (`sky/task.py: _fill_in_env_vars`), as the oracle."""
    text = json.dumps(section)
    pattern = r"\$\{?\b([a-zA-Z_][a-zA-Z0-9_]*)\b\}?"
    return json.loads(re.sub(pattern, lambda m: values.get(m.group(1), m.group(0)), text))


def _normalised(doc: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    values: dict[str, str] = {}
    for key in ("envs", "secrets"):
        if isinstance(doc.get(key), dict):
            doc[key] = {k: None if v is None else str(v) for k, v in doc[key].items()}
            values.update({k: v for k, v in doc[key].items() if v is not None})
    for key in SUBSTITUTED:
        if key in doc:
            doc[key] = _skypilot_fill(doc[key], values)
    if doc.get("num_nodes") == 1:
        del doc["num_nodes"]
    return doc


def _documents(text: str) -> list[Any]:
    return [d for d in yaml.safe_load_all(text) if d is not None]


def _exercise_views(task: Task) -> None:
    """The parsed views the daemon uses work on every real file."""
    res = task.resources_or_default()
    for candidate in candidates(res):
        placement(candidate)
        accelerator_choice(candidate)
        cpus_amount(candidate)
        memory_amount(candidate)
        disk_size_gb(candidate)
        port_ranges(candidate)
        autostop_spec(candidate)
        recovery(candidate)
    if task.service is not None:
        effective_probe(task.service)
        effective_scaling(task.service)
    if isinstance(task.workdir, dict):
        git_workdir(task.workdir)
    task.storage_mounts()


def _param(path: Path) -> Any:
    if path.name in REJECTED:
        return pytest.param(path, marks=pytest.mark.xfail(reason=REJECTED[path.name], strict=True))
    return path


PARAMS = [_param(p) for p in FILES] or [pytest.param(None, marks=needs(CORPUS, "compat corpus"))]


@pytest.mark.parametrize("path", PARAMS, ids=lambda p: p.name if p else "corpus-missing")
def test_corpus_file_loads_validates_and_round_trips(path: Path) -> None:
    text = path.read_text()
    docs = _documents(text)
    parsed = from_yaml(text, path.name)

    tasks = parsed.tasks if isinstance(parsed, Dag) else [parsed]
    if len(docs) == 1:
        assert isinstance(parsed, Task)
    else:
        assert isinstance(parsed, Dag)
        has_header = set(docs[0]) <= HEADER_KEYS
        assert len(tasks) == len(docs) - has_header
    for task in tasks:
        _exercise_views(task)

    verdict = judge(str(path), {}, {})
    assert verdict.valid and verdict.errors == [] and verdict.tasks == len(tasks)

    back = _documents(to_yaml(parsed))
    expected = [
        d if i == 0 and isinstance(parsed, Dag) and parsed.header() else _normalised(d)
        for i, d in enumerate(docs)
    ]
    assert back == expected
    assert to_dict(from_yaml(to_yaml(parsed))) == to_dict(parsed)


def test_the_corpus_has_the_shapes_its_readme_counts() -> None:
    require(CORPUS, "compat corpus")
    parsed = {p.name: from_yaml(p.read_text(), p.name) for p in FILES}
    dags = [d for d in parsed.values() if isinstance(d, Dag)]
    assert len(FILES) == 71 and len(dags) == 10
    assert sum(1 for d in dags if d.header() is not None) == 8
    assert sum(1 for d in dags if d.is_job_group) == 1
