"""Zone names for zone IDs: the AWS catalog names zones by ID (``use1-az1``), users and the
console by name (``us-east-1a``).

Which name an ID has differs between AWS accounts, so no public catalog can say; like
SkyPilot, stix keeps the account's mapping in ``v8/aws/az_mappings.csv`` (SkyPilot's file
name and columns, ``AvailabilityZoneName,AvailabilityZone``) and shows names where it knows
them, IDs elsewhere. The AWS provider writes what EC2 tells it about a region's zones into the
catalog cache; a mapping in ``STIX_CATALOG_DIR`` (say SkyPilot's own) is read as well.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import msgspec

from stixd.planner.catalog import SCHEMA, Catalog
from stixd.planner.plans import Candidate, PipelinePlan, Plan

MAPPING_FILE = "az_mappings.csv"
HEADER = ("AvailabilityZoneName", "AvailabilityZone")
MAX_MAPPING_BYTES = 1_000_000  # a few hundred zones exist; anything bigger is not a mapping

ZoneNames = Mapping[str, Mapping[str, str]]
"""cloud -> zone ID -> zone name."""


def read_zone_names(path: Path) -> dict[str, str]:
    """ID -> name from one mapping file; a file that cannot be read maps nothing."""
    try:
        if path.stat().st_size > MAX_MAPPING_BYTES:
            return {}
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return {}
    names: dict[str, str] = {}
    for row in csv.DictReader(io.StringIO(text)):
        name, zone_id = row.get(HEADER[0]), row.get(HEADER[1])
        if name and zone_id:
            names[zone_id.strip()] = name.strip()
    return names


def zone_names_of(catalog: Catalog, clouds: Iterable[str]) -> dict[str, dict[str, str]]:
    """cloud -> ID -> name from every catalog source (``STIX_CATALOG_DIR`` wins over the cache);
    ``clouds`` are those whose catalog names zones by ID (`InfraMeta.zone_ids`)."""
    found: dict[str, dict[str, str]] = {}
    for cloud in clouds:
        names: dict[str, str] = {}
        for root in reversed(catalog.sources.dirs()):
            names.update(read_zone_names(root / SCHEMA / cloud / MAPPING_FILE))
        found[cloud] = names
    return found


def remember_zone_names(cloud_dir: Path, pairs: Iterable[tuple[str, str]]) -> bool:
    """Merge (name, ID) pairs into ``cloud_dir/az_mappings.csv``; True when it changed.

    Written to a temporary file and renamed, so a reader never sees half a file."""
    path = cloud_dir / MAPPING_FILE
    known = read_zone_names(path)
    merged = {**known, **{zone_id: name for name, zone_id in pairs if name and zone_id}}
    if merged == known:
        return False
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADER)
    writer.writerows((name, zone_id) for zone_id, name in sorted(merged.items()))
    cloud_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{MAPPING_FILE}.{os.getpid()}.tmp")
    tmp.write_text(out.getvalue(), encoding="utf-8")
    tmp.replace(path)
    return True


def _named(c: Candidate, names: Mapping[str, str]) -> Candidate:
    if not names or (c.zone not in names and not any(z in names for z in c.zones)):
        return c
    return msgspec.structs.replace(
        c,
        zone=names.get(c.zone, c.zone) if c.zone else None,
        zones=tuple(names.get(z, z) for z in c.zones),
    )


def named_plan(p: Plan, names: ZoneNames) -> Plan:
    """The plan as the user reads it: zone IDs replaced by the zone names known for them."""
    if not any(names.values()):
        return p

    def one(c: Candidate) -> Candidate:
        return _named(c, names.get(c.cloud, {}))

    return msgspec.structs.replace(
        p,
        chosen=one(p.chosen) if p.chosen else None,
        candidates=tuple(one(c) for c in p.candidates),
    )


def named_pipeline(pp: PipelinePlan, names: ZoneNames) -> PipelinePlan:
    if not any(names.values()):
        return pp
    chosen = pp.chosen
    return msgspec.structs.replace(
        pp,
        tasks=tuple(named_plan(t, names) for t in pp.tasks),
        chosen=tuple(_named(c, names.get(c.cloud, {})) for c in chosen) if chosen else None,
    )
