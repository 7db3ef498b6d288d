"""`Proceed? [Y/n]` before spending or destroying: the real CLI under a pseudo-terminal against
a real daemon on the local infra. `n` changes nothing, `y` proceeds, `-y` never asks, and
without a terminal nothing waits (an answer is read from stdin as SkyPilot reads it)."""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from stixctl.confirm import NO_TERMINAL_WAIT
from tests.conftest import Stix, wait_until

PROMPT = b"[Y/n]: "


class Terminal:
    """stixctl on the slave side of a pty (stdin, stdout and stderr); we hold the master."""

    def __init__(self, stix: Stix, *args: str) -> None:
        self.master, slave = os.openpty()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stixctl", *args],
            env=stix.env,
            cwd=stix.home,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,  # the pty becomes its controlling terminal
        )
        os.close(slave)
        self.out = b""

    def _read(self, deadline: float) -> bool:
        """Read what is there; False at the end of output."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"stixctl gave no more output in time; so far:\n{self.text}")
        if not select.select([self.master], [], [], left)[0]:
            return True
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: every holder of the slave side has closed it
            return False
        self.out += data
        return bool(data)

    @property
    def text(self) -> str:
        return self.out.decode(errors="replace")

    def question(self, timeout: float = 60) -> str:
        """Wait for `Proceed? [Y/n]: `; the question's line."""
        deadline = time.monotonic() + timeout
        while PROMPT not in self.out:
            if not self._read(deadline):
                raise AssertionError(f"stixctl ended without asking; output:\n{self.text}")
        return self.text.split(PROMPT.decode())[0].splitlines()[-1]

    def answer(self, text: str) -> None:
        os.write(self.master, text.encode() + b"\n")

    def finish(self, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while self._read(deadline):
            pass
        return self.proc.wait(timeout=max(1.0, deadline - time.monotonic()))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.master)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def terminal(stix: Stix) -> Iterator[type[Terminal]]:
    opened: list[Terminal] = []

    class Opened(Terminal):
        def __init__(self, stix: Stix, *args: str) -> None:
            super().__init__(stix, *args)
            opened.append(self)

    yield Opened
    for t in opened:
        t.close()


def asked(stix: Stix, terminal: type[Terminal], answer: str, *args: str) -> tuple[str, int, str]:
    """Run `stixctl ARGS` on a terminal and answer its question: (question, code, output)."""
    t = terminal(stix, *args)
    question = t.question()
    t.answer(answer)
    code = t.finish()
    return question, code, t.text


def up(stix: Stix, name: str, command: str = "true") -> None:
    stix.run("launch", "-c", name, "-y", "-d", command, check=True)
    wait_until(lambda: stix.clusters().get(name, {}).get("status") == "UP")


def test_launch_shows_the_plan_asks_and_n_creates_nothing_y_launches(
    stix: Stix, terminal: type[Terminal]
) -> None:
    question, code, out = asked(stix, terminal, "n", "launch", "-c", "c1", "echo hi")
    assert question.startswith("Launching a new cluster 'c1'. Proceed?"), out
    for column in ("INFRA", "INSTANCE", "vCPUs", "Mem(GB)", "GPUS", "COST ($)", "CHOSEN"):
        assert column in out, out
    assert "Local" in out and "\u2714" in out, out
    assert code == 1 and "aborted; nothing was changed" in out, out
    assert "c1" not in stix.clusters()
    assert "Provisioning" not in out

    question, code, out = asked(stix, terminal, "y", "launch", "-c", "c1", "echo hi")
    assert code == 0, out
    assert "hi" in out and stix.clusters()["c1"]["status"] == "UP"

    # onto the UP cluster nothing is provisioned: no plan, no question (as SkyPilot)
    t = terminal(stix, "launch", "-c", "c1", "echo again")
    assert t.finish() == 0, t.text
    assert "Proceed?" not in t.text and "again" in t.text


def test_an_empty_answer_takes_the_default_yes(stix: Stix, terminal: type[Terminal]) -> None:
    _, code, out = asked(stix, terminal, "", "launch", "-c", "dflt", "-d", "true")
    assert code == 0, out
    assert stix.clusters()["dflt"]["status"] == "UP"


def test_down_asks_and_n_leaves_the_cluster_up(stix: Stix, terminal: type[Terminal]) -> None:
    up(stix, "c1")
    question, code, out = asked(stix, terminal, "n", "down", "c1")
    assert question.startswith("Terminating 1 cluster: c1. Proceed?"), out
    assert code == 1 and stix.clusters()["c1"]["status"] == "UP"
    assert asked(stix, terminal, "y", "down", "c1")[1] == 0
    assert "c1" not in stix.clusters()


