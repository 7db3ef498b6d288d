"""The bad-client log budget: a few lines per window, then one line telling what was left out."""

from __future__ import annotations

from typing import Any

from stixd.control.loglimit import LogBudget


class Lines:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def warning(self, event: str, **fields: Any) -> None:
        self.lines.append((event, fields))

    exception = warning


def test_a_flood_is_logged_as_its_first_lines_and_one_summary() -> None:
    now = [0.0]
    log = Lines()
    budget = LogBudget(log, burst=3, interval=60, clock=lambda: now[0])
    for i in range(1000):
        budget.warning("bad_client", n=i)
    assert [f["n"] for _, f in log.lines] == [0, 1, 2]
    budget.flush()  # the window is not over: nothing yet
    assert len(log.lines) == 3
    now[0] = 61
    budget.flush()
    assert log.lines[3] == ("log_lines_suppressed", log.lines[3][1])
    assert log.lines[3][1]["count"] == 997
    budget.exception("connection_failed")  # a new window: logged again
    assert log.lines[-1][0] == "connection_failed" and len(log.lines) == 5


def test_a_quiet_window_adds_no_summary() -> None:
    now = [0.0]
    log = Lines()
    budget = LogBudget(log, burst=3, interval=60, clock=lambda: now[0])
    budget.warning("bad_client")
    now[0] = 200
    budget.flush()
    assert [e for e, _ in log.lines] == ["bad_client"]


def test_long_fields_are_clipped() -> None:
    log = Lines()
    LogBudget(log).warning("bad_client", error="x" * 100_000)
    assert len(log.lines[0][1]["error"]) < 600
