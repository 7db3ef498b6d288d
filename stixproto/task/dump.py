"""Tasks and pipelines back to plain data and YAML.

`to_yaml(from_yaml(text))` loads to the same keys and values as `text`, except for these
normalisations (all of them SkyPilot's own reading of the file):

1. `${VAR}`/`$VAR` in file_mounts (keys and values), volumes, workdir and service are
   substituted with the task's envs and secrets that have a value.
2. envs and secrets values written as numbers or booleans become strings (`1` → `'1'`).
3. A key whose value is null where null means "not set" is left out (`image_id: null`,
   `ports: null`, `service: null`, `mode: null` in a storage map, ...), and so are empty
   `envs: {}`, `secrets: {}`, `file_mounts: {}` and `num_nodes: 1` (the default). Maps kept
   open for plugins and tools (`config`, `pool`, `job_recovery` as a map, `volumes`, …) are
   kept exactly, nulls included.
4. Keys come out in the model's order (name, workdir, num_nodes, resources, envs, …), not the
   file's; a pipeline's header document comes first, as it must.

Nothing else changes: accelerator names, modes, strategies and infra strings keep their case
and shape (the parsed views give canonical forms).
"""

from __future__ import annotations

from functools import cache
from typing import Any

import msgspec

from stixproto.task.model import Dag, Task


def to_dict(obj: Task | Dag) -> Any:
    """A Task as one map; a Dag as the list of its documents (header first, if it has one)."""
    if isinstance(obj, Task):
        return msgspec.to_builtins(obj)
    docs: list[Any] = []
    header = obj.header()
    if header is not None:
        docs.append(msgspec.to_builtins(header))
    docs += [msgspec.to_builtins(t) for t in obj.tasks]
    return docs


@cache
def _dumper() -> Any:
    import yaml

    base = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

    class Dumper(base):  # type: ignore[misc, valid-type]
        pass

    def text(dumper: Any, value: str) -> Any:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, text)
    return Dumper


def to_yaml(obj: Task | Dag) -> str:
    """YAML text for a Task, or a multi-document YAML for a Dag."""
    import yaml

    data = to_dict(obj)
    docs = data if isinstance(obj, Dag) else [data]
    return str(
        yaml.dump_all(
            docs,
            Dumper=_dumper(),
            sort_keys=False,
            default_flow_style=False,
            allow_unicode=True,
            explicit_start=len(docs) > 1,
        )
    )
