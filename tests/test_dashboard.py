"""The web dashboard in real headless Chromium against a real daemon serving HTTP on loopback,
with tokens made through `stixctl`: every page loads without console errors and shows the
seeded state, changes appear without a reload, hostile names stay text, a viewer sees no admin
page, and each page's screenshot shows something."""

from __future__ import annotations

import contextlib
import http.client
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Stix, kill_everything_under, wait_until
from tests.dashboard_support import (
    HOSTILE,
    HOSTILE_JOB,
    browser,
    chromium,
    insert_old_cluster_row,
    png_rows,
)
from tests.test_http_api import make_token, serve_http

pytestmark = pytest.mark.skipif(
    chromium() is None, reason="needs chromium (apt-get install chromium)"
)
playwright = pytest.importorskip("playwright")


class Served:
    def __init__(self, stix: Stix, url: str, admin: str, viewer: str) -> None:
        self.stix, self.url, self.admin, self.viewer = stix, url, admin, viewer


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    home = Path(tempfile.mkdtemp(prefix="stxdash", dir="/tmp"))
    stix = Stix(home)
    stix.env["STIX__FAKE__ENABLED"] = "true"
    try:
        serve_http(stix)
        stix.run("daemon", "stop", check=True)  # an old record, written while no daemon runs
        insert_old_cluster_row(home / "state.db", HOSTILE)
        url = serve_http(stix)
        admin, viewer = make_token(stix, "ada", "admin"), make_token(stix, "vic", "viewer")
        stix.run("launch", "-c", "web", "-y", "echo hello-from-web", check=True)
        stix.run("exec", "web", "-n", HOSTILE_JOB, "echo hostile-job", check=True)
        stix.run("launch", "-c", "fk", "--infra", "fake", "-y", "-d", "echo on-fake", check=True)
        stix.run(
            "jobs", "launch", "-n", "trainer", "--infra", "fake", "-y", "-d", "echo t", check=True
        )
        yield Served(stix, url, admin, viewer)
    finally:
        with contextlib.suppress(subprocess.TimeoutExpired):
            subprocess.run(
                [sys.executable, "-m", "stixctl", "daemon", "stop"],
                env=stix.env,
                capture_output=True,
                timeout=30,
            )
        kill_everything_under(home)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def chrome() -> Iterator[Any]:
    with browser() as b:
        yield b


class Watched:
    """A logged-in browser context whose pages record console errors and uncaught exceptions."""

    def __init__(self, chrome: Any, served: Served, token: str) -> None:
        self.url = served.url
        self.context = chrome.new_context(viewport={"width": 1280, "height": 800})
        self.errors: list[str] = []
        self.requests: list[Any] = []
        page = self.page()
        page.goto(self.url + "/dashboard/clusters")
        page.fill("input[name=token]", token)
        page.click("button")
        page.wait_for_url("**/dashboard/clusters")

    def page(self) -> Any:
        page = self.context.new_page()
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on("requestfinished", lambda request: self.requests.append(request))
        return page

    def _console(self, msg: Any) -> None:
        if msg.type == "error":
            self.errors.append(msg.text)

    def open(self, path: str) -> Any:
        page = self.page()
        page.goto(self.url + path)
        # its event stream is open (or done); a selector, not a function: the page's policy
        # forbids the eval a polled expression would need
        page.wait_for_selector("#live.is-live, #live.is-ended", timeout=5000)
        return page


@pytest.fixture
def admin(chrome: Any, served: Served) -> Iterator[Watched]:
    watched = Watched(chrome, served, served.admin)
    try:
        yield watched
    finally:
        watched.context.close()


PAGES = [
    ("/dashboard/clusters", ["web", "fk", "UP"]),
    ("/dashboard/cluster?name=web", ["hello", "Nodes", HOSTILE_JOB]),
    ("/dashboard/jobs", ["web", HOSTILE_JOB, "SUCCEEDED"]),
    ("/dashboard/managed-jobs", ["trainer", "1 managed jobs"]),
    ("/dashboard/services", ["No services."]),
    ("/dashboard/infra", ["local", "fake"]),
    ("/dashboard/users", ["ada", "vic", "viewer"]),
    ("/dashboard/logs?cluster=web&job=1", ["hello-from-web"]),
]


@pytest.mark.parametrize(
    ("path", "shown"), PAGES, ids=[p.split("/")[2].split("?")[0] for p, _ in PAGES]
)
def test_each_page_shows_the_seeded_state_without_console_errors_and_screenshots_non_blank(
    admin: Watched, path: str, shown: list[str], tmp_path: Path
) -> None:
    admin.requests.clear()
    page = admin.open(path)
    loaded = [r for r in admin.requests if "/events" not in r.url]
    sent = sum(r.sizes()["responseBodySize"] + r.sizes()["responseHeadersSize"] for r in loaded)
    assert len(loaded) + 1 < 10 and sent < 150 * 1024  # and the one event stream, still open
    for text in shown:
        if path.startswith("/dashboard/cluster?") and text == "hello":
            continue  # the cluster's page lists its jobs, not their output
        page.get_by_text(text).first.wait_for(timeout=5000)
    shot = tmp_path / "page.png"
    page.screenshot(path=str(shot), full_page=True)
    width, height, lines = png_rows(shot.read_bytes())
    assert width == 1280 and height >= 800
    assert lines > 20, f"the screenshot of {path} looks blank ({lines} distinct lines)"
    assert admin.errors == []


