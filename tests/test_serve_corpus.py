"""Every service file of SkyPilot's corpus (../shared/compat/skypilot-yamls) plans, and each
whose replicas fit this machine runs there unchanged.

Planning goes through the daemon's own steps: the autoscaler's first round orders the replicas
(spot or on demand), each replica's task is built as the replica actor builds it
(`replica_task`), and that task is planned by the optimizer over every catalog cloud and this
machine (what `launch --dryrun --all-clouds` shows) and sent where the cluster actor would send
it (`choose_target`, then `cloud_spec` on a cloud). The choice is checked against what the
file's resources ask: an accelerator service lands on a catalog instance with one of the
accelerators it names, a pinned cloud or region is kept, spot is spot.

A file that fits `local` (no accelerator, no cloud, no spot, CPUs this machine has) is served for
real: `serve up` of the file as it is, with only `--workdir` given where the file names one of
SkyPilot's example folders (not in the corpus): a folder holding a stand-in `server.py`, a real
HTTP server that answers the file's readiness path on the file's port. The service must reach
READY and answer through its endpoint, then `serve down` removes it.
"""

from __future__ import annotations

import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from stixd.actors.replica_phases import replica_task
from stixd.actors.service_rounds import service_port
from stixd.actors.service_rows import ReplicaSpec
from stixd.actors.service_view import wants_spot
from stixd.planner.from_task import task_request
from stixd.planner.local_fit import local_offer
from stixd.planner.offers import OfferIndex
from stixd.planner.optimizer import plan
from stixd.planner.plans import Candidate
from stixd.planner.target import choose_target, cloud_spec
from stixd.providers.local.netns import unavailable_reason
from stixd.serve.autoscaler import decide
from stixd.serve.seams import ScalerMemory
from stixproto.errors import InvalidTask
from stixproto.task import Task, from_yaml
from stixproto.task.model import ReadinessProbe
from stixproto.task.resources import (
    accelerator_choice,
    candidates,
    cpus_amount,
    memory_amount,
    placement,
)
from stixproto.task.service import effective_scaling
from tests.conftest import Stix, wait_until
from tests.optimizer_support import INFRAS, index
from tests.shared_data import needs, require
from tests.test_serve import serving, status
from tests.test_task_corpus import CORPUS, FILES

__all__ = ["index"]

CLOUDS = ("aws", "azure", "gcp", "nebius", "hyperbolic", "mithril")
"""The clouds with a catalog in ../shared/catalogs (as tests/test_optimizer_corpus.py)."""
MACHINE = INFRAS.machine()
USABLE = tuple(c for c in INFRAS.clouds() if c not in INFRAS.named_only())
"""The clouds this build can launch on, all taken as usable (credentials are not planning)."""


def _service_task(path: Path) -> Task | None:
    parsed = from_yaml(path.read_text(), path.name)
    return parsed if isinstance(parsed, Task) and parsed.service is not None else None


SERVICES = {p.name: t for p in FILES if (t := _service_task(p)) is not None}
NETWORK_SETUP = {
    "examples__serve__authentication__task.yaml": "its setup pip-installs fastapi and uvicorn "
    "from the network, and its server.py needs them",
}
"""Service files that fit this machine but are not run: what they would fetch."""


@dataclass(frozen=True)
class _Replica:
    """What `replica_task` reads of a replica actor: its spec."""

    spec: ReplicaSpec


def replica_tasks(name: str, task: Task) -> list[Task]:
    """The tasks of the replicas the service's first round launches, one per spot kind, as
    the replica actor gives them to its cluster."""
    assert task.service is not None
    port = service_port(task)
    first = decide(
        effective_scaling(task.service),
        [],
        [],
        0.0,
        ScalerMemory(),
        version=1,
        use_spot=wants_spot(task),
    )
    # a service at zero launches nothing at first: plan the replica a wake-up launches
    kinds = sorted({order.spot for order in first.launch} or {wants_spot(task)})
    out = []
    for i, spot in enumerate(kinds, start=1):
        spec = ReplicaSpec(service=name, replica_id=i, version=1, port=port, spot=spot)
        out.append(replica_task(_Replica(spec), task))  # type: ignore[arg-type]
    return out


