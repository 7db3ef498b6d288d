"""What the planner knows of ``azure``, as SkyPilot 0.14's Azure cloud and catalog have it."""

from __future__ import annotations

import re

from stixd.planner.infra_meta import Egress, Feature, InfraMeta

_TB = 1024.0
_TYPE = re.compile(r"^([A-Za-z]+)(\d+)(?:-(\d+))?(.*)$")


def family(instance_type: str) -> str:
    """``Standard_D8s_v5`` -> ``Ds_v5``; ``Standard_E16-4s_v5`` -> ``E_s_v5`` (SkyPilot's rule)."""
    name = instance_type.removeprefix("Standard_").removesuffix("_Promo")
    m = _TYPE.match(name)
    if m is None:
        return name
    return m.group(1) + ("_" if m.group(3) else "") + m.group(4)


def gaps(
    disk_tier: str | None, acc: str | None, count: float | None, need: frozenset[Feature]
) -> set[Feature]:
    return {"disk_tier"} if disk_tier == "ultra" else set()


META = InfraMeta(
    name="azure",
    display="Azure",
    default_families=("Ds_v5", "Es_v5", "Fs_v2"),
    family_of=family,
    unsupported=frozenset({"network_tier"}),
    feature_gaps=gaps,
    # as aws but $0.0875/GB for the first band and $0.083 for the second
    egress=Egress(
        bands=((10 * _TB, 0.0875), (50 * _TB, 0.083), (150 * _TB, 0.07)), free_gb=1.0, beyond=0.05
    ),
    fetch_by_default=True,
)
