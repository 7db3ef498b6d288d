"""The web dashboard in headless Chromium: first data on screen, requests and bytes per page
load, and how soon a change shows, for stix with 100 clusters and 1,000 managed jobs, and the
same pages of SkyPilot 0.14.1's dashboard (its API server in its own venv, empty) in the same
run, as ratios.

The state is made directly as store rows before the daemon starts (100 STOPPED local clusters
and 1,000 ended managed jobs): what the pages read, without an hour of launches. A change is a
real one: `stixctl down` of one of the clusters, timed from the command's return to the row
leaving the open page. The browser is the distro's Chromium (apt), driven by Playwright.

    python -m bench.bench_dashboard [--no-skypilot] [--skypilot-python PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio

from bench.common import Home, median, seed_stopped_clusters, stix_home

STIX_PAGES = [
    "/dashboard/clusters",
    "/dashboard/jobs",
    "/dashboard/managed-jobs",
    "/dashboard/services",
    "/dashboard/infra",
    "/dashboard/users",
]
SKY_PAGES = ["/dashboard/clusters", "/dashboard/jobs", "/dashboard/infra"]
SKY_PORT = 46580
RUNS = 3
IDLE_WITHIN = 20.0
"""SkyPilot's pages keep asking for a while; past this its load is taken as it stands."""


async def seed_managed_jobs(home: Path, n: int) -> None:
    """`n` ended managed jobs as their rows (no actor runs for an ended job)."""
    from stixd.store.db import Row, open_store

    now = time.time()
    async with open_store(home / "state.db") as store:
        for i in range(1, n + 1):
            await store.insert(
                Row(
                    kind="managed_job",
                    id=str(i),
                    state="SUCCEEDED",
                    version=0,
                    terminal=True,
                    spec={"name": f"train-{i}", "submitted_at": now - 4000 + i, "resources": "1x"},
                    data={"started_at": now - 3000 + i, "ended_at": now - 2000 + i},
                ),
                "created",
            )


TIMING = """() => {
  const nav = performance.getEntriesByType("navigation")[0];
  const paint = performance.getEntriesByName("first-contentful-paint")[0];
  const ends = performance.getEntriesByType("resource").map(e => e.responseEnd);
  return {load: nav.loadEventEnd, paint: paint ? paint.startTime : nav.loadEventEnd,
          settled: Math.max(nav.loadEventEnd, ...ends)};
}"""
"""stix's first data is its first paint (the HTML carries the tables); SkyPilot's is when its
last request of the load ended (its tables come from later requests)."""


class Load:
    """One page load: what it asked for and how long until its first data showed."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.requests = 0
        self.bytes = 0
        self.first_data = 0.0
        self.settled = True
        self.loaded = 0.0


def measure(browser: Any, base: str, path: str, cookie: str | None, settle: bool) -> Load:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    context = browser.new_context()
    if cookie:
        context.add_cookies([{"name": "stix_dashboard", "value": cookie, "url": base}])
    page = context.new_page()
    load = Load(path)
    finished: list[Any] = []
    page.on("request", lambda r: setattr(load, "requests", load.requests + 1))
    page.on("requestfinished", lambda r: finished.append(r))
    page.goto(base + path, wait_until="load")
    if settle:  # SkyPilot: its data arrives by later requests; the page settles at network idle
        try:
            page.wait_for_load_state("networkidle", timeout=IDLE_WITHIN * 1000)
        except PlaywrightTimeout:  # still asking: figures as they stand, noted as unsettled
            load.settled = False
    else:  # stix: the first data is in the HTML; its event stream never idles the network
        page.wait_for_selector("main td", state="attached")
        page.wait_for_selector("#live.is-live")
    # the browser's own clock, from the navigation's start: no driver round trips in it
    timing = page.evaluate(TIMING)
    load.loaded = timing["load"] / 1000
    load.first_data = (timing["settled"] if settle else timing["paint"]) / 1000
    for request in finished:
        sizes = request.sizes()
        load.bytes += sizes["responseBodySize"] + sizes["responseHeadersSize"]
    context.close()
    return load


def change_seen(browser: Any, base: str, cookie: str, home: Home, name: str) -> float:
    context = browser.new_context()
    context.add_cookies([{"name": "stix_dashboard", "value": cookie, "url": base}])
    page = context.new_page()
    page.goto(base + "/dashboard/clusters")
    page.wait_for_selector("#live.is-live")
    home.ctl("down", name, "-y")
    done = time.perf_counter()
    page.wait_for_selector(f"a:text-is('{name}')", state="detached", timeout=10_000)
    seen = time.perf_counter() - done
    context.close()
    return seen


def best(loads: list[Load]) -> Load:
    """The median run by first-data time (the figures of one real load, not a mix)."""
    ranked = sorted(loads, key=lambda x: x.first_data)
    return ranked[len(ranked) // 2]


def serve_seeded(home: Home) -> tuple[str, str]:
    """Seed the store, start the daemon serving HTTP; its URL and an admin's token."""
    anyio.run(seed_stopped_clusters, home.path, 100)
    anyio.run(seed_managed_jobs, home.path, 1000)
    home.ctl("api", "start", "--port", "0")
    port = json.loads((home.path / "api_server.json").read_text())["port"]
    home.ctl("users", "create", "ada", "--role", "admin")
    return f"http://127.0.0.1:{port}", home.ctl("tokens", "create", "ada").stdout.strip()


