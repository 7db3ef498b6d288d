"""Each dashboard page as plain data: titled tables of cells, built from the same requests the
CLI sends (so the same access rules and the same records), never from a cloud call. Listings
ask for every user's objects (`-u`), as SkyPilot's dashboard shows them: the token's workspaces
still hide the private ones it is not in.

A page is `{"page", "title", "watch", "sections", "pager"?, "logs"?}`; a section is
`{"title", "columns", "rows", "empty"}`; a cell is text, or `{"t": text, "h": link}`, or
`{"t": text, "s": 1}` for a state shown as a badge. The server renders the first view of a page
from this data as HTML, and the page's script renders the same data again when it changes.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

from stixd.actors.specs import ClusterData, data_of
from stixd.app import App
from stixproto import messages as m
from stixproto.errors import InvalidRequest

Ask = Callable[[Any], Awaitable[tuple[Any, list[Any]]]]
"""Send one request as the page's user: its reply and the events it emitted."""
Page = dict[str, Any]

MANAGED_PAGE = 50
"""Managed jobs per page: 1,000 jobs are 20 pages, each one query of the newest so many."""
MAX_PAGE = 200
JOBS_SHOWN = 500
"""Cluster jobs listed on the jobs page, newest first (the rest are on each cluster's page)."""
LOG_TAIL = 1000


def when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) if ts else "-"


def badge(text: str) -> dict[str, Any]:
    return {"t": text, "s": 1}


def link(text: str, path: str, **query: Any) -> dict[str, Any]:
    qs = urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
    return {"t": text, "h": f"/dashboard/{path}" + (f"?{qs}" if qs else "")}


def section(title: str, columns: list[str], rows: list[list[Any]], empty: str) -> dict[str, Any]:
    return {"title": title, "columns": columns, "rows": rows, "empty": empty}


def cluster_link(name: str) -> dict[str, Any]:
    return link(name, "cluster", name=name)


def _job_rows(jobs: list[m.JobRecord], with_cluster: bool) -> list[list[Any]]:
    rows = []
    for j in jobs:
        logs = link("logs", "logs", cluster=j.cluster, job=j.job_id)
        row: list[Any] = [str(j.job_id), j.name or "-", badge(j.status), when(j.submitted_at)]
        row += [when(j.started_at), j.resources or "-", logs]
        rows.append([cluster_link(j.cluster), *row] if with_cluster else row)
    return rows


JOB_COLUMNS = ["id", "name", "status", "submitted", "started", "resources", "log"]
CLUSTER_COLUMNS = ["name", "status", "infra", "nodes", "resources", "head ip", "launched"]


async def clusters(ask: Ask, query: dict[str, str]) -> Page:
    reply, _ = await ask(m.Status(all_users=True))
    rows = [
        [
            cluster_link(c.name),
            badge(c.activity or c.status),
            c.infra,
            str(c.num_nodes),
            c.resources,
            c.head_ip or "-",
            when(c.launched_at),
        ]
        for c in reply.clusters
    ]
    table = section(f"{len(rows)} clusters", CLUSTER_COLUMNS, rows, "No existing clusters.")
    return {"page": "clusters", "title": "Clusters", "watch": ["cluster"], "sections": [table]}


async def cluster(ask: Ask, query: dict[str, str], app: App) -> Page:
    name = query.get("name", "")
    if not name:
        raise InvalidRequest("name a cluster: /dashboard/cluster?name=NAME")
    reply, _ = await ask(m.Status(clusters=[name], all=True, all_users=True))
    if not reply.clusters:
        raise InvalidRequest(f"cluster {name!r} does not exist")
    c = reply.clusters[0]
    head = [c.name, badge(c.activity or c.status), c.infra, str(c.num_nodes), c.resources]
    head += [c.head_ip or "-", when(c.launched_at)]
    row = await app.store.get("cluster", name)
    nodes = data_of(row, ClusterData).nodes if row is not None and not row.quarantined else []
    node_rows = [
        [str(n.get("rank", "-")), str(n.get("ip", "-")), str(n.get("status", "-"))] for n in nodes
    ]
    sections = [
        section("Cluster", CLUSTER_COLUMNS, [head], ""),
        section("Nodes", ["rank", "ip", "status"], node_rows, "No nodes (not up)."),
    ]
    if c.last_error:
        sections.append(section("Last error", ["error"], [[c.last_error]], ""))
    jobs: list[m.JobRecord] = []
    if c.status != "TERMINATED":
        jobs = (await ask(m.Queue(clusters=[name], all_users=True)))[0].jobs
    sections.append(section("Jobs", JOB_COLUMNS, _job_rows(jobs, False), "No jobs."))
    return {
        "page": "cluster",
        "title": f"Cluster {name}",
        "watch": ["cluster", "job"],
        "sections": sections,
    }


async def jobs(ask: Ask, query: dict[str, str]) -> Page:
    reply, _ = await ask(m.Queue(all_users=True))
    listed = sorted(reply.jobs, key=lambda j: -j.submitted_at)
    shown = listed[:JOBS_SHOWN]
    title = f"{len(listed)} jobs" + (f" (newest {len(shown)})" if len(shown) < len(listed) else "")
    table = section(title, ["cluster", *JOB_COLUMNS], _job_rows(shown, True), "No jobs.")
    return {"page": "jobs", "title": "Jobs", "watch": ["job"], "sections": [table]}