def test_stop_asks_and_n_leaves_the_cluster_up(stix: Stix, terminal: type[Terminal]) -> None:
    up(stix, "c1")
    question, code, out = asked(stix, terminal, "n", "stop", "-a")
    assert question.startswith("Stopping 1 cluster: c1. Proceed?"), out
    assert code == 1 and stix.clusters()["c1"]["status"] == "UP"
    assert asked(stix, terminal, "yes", "stop", "c1")[1] == 0
    assert stix.clusters()["c1"]["status"] == "STOPPED"


def test_start_asks_about_the_stopped_clusters_and_n_starts_nothing(
    stix: Stix, terminal: type[Terminal]
) -> None:
    up(stix, "c1")
    stix.run("stop", "c1", "-y", check=True)
    question, code, out = asked(stix, terminal, "n", "start", "c1")
    assert question.startswith("Restarting 1 cluster: c1. Proceed?"), out
    assert code == 1 and stix.clusters()["c1"]["status"] == "STOPPED"
    assert asked(stix, terminal, "y", "start", "c1")[1] == 0
    assert stix.clusters()["c1"]["status"] == "UP"
    t = terminal(stix, "start", "c1")  # already UP: nothing to restart, nothing to ask
    assert t.finish() == 0 and "Proceed?" not in t.text, t.text


def test_autostop_asks_and_n_sets_nothing(stix: Stix, terminal: type[Terminal]) -> None:
    up(stix, "c1")
    question, code, out = asked(stix, terminal, "n", "autostop", "c1", "-i", "30", "--down")
    assert question.startswith("Scheduling autodown on 1 cluster: c1. Proceed?"), out
    assert code == 1 and stix.clusters()["c1"]["autostop_idle_minutes"] is None
    assert asked(stix, terminal, "y", "autostop", "c1", "-i", "30")[1] == 0
    assert stix.clusters()["c1"]["autostop_idle_minutes"] == 30


def test_cancel_all_asks_and_n_leaves_the_job_running(stix: Stix, terminal: type[Terminal]) -> None:
    up(stix, "c1", "sleep 300")
    wait_until(lambda: stix.job_status("c1", 1) == "RUNNING")
    question, code, out = asked(stix, terminal, "n", "cancel", "c1", "--all")
    assert question.startswith("Cancelling all jobs on cluster(s): c1. Proceed?"), out
    assert code == 1 and stix.job_status("c1", 1) == "RUNNING"
    assert asked(stix, terminal, "y", "cancel", "c1", "--all")[1] == 0
    wait_until(lambda: stix.job_status("c1", 1) == "CANCELLED")


def test_jobs_launch_shows_the_plan_and_n_submits_nothing(
    stix: Stix, terminal: type[Terminal]
) -> None:
    question, code, out = asked(stix, terminal, "n", "jobs", "launch", "-n", "mj", "-d", "true")
    assert question.startswith("Launching a managed job 'mj'. Proceed?"), out
    assert "CHOSEN" in out and "Local" in out, out
    assert code == 1
    assert stix.json("jobs", "queue", "--all") == []


def test_jobs_cancel_all_asks_and_n_leaves_the_job_alone(
    stix: Stix, terminal: type[Terminal]
) -> None:
    stix.run("jobs", "launch", "-n", "long", "-y", "-d", "sleep 300", check=True)
    wait_until(lambda: stix.json("jobs", "queue")[0]["status"] == "RUNNING", timeout=60)
    question, code, out = asked(stix, terminal, "n", "jobs", "cancel", "--all")
    assert question.startswith("Cancelling all managed jobs. Proceed?"), out
    assert code == 1 and stix.json("jobs", "queue")[0]["status"] == "RUNNING"
    assert asked(stix, terminal, "y", "jobs", "cancel", "--all")[1] == 0
    wait_until(lambda: stix.json("jobs", "queue", "--all")[0]["status"] == "CANCELLED", 60)


def test_yes_flag_never_asks(stix: Stix, terminal: type[Terminal]) -> None:
    for args in (
        ("launch", "-c", "c1", "-y", "-d", "true"),
        ("autostop", "c1", "-i", "30", "-y"),
        ("cancel", "c1", "--all", "-y"),
        ("stop", "c1", "-y"),
        ("down", "-a", "-y"),
    ):
        t = terminal(stix, *args)
        assert t.finish() == 0, t.text
        assert "Proceed?" not in t.text, (args, t.text)
    assert stix.clusters() == {}


