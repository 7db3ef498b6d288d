"""The sentence a user reads when nothing fits: the filter that removed the last candidate.

Each (alternative, cloud) pair that came up empty left an `Elimination` naming the stage that
emptied it. The reason reported for an alternative is its *deepest* stage (the one the request
got furthest in), with the clouds that stopped there merged into one sentence:
``no offer has 2048+ vCPUs (largest: 448)``, ``accelerator H100:16 is not offered on aws, gcp
(offered: H100:1, H100:8)``, ``every candidate is blocked (aws/us-east-1: ...)``.
"""

from __future__ import annotations

from collections.abc import Sequence

from stixd.planner.candidates import Elimination, Stage, Want
from stixd.planner.catalog import parse_accelerator
from stixd.planner.catalog.names import format_count
from stixd.planner.request import unique

__all__ = ["reason_for", "reason_for_task"]

_UNITS = {Stage.CPUS: "vCPUs", Stage.MEMORY: "GiB of memory"}


def _nearest(values: Sequence[float], target: float) -> str:
    below = [v for v in values if v < target]
    above = [v for v in values if v > target]
    near = ([max(below)] if below else []) + ([min(above)] if above else [])
    return ", ".join(format_count(v) for v in near)


def _amounts(elims: Sequence[Elimination]) -> str | None:
    stage = elims[0].stage
    if any(e.subject != elims[0].subject or not e.values for e in elims):
        return None  # not the plain "no offer has N" form (e.g. the default memory ratio)
    subject = elims[0].subject
    values = sorted({v for e in elims for v in e.values})
    owner = f"{elims[0].cloud} offer" if len(elims) == 1 else "offer"
    head = f"no {owner} has {subject} {_UNITS[stage]}"
    if subject.endswith("+"):
        return f"{head} (largest: {format_count(values[-1])})"
    return f"{head} (nearest: {_nearest(values, float(subject))})"


def _merge(elims: Sequence[Elimination]) -> str:
    stage = elims[0].stage
    if stage in _UNITS:
        merged = _amounts(elims)
        if merged is not None:
            return merged
    if stage == Stage.ACCELERATOR and all(e.subject == elims[0].subject != "" for e in elims):
        if elims[0].cloud == "*":  # a name no catalog knows
            return elims[0].text
        clouds = ", ".join(unique(e.cloud for e in elims))
        options = sorted(
            unique(o for e in elims for o in e.options), key=lambda o: parse_accelerator(o)[1]
        )
        text = f"accelerator {elims[0].subject} is not offered on {clouds}"
        return text + (f" (offered: {', '.join(options)})" if options else "")
    if stage == Stage.BLOCKED:
        return (
            "every candidate is blocked ("
            + "; ".join(unique(o for e in elims for o in e.options))
            + ")"
        )
    return _by_cloud(elims)


def _by_cloud(elims: Sequence[Elimination]) -> str:
    """Sentences that differ only in the cloud's name become one naming them all."""
    clouds = unique(e.cloud for e in elims)
    templates = unique(e.text.replace(e.cloud, "\0") for e in elims)
    if len(clouds) > 1 and len(templates) == 1 and "\0" in templates[0]:
        text = templates[0].replace("\0 catalog", "\0 catalogs")
        return text.replace("\0", ", ".join(clouds))
    return "; ".join(unique(e.text for e in elims))


def reason_for(elims: Sequence[Elimination]) -> str:
    """One sentence from the eliminations of one alternative."""
    if not elims:
        return "no cloud is enabled; run `stixctl check` to see why"
    deepest = max(e.stage for e in elims)
    return _merge([e for e in elims if e.stage == deepest])


def reason_for_task(found: Sequence[tuple[Want, Sequence[Elimination]]]) -> str:
    """The reason a task has no candidate: per alternative when it has several."""
    if len(found) == 1:
        return reason_for(found[0][1])
    return "; ".join(f"{want.label()}: {reason_for(elims)}" for want, elims in found)