def _page_number(query: dict[str, str]) -> int:
    text = query.get("page", "1")
    return min(max(int(text), 1), MAX_PAGE) if text.isdigit() else 1


async def managed_jobs(ask: Ask, query: dict[str, str]) -> Page:
    number = _page_number(query)
    reply, _ = await ask(m.JobsQueue(limit=number * MANAGED_PAGE, all_users=True))
    total = len(reply.jobs) + reply.hidden
    shown = reply.jobs[(number - 1) * MANAGED_PAGE :]
    rows = [
        [
            str(j.job_id),
            j.name,
            badge(j.status),
            when(j.submitted_at),
            j.infra or "-",
            str(j.recoveries),
            cluster_link(j.cluster) if j.cluster else "-",
            j.failure_reason or "",
        ]
        for j in shown
    ]
    columns = ["id", "name", "status", "submitted", "infra", "recoveries", "cluster", "failure"]
    first = (number - 1) * MANAGED_PAGE + 1
    title = f"{total} managed jobs" + (f", {first}-{first + len(rows) - 1} shown" if rows else "")
    pager = {
        "newer": link("newer", "managed-jobs", page=number - 1)["h"] if number > 1 else None,
        "older": link("older", "managed-jobs", page=number + 1)["h"]
        if number * MANAGED_PAGE < total and number < MAX_PAGE
        else None,
    }
    table = section(title, columns, rows, "No managed jobs.")
    return {
        "page": "managed-jobs",
        "title": "Managed jobs",
        "watch": ["managed_job"],
        "sections": [table],
        "pager": pager,
    }


async def services(ask: Ask, query: dict[str, str]) -> Page:
    reply, _ = await ask(m.ServeStatus(all_users=True))
    svc_rows, replica_rows = [], []
    for s in reply.services:
        svc_rows.append(
            [
                s.name,
                badge(s.status),
                str(s.version),
                s.endpoint or "-",
                s.policy,
                when(s.created_at),
            ]
        )
        for r in s.replicas:
            cluster = cluster_link(r.cluster) if r.cluster else "-"
            replica_rows.append(
                [
                    s.name,
                    str(r.replica_id),
                    str(r.version),
                    badge(r.status),
                    r.endpoint or "-",
                    cluster,
                ]
            )
    return {
        "page": "services",
        "title": "Services",
        "watch": ["service", "replica"],
        "sections": [
            section(
                f"{len(svc_rows)} services",
                ["name", "status", "version", "endpoint", "policy", "created"],
                svc_rows,
                "No services.",
            ),
            section(
                "Replicas",
                ["service", "id", "version", "status", "endpoint", "cluster"],
                replica_rows,
                "No replicas.",
            ),
        ],
    }


def infra(check: m.CheckReply | None, gpus: m.Table | None, error: str | None) -> Page:
    """From the dashboard's cached answers (`InfraCache`): a page never waits on a cloud."""
    checking = "Checking the infras..." if error is None else error
    infra_rows = [
        [
            i.infra,
            badge("enabled" if i.enabled else "disabled"),
            i.reason or "",
            "; ".join(i.details),
        ]
        for i in (check.infras if check else [])
    ]
    gpu_rows: list[list[Any]] = []
    columns = ["gpu"]
    if gpus is not None and gpus.rows:
        columns = list(gpus.rows[0].keys())[:8]
        gpu_rows = [[_cell(r.get(k)) for k in columns] for r in gpus.rows[:500]]
    return {
        "page": "infra",
        "title": "Infra",
        "watch": ["infra"],
        "sections": [
            section("Infras", ["infra", "enabled", "reason", "details"], infra_rows, checking),
            section(
                "GPUs",
                columns,
                gpu_rows,
                "No GPUs in the catalogs yet." if gpus is not None else checking,
            ),
        ],
    }


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value)


async def users(ask: Ask, query: dict[str, str], app: App) -> Page:
    reply, _ = await ask(m.UsersList())  # refused for all but admins, as on the CLI
    rows = [[u.name, badge(u.role), str(u.tokens), when(u.created_at)] for u in reply.users]
    spaces, _ = await ask(m.WorkspacesList())
    space_rows = [[w.name] for w in spaces.workspaces]
    return {
        "page": "users",
        "title": "Users",
        "watch": [],
        "sections": [
            section(f"{len(rows)} users", ["name", "role", "tokens", "created"], rows, "No users."),
            section("Workspaces", ["name"], space_rows, "No workspaces are configured."),
        ],
    }


async def logs(ask: Ask, query: dict[str, str]) -> Page:
    cluster_name, job = query.get("cluster", ""), query.get("job", "")
    if not cluster_name or not job.isdigit():
        raise InvalidRequest("name a job: /dashboard/logs?cluster=NAME&job=ID")
    end, _ = await ask(m.Logs(cluster=cluster_name, job_id=int(job), status_only=True))
    head = [[cluster_link(cluster_name), job, badge(end.status)]]
    return {
        "page": "logs",
        "title": f"Logs of job {job} on {cluster_name}",
        "watch": ["job"],
        "sections": [section("Job", ["cluster", "job", "status"], head, "")],
        "logs": {"cluster": cluster_name, "job": int(job)},
    }