def _accelerator(text: str) -> tuple[str, float]:
    name, _, count = text.rpartition(":")
    return name.lower(), float(count)


def asks_for(choice: Candidate, task: Task) -> bool:
    """Whether ``choice`` gives what one of the task's resource alternatives asks."""
    for res in candidates(task.resources_or_default()):
        place = placement(res)
        if place.cloud is not None and place.cloud != choice.cloud:
            continue
        if place.region is not None and place.region != choice.region:
            continue
        if place.zone is not None and place.zone not in (choice.zone, *choice.zones):
            continue
        if bool(res.use_spot) != choice.use_spot:
            continue
        accelerators = accelerator_choice(res)
        if accelerators is None:
            if choice.accelerators is not None:
                continue
        else:
            if choice.accelerators is None:
                continue
            given = _accelerator(choice.accelerators)
            if given not in {(a.name.lower(), float(a.count)) for a in accelerators.candidates}:
                continue
        if not _enough(cpus_amount(res), choice.vcpus) or not _enough(
            memory_amount(res), choice.memory_gib
        ):
            continue
        return True
    return False


def _enough(asked: Any, given: float | None) -> bool:
    if asked is None or given is None:
        return True
    return bool(given >= asked.amount if asked.at_least else given == asked.amount)


def runs_here(replica: Task) -> bool:
    """Whether the daemon, with no cloud usable, launches this replica on this machine."""
    try:
        return choose_target(replica, INFRAS, {}, ())[0] == MACHINE
    except InvalidTask:
        return False


def fits_here(task: Task) -> bool:
    return all(runs_here(rt) for rt in replica_tasks("svc", task))


def _params(names: list[str]) -> list[Any]:
    if not names:
        return [pytest.param(None, marks=needs(CORPUS, "compat corpus"), id="corpus-missing")]
    return [pytest.param(name, id=name) for name in names]


def test_the_corpus_has_its_service_files() -> None:
    require(CORPUS, "compat corpus")
    assert len(SERVICES) >= 18, sorted(SERVICES)


@pytest.mark.parametrize("name", _params(sorted(SERVICES)))
def test_every_replica_plans_on_an_instance_with_what_its_resources_ask(
    index: OfferIndex, name: str
) -> None:
    task = SERVICES[name]
    for rt in replica_tasks("svc", task):
        p = plan(
            task_request(rt),
            index,
            enabled_clouds=(*CLOUDS, MACHINE),
            extra_offers={MACHINE: [local_offer(MACHINE)]},
        )
        assert p.chosen is not None, p.no_fit_reason
        assert p.num_nodes == task.num_nodes
        assert asks_for(p.chosen, rt), (p.chosen, rt.resources)
        assert (p.chosen.cloud == MACHINE) is runs_here(rt)  # $0 here wins where it fits


@pytest.mark.parametrize("name", _params(sorted(SERVICES)))
def test_every_replica_goes_where_the_daemon_launches_it_or_is_told_why(
    index: OfferIndex, name: str
) -> None:
    """The cluster actor's own choice: this machine, a cloud's first choice (its instance as the
    resources ask, the service's port opened, spot as ordered), or one line saying why not."""
    task = SERVICES[name]
    port = service_port(task)
    for rt in replica_tasks("svc", task):
        try:
            target, _ = choose_target(rt, INFRAS, {}, USABLE)
        except InvalidTask as exc:
            asked = {placement(r).cloud for r in candidates(rt.resources_or_default())}
            assert any(c and f"'{c}' is not available" in exc.message for c in asked), exc
            continue
        if target == MACHINE:
            continue
        try:
            spec = cloud_spec(rt, target, index)
        except InvalidTask as exc:
            assert exc.message.startswith(f"no {target} instance fits the task"), exc
            continue
        there = plan(task_request(rt), index, enabled_clouds=[target]).chosen
        assert there is not None and spec["placement"]["instance_type"] == there.instance_type
        assert asks_for(there, rt), (there, rt.resources)
        assert port in spec["placement"]["ports"]
        assert spec["placement"]["use_spot"] == bool(rt.resources_or_default().use_spot)