def _no_terminal(stix: Stix, stdin: int | None, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stixctl", *args],
        env=stix.env,
        cwd=stix.home,
        stdin=stdin,
        capture_output=True,
        text=True,
        timeout=NO_TERMINAL_WAIT + 30,
    )


def test_without_a_terminal_nothing_waits_and_end_of_input_aborts(stix: Stix) -> None:
    launch = _no_terminal(stix, subprocess.DEVNULL, "launch", "-c", "c1", "true")
    assert launch.returncode == 1 and "pass -y" in launch.stderr, launch.stderr
    assert "c1" not in stix.clusters()

    up(stix, "c1")
    down = _no_terminal(stix, subprocess.DEVNULL, "down", "c1")
    assert down.returncode == 1 and "pass -y" in down.stderr, down.stderr
    assert stix.clusters()["c1"]["status"] == "UP"

    # a silent pipe that stays open: the question gives up, it does not wait forever
    read, write = os.pipe()
    try:
        started = time.monotonic()
        stop = _no_terminal(stix, read, "stop", "c1")
        assert time.monotonic() - started < NO_TERMINAL_WAIT + 20
    finally:
        os.close(read)
        os.close(write)
    assert stop.returncode == 1 and "pass -y" in stop.stderr, stop.stderr
    assert stix.clusters()["c1"]["status"] == "UP"


def test_a_piped_answer_is_read_as_sky_reads_it(stix: Stix) -> None:
    up(stix, "c1")
    no = subprocess.run(
        [sys.executable, "-m", "stixctl", "down", "c1"],
        env=stix.env,
        cwd=stix.home,
        input="n\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert no.returncode == 1 and stix.clusters()["c1"]["status"] == "UP"
    stix.run("down", "c1", input="y\n", check=True)  # `yes | stixctl down c1`
    assert "c1" not in stix.clusters()


def test_the_confirmed_plan_is_the_one_launched(stix: Stix) -> None:
    """The daemon plans again at launch; a launch whose pick differs from the confirmed one
    is refused before anything is provisioned."""
    import msgspec

    from stixctl.client import call
    from stixproto import messages as m
    from stixproto.task import Task

    task = msgspec.convert({"run": "true"}, Task)
    stix.run("daemon", "start", check=True)
    plan = call(stix.home, m.PlanRequest(tasks=[task], launch=True, cluster="c1"))
    assert plan.choice == "1x local" and plan.cluster_status is None
    with pytest.raises(Exception, match="the plan changed"):
        call(stix.home, m.Launch(task=task, cluster="c1", detach=True, plan_choice="1x aws/x"))
    assert "c1" not in stix.clusters()
    call(stix.home, m.Launch(task=task, cluster="c1", detach=True, plan_choice=plan.choice))
    assert stix.clusters()["c1"]["status"] == "UP"


def test_a_plan_choice_past_its_bound_is_refused_before_it_is_sent() -> None:
    import msgspec

    from stixproto import messages as m
    from stixproto.edge import request_body
    from stixproto.errors import InvalidRequest
    from stixproto.task import Task

    task = msgspec.convert({"run": "true"}, Task)
    with pytest.raises(InvalidRequest, match="plan_choice"):
        request_body(m.Launch(task=task, cluster="c1", plan_choice="x" * 100_000))
    with pytest.raises(InvalidRequest, match="plan_choice"):
        request_body(m.Launch(task=task, cluster="c1", plan_choice=""))


def test_on_a_cloud_the_chosen_row_is_what_the_cluster_launches(
    stix: Stix, terminal: type[Terminal]
) -> None:
    """The fake cloud (tests only) has regions fake-1 < fake-2 < fake-3 by price: the table
    marks the cheapest, and the cluster comes up with exactly the confirmed choice."""
    stix.env["STIX__FAKE__ENABLED"] = "true"
    t = terminal(stix, "launch", "-c", "f1", "--infra", "fake", "-d", "true")
    assert t.question().startswith("Launching a new cluster 'f1'. Proceed?")
    chosen = [line for line in t.text.splitlines() if line.rstrip().endswith("\u2714")]
    assert len(chosen) == 1 and "fake-1" in chosen[0], t.text
    t.answer("y")
    assert t.finish() == 0, t.text
    cluster = stix.clusters()["f1"]
    assert cluster["status"] == "UP" and cluster["resources"].startswith("1x fake/fake-1 ")
    assert cluster["resources"].split()[-1] in chosen[0]  # the instance type shown
