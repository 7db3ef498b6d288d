"""What the daemon counts for `/metrics` (stixd.control.metrics renders it): plain numbers in
memory, bumped where things happen, never a store query.

Counters count since the daemon started, as Prometheus expects (a restart is a reset its
`rate()` understands). Every label comes from a finite set: request types, provider names,
and service names (kept only while the service lives: `keep_services`).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

LATENCY_BUCKETS: tuple[float, ...] = (
    *(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    *(60.0, 300.0, 1800.0),
)
"""Upper bounds in seconds: reads end in milliseconds, a launch that follows its job in minutes."""


class Histogram:
    """Observations of one label set: a count per bucket (the last one past every bound)."""

    __slots__ = ("buckets", "count", "sum")

    def __init__(self) -> None:
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.count = 0
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.count += 1
        self.sum += seconds

    def cumulative(self) -> list[tuple[str, int]]:
        """(le, observations at or under it) for each bound and +Inf, as the format wants."""
        out, running = [], 0
        for bound, n in zip((*map(_bound, LATENCY_BUCKETS), "+Inf"), self.buckets, strict=True):
            running += n
            out.append((bound, running))
        return out


def _bound(x: float) -> str:
    return repr(float(x))


@dataclass
class ServiceTraffic:
    """What a service's load balancer counted, as its actor took it (`served`)."""

    requests: int = 0
    waiting: int = 0


@dataclass
class Metrics:
    requests: dict[str, Histogram] = field(default_factory=dict)
    """Request latency by request type, from both the socket and the HTTP API."""
    in_flight: dict[str, int] = field(default_factory=dict)
    launches: dict[str, int] = field(default_factory=dict)
    """Cluster launches begun, by provider."""
    failovers: dict[str, int] = field(default_factory=dict)
    """Capacity errors that moved a launch to the next choice, by provider."""
    recoveries: int = 0
    """Managed jobs relaunched after their cluster was lost."""
    services: dict[str, ServiceTraffic] = field(default_factory=dict)
    seen_states: set[tuple[str, str]] = field(default_factory=set)
    """Every (kind, state) an actor was seen in: shown at 0 once none is, not dropped."""

    def began(self, request: str) -> None:
        self.in_flight[request] = self.in_flight.get(request, 0) + 1

    def ended(self, request: str, seconds: float) -> None:
        self.in_flight[request] -= 1
        histogram = self.requests.get(request)
        if histogram is None:
            histogram = self.requests[request] = Histogram()
        histogram.observe(seconds)

    def launched(self, provider: str) -> None:
        self.launches[provider] = self.launches.get(provider, 0) + 1

    def failed_over(self, provider: str) -> None:
        self.failovers[provider] = self.failovers.get(provider, 0) + 1

    def recovered(self) -> None:
        self.recoveries += 1

    def served(self, service: str, requests: int, waiting: int) -> None:
        traffic = self.services.get(service)
        if traffic is None:
            traffic = self.services[service] = ServiceTraffic()
        traffic.requests += requests
        traffic.waiting = waiting

    def keep_services(self, live: set[str]) -> None:
        """Forget the traffic of services that are gone: their labels leave the output."""
        for name in [s for s in self.services if s not in live]:
            del self.services[name]