def test_a_cluster_launched_and_stopped_through_stixctl_shows_within_a_second_without_reload(
    admin: Watched, served: Served
) -> None:
    page = admin.open("/dashboard/clusters")
    page.evaluate("window.stillHere = true")  # gone if the page reloads
    row = "tr:has(a:text-is('live1'))"
    served.stix.run("launch", "-c", "live1", "--infra", "fake", "-y", "-d", "echo x", check=True)
    done = time.monotonic()
    page.wait_for_selector(f"{row} .badge:text-is('UP')", timeout=1000)
    assert time.monotonic() - done < 1.0
    served.stix.run("stop", "live1", "-y", check=True)
    done = time.monotonic()
    page.wait_for_selector(f"{row} .badge:text-is('STOPPED')", timeout=1000)
    assert time.monotonic() - done < 1.0
    assert page.evaluate("window.stillHere") is True
    served.stix.run("down", "live1", "-y", check=True)
    page.wait_for_selector(row, state="detached", timeout=1000)
    assert admin.errors == []


def test_hostile_names_render_as_text_and_run_nothing(admin: Watched, served: Served) -> None:
    for path in ("/dashboard/clusters", "/dashboard/jobs"):
        page = admin.open(path)
        name = HOSTILE if path.endswith("clusters") else HOSTILE_JOB
        page.get_by_text(name).first.wait_for(timeout=5000)
        assert page.locator("main img").count() == 0
        assert page.locator("main b").count() == 0
        assert page.title() != "pwned"
    # and again after the script re-renders the table on a change
    served.stix.run("launch", "-c", "nudge", "--infra", "fake", "-y", "-d", "echo x", check=True)
    page = admin.open("/dashboard/clusters")
    served.stix.run("down", "nudge", "-y", check=True)
    page.wait_for_selector("a:text-is('nudge')", state="detached", timeout=2000)
    assert page.get_by_text(HOSTILE).count() == 1
    assert page.locator("main img").count() == 0 and page.title() != "pwned"


def test_a_viewer_sees_the_pages_but_not_the_admin_pages(chrome: Any, served: Served) -> None:
    viewer = Watched(chrome, served, served.viewer)
    try:
        page = viewer.open("/dashboard/clusters")
        assert page.locator("header nav a", has_text="Users").count() == 0
        assert "vic (viewer)" in page.inner_text("header")
        users = viewer.page()
        answer = users.goto(served.url + "/dashboard/users")
        assert answer is not None and answer.status == 403
        assert "viewer" in users.inner_text("body") and "ada" not in users.inner_text("main, body")
        api = users.request.get(served.url + "/api/v1/dashboard/users")
        assert api.status == 403 and "role viewer" in api.json()["error"]
    finally:
        viewer.context.close()


def _get(url: str, path: str, headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", int(url.rsplit(":", 1)[1]), timeout=10)
    conn.request("GET", path, headers=headers or {})
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp


def test_no_token_gets_the_login_form_and_pages_carry_a_strict_policy(served: Served) -> None:
    page = _get(served.url, "/dashboard/clusters")
    assert page.status == 303 and page.getheader("Location") == "/dashboard/login"
    api = _get(served.url, "/api/v1/dashboard/clusters")
    assert api.status == 401
    bad = _get(served.url, "/api/v1/dashboard/clusters", {"Authorization": "Bearer stix_nope"})
    assert bad.status == 401
    shown = _get(served.url, "/dashboard/clusters", {"Authorization": f"Bearer {served.admin}"})
    csp = shown.getheader("Content-Security-Policy") or ""
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    conn = http.client.HTTPConnection("127.0.0.1", int(served.url.rsplit(":", 1)[1]), timeout=10)
    conn.request(
        "POST",
        "/dashboard/login",
        body=f"token={served.viewer}",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    login = conn.getresponse()
    login.read()
    cookie = login.getheader("Set-Cookie") or ""
    assert login.status == 303
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie
    conn.request(
        "POST", "/dashboard/login", body="token=x", headers={"Origin": "http://evil.example"}
    )
    assert conn.getresponse().status == 403
    conn.close()


def test_static_files_are_immutable_compressed_and_revalidated(served: Served) -> None:
    page = _get(served.url, "/dashboard/login")
    assert page.status == 200
    js = _get(served.url, "/dashboard/static/app.js", {"Accept-Encoding": "gzip"})
    assert js.status == 200 and js.getheader("Content-Encoding") == "gzip"
    assert "immutable" in (js.getheader("Cache-Control") or "")
    etag = js.getheader("ETag") or ""
    assert _get(served.url, "/dashboard/static/app.js", {"If-None-Match": etag}).status == 304


def test_event_streams_are_bounded_and_freed_when_their_client_goes(served: Served) -> None:
    from stixd.dashboard.server import MAX_STREAMS

    port = int(served.url.rsplit(":", 1)[1])
    auth = {"Authorization": f"Bearer {served.viewer}"}

    def open_stream() -> tuple[http.client.HTTPConnection, int]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/api/v1/dashboard/events", headers=auth)
        resp = conn.getresponse()
        if resp.status == 200:
            assert resp.readline() == b"retry: 1000\n"
        return conn, resp.status

    streams = [open_stream() for _ in range(MAX_STREAMS)]
    try:
        assert all(status == 200 for _, status in streams)
        extra, status = open_stream()
        extra.close()
        assert status == 503
        streams.pop()[0].close()  # one page goes: its place is free again
        again = wait_until(
            lambda: (lambda c: c if c[1] == 200 else c[0].close())(open_stream()), timeout=5
        )
        streams.append(again)
    finally:
        for conn, _ in streams:
            conn.close()
    health = json.loads(_get_body(served.url, "/api/v1/health"))
    assert health["status"] == "healthy"


def _get_body(url: str, path: str) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", int(url.rsplit(":", 1)[1]), timeout=10)
    conn.request("GET", path)
    body = conn.getresponse().read()
    conn.close()
    return body
