"""`/metrics`: Prometheus' text format from a real daemon serving HTTP on loopback, scraped
with real tokens, with counters that move when launches, failovers and recoveries happen."""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stixd.control.metrics import Lines, escape_label
from stixd.runtime.metrics import LATENCY_BUCKETS, Metrics
from tests.conftest import Stix, wait_until
from tests.test_http_api import make_token, serve_http

_SAMPLE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)"
    r"(?:\{(?P<labels>(?:[a-zA-Z_][a-zA-Z0-9_]*=\"(?:[^\"\\\n]|\\[\\\"n])*\",?)*)\})?"
    r" (?P<value>\S+)$"
)
_LABEL = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)=\"((?:[^\"\\\n]|\\[\\\"n])*)\"")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda g: "\n" if g.group(1) == "n" else g.group(1), value)


def parse(text: str) -> Samples:
    """Every sample of an exposition, checked against the format as Prometheus reads it: a
    TYPE line before a family's samples, one per family, well-formed labels and numbers."""
    assert text.endswith("\n")
    typed: dict[str, str] = {}
    samples: Samples = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name not in typed, f"two TYPE lines for {name}"
            assert kind in ("counter", "gauge", "histogram")
            typed[name] = kind
            continue
        if line.startswith("# HELP "):
            continue
        found = _SAMPLE.match(line)
        assert found, f"not a sample line: {line!r}"
        name = found["name"]
        family = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in typed or typed.get(family) == "histogram", f"{name} has no TYPE before"
        labels = frozenset((k, _unescape(v)) for k, v in _LABEL.findall(found["labels"] or ""))
        key = (name, labels)
        assert key not in samples, f"duplicate sample {line!r}"
        samples[key] = float(found["value"])
    return samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def scrape(url: str, token: str | None) -> tuple[int, str, str]:
    req = urllib.request.Request(url + "/metrics")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


# -- the format ------------------------------------------------------------------------------


def test_label_values_are_escaped_as_the_format_says() -> None:
    lines = Lines()
    lines.family("x", "gauge", "help with a \\ and\na newline")
    hostile = 'a"b\\c\nd}e,f="g'
    lines.sample("x", 1, ("service", hostile))
    text = lines.text()
    assert "# HELP x help with a \\\\ and\\na newline" in text
    assert escape_label(hostile) == 'a\\"b\\\\c\\nd}e,f=\\"g'
    assert value(parse(text), "x", service=hostile) == 1


def test_a_histogram_is_cumulative_and_its_inf_bucket_is_its_count() -> None:
    metrics = Metrics()
    for seconds in (0.0005, 0.003, 0.003, 0.2, 99999.0):
        metrics.began("status")
        metrics.ended("status", seconds)
    h = metrics.requests["status"]
    buckets = h.cumulative()
    assert [le for le, _ in buckets] == [repr(b) for b in LATENCY_BUCKETS] + ["+Inf"]
    counts = [n for _, n in buckets]
    assert counts == sorted(counts) and counts[-1] == h.count == 5
    assert dict(buckets)["0.001"] == 1 and dict(buckets)["0.005"] == 3
    assert dict(buckets)["0.25"] == 4 and metrics.in_flight["status"] == 0


def test_only_live_services_keep_their_traffic_labels() -> None:
    metrics = Metrics()
    metrics.served("web", 10, 0)
    metrics.served("web", 5, 2)
    metrics.served("old", 1, 0)
    metrics.keep_services({"web"})
    assert list(metrics.services) == ["web"]
    assert (metrics.services["web"].requests, metrics.services["web"].waiting) == (15, 2)


# -- a real daemon ---------------------------------------------------------------------------


def test_metrics_need_a_token_of_any_role_and_show_actors_and_request_latencies(
    stix: Stix,
) -> None:
    url = serve_http(stix)
    viewer = make_token(stix, "watcher", "viewer")
    status, kind, body = scrape(url, None)
    assert status == 401 and "token" in body and len(body.strip().splitlines()) == 1
    assert scrape(url, "stix_000000000000_" + "x" * 43)[0] == 401
    stix.run("launch", "-c", "m1", "-y", "echo hi", check=True)
    stix.run("status", check=True)
    status, kind, body = scrape(url, viewer)
    assert status == 200 and kind == "text/plain; version=0.0.4; charset=utf-8"
    samples = parse(body)
    assert value(samples, "stix_actors", kind="cluster", state="UP") == 1
    assert value(samples, "stix_cluster_launches_total", infra="local") == 1
    assert value(samples, "stix_request_duration_seconds_count", request="launch") == 1
    assert (value(samples, "stix_request_duration_seconds_count", request="status") or 0) >= 1
    assert value(samples, "stix_requests_in_flight", request="status") == 0
    # the cluster goes: its actor leaves, its state is shown at 0, not dropped
    stix.run("down", "m1", "-y", check=True)
    samples = parse(scrape(url, viewer)[2])
    assert value(samples, "stix_actors", kind="cluster", state="UP") == 0