def stix_figures(browser: Any, home: Home, base: str, token: str) -> tuple[dict[str, Load], float]:
    measure(browser, base, "/dashboard/infra", token, settle=False)  # the infra cache fills
    loads = {
        path: best([measure(browser, base, path, token, settle=False) for _ in range(RUNS)])
        for path in STIX_PAGES
    }
    seen = median([change_seen(browser, base, token, home, f"c{i:05d}") for i in range(RUNS)])
    return loads, seen


@contextmanager
def skypilot_server(python: str) -> Iterator[str]:
    sky = str(Path(python).with_name("sky"))
    home = tempfile.mkdtemp(prefix="skydash")
    env = {**os.environ, "HOME": home, "SKYPILOT_DISABLE_USAGE_COLLECTION": "1"}
    subprocess.run([sky, "api", "start"], env=env, capture_output=True, check=True, timeout=300)
    try:
        yield f"http://127.0.0.1:{SKY_PORT}"
    finally:
        subprocess.run([sky, "api", "stop"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(home, ignore_errors=True)


def sky_figures(browser: Any, python: str) -> dict[str, Load]:
    with skypilot_server(python) as base:
        measure(browser, base, "/dashboard/clusters", None, settle=True)  # its first compile
        return {
            path: best([measure(browser, base, path, None, settle=True) for _ in range(RUNS)])
            for path in SKY_PAGES
        }


def print_stix(loads: dict[str, Load], seen: float) -> None:
    print("stix (100 clusters, 1,000 managed jobs): first data, load, requests, bytes per page")
    for load in loads.values():
        print(
            f"  {load.path:26} first data {load.first_data * 1000:6.0f} ms  load "
            f"{load.loaded * 1000:6.0f} ms  {load.requests:2} requests  "
            f"{load.bytes / 1024:6.1f} KiB"
        )
    print(f"  a change (stixctl down) on the open page: {seen * 1000:.0f} ms after the command")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-skypilot", action="store_true")
    parser.add_argument("--skypilot-python")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("needs chromium: apt-get install -y chromium")
    python = None
    if not args.no_skypilot:
        from bench.skypilot_venv import skypilot_python

        python = skypilot_python(args.skypilot_python)
    with stix_home() as home:
        base, token = serve_seeded(home)  # before Playwright runs its event loop here
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            try:
                loads, seen = stix_figures(browser, home, base, token)
                print_stix(loads, seen)
                sky = sky_figures(browser, python) if python else {}
            finally:
                browser.close()
    if not sky:
        return
    print("SkyPilot 0.14.1 (empty): load, settled (its data on screen), requests, bytes")
    for load in sky.values():
        print(
            f"  {load.path:26} load {load.loaded * 1000:6.0f} ms  settled "
            f"{load.first_data * 1000:6.0f} ms  {load.requests:2} requests  "
            f"{load.bytes / 1024:7.1f} KiB"
            + ("" if load.settled else f"  (still asking after {IDLE_WITHIN:g} s)")
        )
    print("ratios, SkyPilot / stix, same page:")
    for path, theirs in sky.items():
        ours = loads[path]
        print(
            f"  {path:26} first data x{theirs.first_data / ours.first_data:5.1f}  requests "
            f"x{theirs.requests / ours.requests:4.1f}  "
            f"bytes x{theirs.bytes / max(ours.bytes, 1):5.1f}"
        )


if __name__ == "__main__":
    main()
