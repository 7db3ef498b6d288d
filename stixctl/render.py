"""Tables and times for the terminal, in SkyPilot's layout."""

from __future__ import annotations

import time
from collections.abc import Sequence

from stixproto import messages as m

_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))} | {
    0x0A: "\\n",
    0x0D: "\\r",
    0x09: " ",
    0x2028: "\\u2028",
    0x2029: "\\u2029",
}


def one_line(text: str) -> str:
    """A message as one terminal line: a newline or escape code a user typed into a name or
    a path is shown escaped, never acted on by the terminal or split over lines."""
    return text.translate(_CONTROLS)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def with_users(
    headers: Sequence[str], rows: Sequence[Sequence[str]], users: Sequence[str | None]
) -> tuple[list[str], list[list[str]]]:
    """A USER column after the first, when the records name their users (listings with
    `-u`); the table as it is otherwise."""
    if not any(users):
        return list(headers), [list(r) for r in rows]
    shown = [[r[0], u or "-", *r[1:]] for r, u in zip(rows, users, strict=True)]
    return [headers[0], "USER", *headers[1:]], shown


def ago(ts: float | None, now: float | None = None) -> str:
    if not ts:
        return "-"
    delta = (now or time.time()) - ts
    if delta < 60:
        return "just now" if delta < 5 else f"{int(delta)} secs ago"
    if delta < 3600:
        return f"{int(delta // 60)} mins ago"
    if delta < 86400:
        return f"{int(delta // 3600)} hrs ago"
    return f"{int(delta // 86400)} days ago"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60}s"
    return f"{s // 3600}h {(s % 3600) // 60}m"


def autostop(c: m.ClusterRecord, now: float) -> str:
    if c.autostop_idle_minutes is None:
        return "-"
    text = f"{c.autostop_idle_minutes:g}m"
    if c.autostop_down:
        text += " (down)"
    if c.status == "UP":
        if c.autostop_at is None:
            text += ", busy"
        else:
            text += f", fires in {duration(max(c.autostop_at - now, 0))}"
    return text


REASON_WIDTH = 60
"""Characters of an INIT cluster's reason in the table; `status --json` has all of it."""


def init_reason(c: m.ClusterRecord) -> str:
    """Why a cluster is INIT, on one line: what is under way (launching, stopping,
    terminating) and its last error (a node that does not answer, a launch that failed)."""
    if c.status != "INIT":
        return ""
    said = [c.activity, c.last_error] if c.activity else [c.last_error or "launching"]
    text = one_line(": ".join(x for x in said if x))
    return text if len(text) <= REASON_WIDTH else text[: REASON_WIDTH - 1] + "…"


def _cluster_table(records: Sequence[m.ClusterRecord], now: float, owned: bool) -> str:
    headers = ["NAME", "INFRA", "RESOURCES", "STATUS", "AUTOSTOP", "LAUNCHED"]
    with_reason = any(c.status == "INIT" for c in records)
    rows = []
    for c in records:
        row = [c.name, c.infra, c.resources, c.status, autostop(c, now), ago(c.launched_at, now)]
        if owned:
            row.insert(1, c.owner or "-")
        if with_reason:
            row.append(init_reason(c))
        rows.append(row)
    if owned:
        headers.insert(1, "OWNER")
    if with_reason:
        headers.append("REASON")
    return table(*with_users(headers, rows, [c.user for c in records]))


def clusters(records: Sequence[m.ClusterRecord]) -> str:
    """Your clusters, then those managed jobs and pools keep up (SkyPilot lists its
    controllers apart too): `down`/`stop`/`autostop` leave those to `stixctl jobs`."""
    if not records:
        return "No existing clusters."
    now = time.time()
    own = [c for c in records if not c.owner]
    owned = [c for c in records if c.owner]
    parts = []
    if own:
        parts.append("Clusters\n" + _cluster_table(own, now, owned=False))
    if owned:
        parts.append(
            "Managed job and pool clusters (`stixctl jobs cancel` / `stixctl jobs pool down` "
            "end them)\n" + _cluster_table(owned, now, owned=True)
        )
    notes = [f"{c.name}: {c.last_error}" for c in records if c.status == "FAILED" and c.last_error]
    return "\n\n".join(parts) + "".join(f"\n{note}" for note in notes)


def jobs(records: Sequence[m.JobRecord]) -> str:
    if not records:
        return "No jobs."
    now = time.time()
    out: list[str] = []
    by_cluster: dict[str, list[m.JobRecord]] = {}
    for j in records:
        by_cluster.setdefault(j.cluster, []).append(j)
    for cluster, items in by_cluster.items():
        rows = []
        for j in items:
            end = j.ended_at or (now if j.started_at else None)
            dur = (end - j.started_at) if (j.started_at and end) else None
            rows.append(
                [
                    str(j.job_id),
                    j.name or "-",
                    ago(j.submitted_at, now),
                    ago(j.started_at, now),
                    duration(dur),
                    j.resources,
                    j.status,
                ]
            )
        out.append(f"Job queue of cluster {cluster}")
        headers = ["ID", "NAME", "SUBMITTED", "STARTED", "DURATION", "RESOURCES", "STATUS"]
        out.append(table(*with_users(headers, rows, [j.user for j in items])))
        out += [f"job {j.job_id}: {j.failure_reason}" for j in items if j.failure_reason]
    return "\n".join(out)


def events(records: Sequence[m.EventRecord]) -> str:
    rows = []
    for e in records:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.at))
        change = f"{e.from_state or '-'} -> {e.to_state}" if e.to_state else ""
        rows.append([when, e.id, e.event, change, e.why])
    return table(["TIME", "ACTOR", "EVENT", "STATE", "WHY"], rows)


def costs(report: m.CostReport) -> str:
    if not report.rows:
        return "No clusters in the report."
    rows = [
        [
            r.name,
            r.infra,
            r.resources,
            r.status,
            duration(r.duration_seconds),
            f"${r.hourly_price:.2f}",
            f"${r.cost:.2f}",
        ]
        for r in report.rows
    ]
    body = table(["NAME", "INFRA", "RESOURCES", "STATUS", "DURATION", "$/HR", "COST"], rows)
    return f"{body}\nTotal: ${report.total:.2f}"


def checks(reply: m.CheckReply) -> str:
    """The infras this build supports in a table; the ones it does not yet on one line."""
    mine = [c for c in reply.infras if c.reason != m.NOT_SUPPORTED]
    others = [c.infra for c in reply.infras if c.reason == m.NOT_SUPPORTED]
    rows = [[c.infra, "enabled" if c.enabled else "disabled", c.reason] for c in mine]
    blocks = [table(["INFRA", "STATUS", "DETAIL"], rows)] if rows else []
    parts = [f"{c.infra}:\n" + "\n".join(f"  {d}" for d in c.details) for c in mine if c.details]
    blocks += parts
    if others:
        blocks.append(f"Not supported in this build yet: {', '.join(others)}")
    return "\n\n".join(blocks)
