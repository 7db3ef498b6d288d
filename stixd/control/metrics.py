"""`GET /metrics`: the daemon in Prometheus' text exposition format (version 0.0.4).

Written by hand: the format is a few lines per family, and `prometheus_client` would be a
dependency (and an import at start) for what is a loop over dictionaries here. A scrape reads
memory only: the supervisor's live actors (one pass, no store query: 30,000 actors, 10,000
managed jobs running, cost 35 ms of the daemon's CPU per scrape, bench/bench_team_server.py)
and the counters of `app.metrics`.

Families:
- ``stix_actors{kind,state}``: live actors (terminal rows have left the supervisor); an actor
  not yet running its first reconcile shows as ``starting``, a held one as ``quarantined``;
- ``stix_request_duration_seconds{request}`` (histogram) and ``stix_requests_in_flight``;
- ``stix_cluster_launches_total{infra}``, ``stix_cluster_failovers_total{infra}``;
- ``stix_managed_job_recoveries_total``;
- ``stix_service_requests_total{service}`` and ``stix_service_requests_waiting{service}``:
  what each live service's load balancer counted, as its actor takes it each round;
- ``stix_info{version}`` and ``stix_start_time_seconds``.
"""

from __future__ import annotations

from collections.abc import Iterable

import anyio.lowlevel

from stixd.app import VERSION, App
from stixd.runtime.metrics import Metrics

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
STARTING = "starting"
QUARANTINED = "quarantined"
SLICE = 4096
"""Actors counted between two turns of the event loop."""


def escape_label(value: str) -> str:
    """A label value as the format quotes it: backslash, double quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    inner = ",".join(f'{name}="{escape_label(value)}"' for name, value in pairs)
    return f"{{{inner}}}" if inner else ""


def _number(x: float) -> str:
    if isinstance(x, int):
        return str(x)
    return repr(x) if x == x and abs(x) != float("inf") else ("NaN" if x != x else "+Inf")


class Lines:
    def __init__(self) -> None:
        self.out: list[str] = []

    def family(self, name: str, kind: str, text: str) -> None:
        self.out.append(f"# HELP {name} {_help(text)}")
        self.out.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, value: float, *labels: tuple[str, str]) -> None:
        self.out.append(f"{name}{_labels(labels)} {_number(value)}")

    def text(self) -> str:
        return "\n".join(self.out) + "\n"


async def actor_counts(app: App) -> tuple[dict[tuple[str, str], int], set[str]]:
    """Live actors by (kind, state), and the names of the live services: one pass over the
    supervisor's children in memory, `SLICE` at a time so a scrape of tens of thousands never
    holds the event loop for long."""
    counts: dict[tuple[str, str], int] = {}
    services: set[str] = set()
    children = list(app.supervisor.children.values())
    for start in range(0, len(children), SLICE):
        for child in children[start : start + SLICE]:
            actor = child.actor
            if child.failed is not None:
                state = QUARANTINED
            elif actor is None:
                state = STARTING
            else:
                state = actor.stored_state
            key = (child.kind, state)
            counts[key] = counts.get(key, 0) + 1
            if child.kind == "service":
                services.add(child.id)
        await anyio.lowlevel.checkpoint()
    return counts, services


async def exposition(app: App) -> str:
    metrics = app.metrics
    counts, services = await actor_counts(app)
    metrics.seen_states.update(counts)
    metrics.keep_services(services)
    lines = Lines()
    lines.family("stix_info", "gauge", "The daemon's build; always 1.")
    lines.sample("stix_info", 1, ("version", VERSION))
    lines.family("stix_start_time_seconds", "gauge", "When the daemon started (Unix time).")
    lines.sample("stix_start_time_seconds", app.started_at)
    lines.family("stix_actors", "gauge", "Live actors by kind and state.")
    for kind, state in sorted(metrics.seen_states):
        lines.sample("stix_actors", counts.get((kind, state), 0), ("kind", kind), ("state", state))
    _requests(lines, metrics)
    lines.family("stix_cluster_launches_total", "counter", "Cluster launches begun, by infra.")
    for infra, n in sorted(metrics.launches.items()):
        lines.sample("stix_cluster_launches_total", n, ("infra", infra))
    lines.family(
        "stix_cluster_failovers_total",
        "counter",
        "Launches moved to the next choice after a capacity or quota error, by infra.",
    )
    for infra, n in sorted(metrics.failovers.items()):
        lines.sample("stix_cluster_failovers_total", n, ("infra", infra))
    lines.family(
        "stix_managed_job_recoveries_total",
        "counter",
        "Managed jobs relaunched after their cluster was lost.",
    )
    lines.sample("stix_managed_job_recoveries_total", metrics.recoveries)
    lines.family(
        "stix_service_requests_total",
        "counter",
        "Requests that reached a live service's load balancer, as the daemon collected them.",
    )
    traffic = sorted(metrics.services.items())
    for service, seen in traffic:
        lines.sample("stix_service_requests_total", seen.requests, ("service", service))
    lines.family(
        "stix_service_requests_waiting",
        "gauge",
        "Requests held at a live service's load balancer for want of a ready replica.",
    )
    for service, seen in traffic:
        lines.sample("stix_service_requests_waiting", seen.waiting, ("service", service))
    return lines.text()


def _requests(lines: Lines, metrics: Metrics) -> None:
    name = "stix_request_duration_seconds"
    lines.family(name, "histogram", "Time to answer a request (socket or HTTP), by type.")
    for request, histogram in sorted(metrics.requests.items()):
        label = ("request", request)
        for le, n in histogram.cumulative():
            lines.sample(f"{name}_bucket", n, label, ("le", le))
        lines.sample(f"{name}_sum", histogram.sum, label)
        lines.sample(f"{name}_count", histogram.count, label)
    lines.family("stix_requests_in_flight", "gauge", "Requests being answered now, by type.")
    for request, n in sorted(metrics.in_flight.items()):
        lines.sample("stix_requests_in_flight", n, ("request", request))