def test_metrics_may_be_open_to_this_machine_only_when_the_config_says(stix: Stix) -> None:
    stix.env["STIX__API__METRICS_OPEN_ON_LOOPBACK"] = "true"
    url = serve_http(stix)
    status, _, body = scrape(url, None)
    assert status == 200 and "stix_info{version=" in body


def fake_daemon(stix: Stix, **settings: str) -> None:
    stix.env["STIX__FAKE__ENABLED"] = "true"
    for key, val in settings.items():
        stix.env[f"STIX__FAKE__{key.upper()}"] = val


def test_failovers_and_managed_job_recoveries_are_counted(
    stix: Stix, task_file: Callable[[str], Path]
) -> None:
    fake_daemon(stix, no_capacity_regions="[fake-1]")
    url = serve_http(stix)
    token = make_token(stix, "ops", "viewer")
    task = task_file(
        "name: mj\nresources:\n  infra: fake\n"
        "envs:\n  STIX_FAKE_RUN_SECONDS: '3600'\nrun: python train.py\n"
    )
    stix.run("jobs", "launch", str(task), "-y", "-d", check=True)

    def job() -> dict[str, Any] | None:
        jobs = {j["job_id"]: j for j in stix.json("jobs", "queue", "--all")}
        return jobs.get(1) if jobs.get(1, {}).get("status") == "RUNNING" else None

    wait_until(job, timeout=30, interval=0.1)
    samples = parse(scrape(url, token)[2])
    assert value(samples, "stix_cluster_failovers_total", infra="fake") == 1
    assert value(samples, "stix_managed_job_recoveries_total") == 0
    assert value(samples, "stix_actors", kind="managed_job", state="RUNNING") == 1
    stix.run("fake", "preempt", "mj-1", check=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        samples = parse(scrape(url, token)[2])
        if value(samples, "stix_managed_job_recoveries_total") == 1:
            break
        time.sleep(0.1)
    assert value(samples, "stix_managed_job_recoveries_total") == 1
    assert (value(samples, "stix_cluster_launches_total", infra="fake") or 0) >= 1


def test_the_request_label_set_is_the_request_types_only(stix: Stix) -> None:
    url = serve_http(stix)
    token = make_token(stix, "v", "viewer")
    stix.run("status", check=True)
    stix.run("queue", "no-such-cluster")  # refused: timed all the same
    samples = parse(scrape(url, token)[2])
    requests = {
        dict(labels)["request"]
        for (name, labels) in samples
        if name == "stix_request_duration_seconds_count"
    }
    from stixproto import messages as m

    tags = {cls.__struct_config__.tag for cls in m.Request.__args__}
    assert requests and requests <= tags


def test_a_services_balancer_traffic_is_shown_while_it_lives(
    stix: Stix, task_file: Callable[[str], Path]
) -> None:
    from tests.test_serve import endpoint, free_port, get, service_yaml, serving, status, up

    serving(stix)
    url = serve_http(stix)
    token = make_token(stix, "ops", "viewer")
    up(stix, service_yaml(task_file, free_port()), "web")
    wait_until(lambda: status(stix, "web")["status"] == "READY", timeout=40)  # type: ignore[index]
    where = endpoint(stix, "web")
    for _ in range(5):
        assert "hello" in get(where)

    def counted() -> Samples | None:
        samples = parse(scrape(url, token)[2])
        seen = value(samples, "stix_service_requests_total", service="web") or 0
        return samples if seen >= 5 else None

    samples = wait_until(counted, timeout=20, interval=0.2)
    assert value(samples, "stix_service_requests_total", service="web") == 5
    assert value(samples, "stix_service_requests_waiting", service="web") == 0
    assert value(samples, "stix_actors", kind="service", state="READY") == 1
    stix.run("serve", "down", "web", "-y", check=True)
    wait_until(lambda: status(stix, "web") is None, timeout=30)
    body = scrape(url, token)[2]
    assert 'service="web"' not in body