# -- served for real on this machine ------------------------------------------------------------

STAND_IN = """\
import http.server, os, sys

PORT = {port}
READY_PATH = {path!r}
args = sys.argv[1:]
for i, arg in enumerate(args):
    if arg == "--port":
        PORT = int(args[i + 1])
    elif arg.startswith("--port="):
        PORT = int(arg.split("=", 1)[1])


class Handler(http.server.BaseHTTPRequestHandler):
    def _answer(self):
        known = self.path in (READY_PATH, "/")
        body = ("stand-in " + os.environ["SKYPILOT_SERVE_REPLICA_ID"] + " " + self.path).encode()
        self.send_response(200 if known else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = _answer

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._answer()

    def log_message(self, *args):
        pass


# every address: a local node may have one of its own
http.server.ThreadingHTTPServer(("", PORT), Handler).serve_forever()
"""


def readiness_path(task: Task) -> str:
    assert task.service is not None
    probe = task.service.readiness_probe
    if probe is None:
        return "/"
    return probe.path if isinstance(probe, ReadinessProbe) else probe


def _runnable() -> list[Any]:
    names = sorted(n for n, t in SERVICES.items() if fits_here(t))
    params = _params(names)
    return [
        pytest.param(
            *p.values,
            marks=[*p.marks, pytest.mark.skip(reason=NETWORK_SETUP[p.values[0]])],
            id=f"{p.id}-skipped-setup-needs-network",
        )
        if p.values[0] in NETWORK_SETUP
        else p
        for p in params
    ]


def test_the_files_that_fit_this_machine_are_the_cpu_only_examples() -> None:
    require(CORPUS, "compat corpus")
    if (os.cpu_count() or 1) < 2:
        pytest.skip("the examples ask for 2 CPUs")
    fit = {n for n, t in SERVICES.items() if fits_here(t)}
    assert fit == {
        "examples__serve__authentication__task.yaml",
        "examples__serve__http_server__task.yaml",
        "examples__serve__load_balancing_policies_example.yaml",
        "examples__serve__minimal.yaml",
        "examples__serve__misc__cancel__service.yaml",
    }


@pytest.mark.slow
@pytest.mark.parametrize("name", _runnable())
def test_a_service_file_that_fits_this_machine_serves_on_it_unchanged(
    stix: Stix, tmp_path: Path, name: str
) -> None:
    why = unavailable_reason()
    if why is not None:  # the files bind fixed ports: on one shared network they would collide
        pytest.skip(f"local nodes share this machine's network here ({why})")
    task = SERVICES[name]
    path = CORPUS / name
    args = ["serve", "up", "-y", "-n", "corpus", str(path)]
    if task.workdir is not None:
        workdir = tmp_path / "workdir"
        workdir.mkdir()
        server = STAND_IN.format(port=service_port(task), path=readiness_path(task))
        (workdir / "server.py").write_text(server)
        args += ["--workdir", str(workdir)]
    serving(stix)
    stix.run(*args, check=True, timeout=120)
    assert task.service is not None
    count = effective_scaling(task.service).min_replicas

    def ready() -> bool:
        s = status(stix, "corpus")
        live = [r for r in (s or {}).get("replicas", []) if r["status"] == "READY"]
        return s is not None and s["status"] == "READY" and len(live) == count

    wait_until(ready, timeout=120, interval=0.3)
    endpoint = stix.run("serve", "status", "corpus", "--endpoint", check=True).stdout.strip()
    with urllib.request.urlopen(endpoint + readiness_path(task), timeout=10) as resp:
        body = resp.read().decode(errors="replace")
        assert resp.status == 200
    if task.workdir is not None:
        assert body.startswith("stand-in ") and body.endswith(readiness_path(task)), body
    stix.run("serve", "down", "-y", "corpus", check=True, timeout=180)
    wait_until(lambda: status(stix, "corpus") is None, timeout=60)
