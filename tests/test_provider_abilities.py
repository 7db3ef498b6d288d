"""Abilities checked by type: where the core meets a provider without one it says plainly what
it does (the fake provider, for tests and benchmarks only, has no shell and opens no ports: a
real daemon, the real CLI), and the leak scan asks every provider that finds leaks."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from pathlib import Path

import pytest

from stixd.control import leak_cmds
from stixd.providers.abilities import (
    Closes,
    FindsLeaks,
    HasPools,
    HasShell,
    Leak,
    LeakPolicy,
    LookAbilities,
    LooksUpMany,
    NeedsCredentials,
    OpensPorts,
    ReachedElsewhere,
    ReachesEveryPort,
    ReportsLostNodes,
    ReportsMachines,
    ReportsNodeErrors,
    SimulatesPreemption,
)
from stixd.providers.aws.provider import AwsProvider
from stixd.providers.base import Provider
from stixd.providers.fake.provider import FakeProvider
from stixd.providers.local.provider import LocalProvider
from stixd.providers.ssh.provider import SshProvider
from tests.app_support import app_on_store
from tests.conftest import Stix
from tests.test_managed_jobs_fake import fake_daemon


def test_stixctl_ssh_into_a_fake_cluster_says_its_nodes_have_no_shell(
    stix: Stix, task_file: Callable[[str], Path]
) -> None:
    fake_daemon(stix)
    path = task_file("resources:\n  infra: fake\nrun: echo hi\n")
    stix.run("launch", "-d", "-y", "-c", "nosh", str(path), check=True)
    for argv in (("ssh", "nosh"), ("ssh", "nosh", "hostname")):
        out = stix.run(*argv)
        assert out.returncode == 2, out.stderr
        assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
        assert "cluster 'nosh' runs on fake, whose nodes have no shell to log in to" in out.stderr
        assert "stixctl logs nosh" in out.stderr
        assert out.stdout == ""
    assert stix.clusters()["nosh"]["status"] == "UP"  # the refusal touched nothing
    assert "AttributeError" not in (stix.home / "stixd.log").read_text()


def test_a_fake_launch_with_ports_says_they_are_not_opened_and_lists_only_those(
    stix: Stix, task_file: Callable[[str], Path]
) -> None:
    fake_daemon(stix)
    path = task_file("resources:\n  infra: fake\n  ports: 8080\nrun: echo hi\n")
    out = stix.run("launch", "-d", "-y", "-c", "web", str(path), check=True)
    assert "Ports not opened: fake cannot open ports: 8080 are reachable only" in (
        out.stdout + out.stderr
    )
    record = stix.clusters()["web"]
    assert record["ports"] == [8080] and record["any_port"] is False
    other = stix.run("status", "web", "--endpoint", "5555")
    assert other.returncode == 1 and "endpoint 5555 not found" in other.stderr


class LeakFinder(LocalProvider):
    """A provider standing in for a cloud that lists what it made (labelled: no cloud runs
    here but moto's, which tests/test_aws_e2e.py covers); it records what it was asked."""

    def __init__(self, name: str, leaks: list[Leak], problem: str | None = None) -> None:
        super().__init__(Path("/nonexistent"))
        self.name = name
        self.found = leaks
        self.problem = problem
        self.asked: list[tuple[list[str], set[str], float]] = []
        self.cleaned: list[str] = []

    def credentials_problem(self) -> str | None:
        return self.problem

    def leak_policy(self) -> LeakPolicy:
        return LeakPolicy(check_every_s=3600.0, min_age_s=42.0, terminate=False)

    def regions(self) -> list[str]:
        return [f"{self.name}-west"]

    async def leaks(
        self, regions: Sequence[str], live: Collection[str], young_s: float
    ) -> list[Leak]:
        self.asked.append((list(regions), set(live), young_s))
        return [leak for leak in self.found if leak.cluster not in live]

    async def clean_leaks(self, leaks: Sequence[Leak]) -> None:
        self.cleaned += [leak.id for leak in leaks]


@pytest.mark.anyio
async def test_a_leak_scan_asks_every_provider_that_finds_leaks(tmp_path: Path) -> None:
    one = LeakFinder("one", [Leak("instance", "i-1", "one-west", "ghost")])
    two = LeakFinder(
        "two",
        [Leak("instance", "i-2", "two-west", "gone"), Leak("instance", "i-3", "two-west", "x")],
    )
    locked = LeakFinder("locked", [Leak("instance", "i-4", "locked-west", "y")], "no keys")
    assert all(isinstance(p, FindsLeaks) for p in (one, two, locked))
    providers: dict[str, Provider] = {
        "local": LocalProvider(tmp_path),
        "one": one,
        "two": two,
        "locked": locked,
    }
    async with app_on_store(tmp_path, providers=providers) as app:
        found = await leak_cmds.scan(app, terminate=True, only=["i-2"])
    assert sorted((r.infra, r.id) for r in found.leaks) == [
        ("one", "i-1"),
        ("two", "i-2"),
        ("two", "i-3"),
    ]
    assert found.terminated == ["i-2"] and two.cleaned == ["i-2"] and one.cleaned == []
    assert found.skipped == ["locked: no keys"] and locked.asked == []
    assert one.asked == [(["one-west"], set(), 42.0)]  # its regions, its policy's age
    assert app.leak_report is not None
    assert sorted(r.id for r in app.leak_report.leaks) == ["i-1", "i-3"]


ABILITIES = (
    HasShell,
    HasPools,
    ReportsLostNodes,
    ReportsMachines,
    ReportsNodeErrors,
    LooksUpMany,
    NeedsCredentials,
    FindsLeaks,
    OpensPorts,
    ReachesEveryPort,
    ReachedElsewhere,
    Closes,
    SimulatesPreemption,
)


def test_each_provider_has_the_abilities_it_declares_and_no_other(tmp_path: Path) -> None:
    declared: dict[Provider, set[type]] = {
        LocalProvider(tmp_path): {HasShell, ReachesEveryPort},
        SshProvider(tmp_path, {}): {
            HasShell,
            HasPools,
            ReportsNodeErrors,
            ReachedElsewhere,
            Closes,
        },
        AwsProvider(tmp_path, env={}): {
            HasShell,
            ReportsLostNodes,
            ReportsMachines,
            ReportsNodeErrors,
            LooksUpMany,
            NeedsCredentials,
            FindsLeaks,
            OpensPorts,
            ReachedElsewhere,
            Closes,
        },
        FakeProvider(["fake-1"], build="b"): {ReportsLostNodes, LooksUpMany, SimulatesPreemption},
    }
    for provider, abilities in declared.items():
        has = {a for a in ABILITIES if isinstance(provider, a)}
        assert has == abilities, provider.name


def test_a_providers_look_abilities_are_what_isinstance_says(tmp_path: Path) -> None:
    """The health check's abilities (and `status`'s every-port one), found once per provider,
    are the provider itself where it has the ability and None where it has not."""
    aws = AwsProvider(tmp_path, env={})
    found = LookAbilities.of(aws)
    assert (found.machines, found.lost, found.errors, found.many) == (aws, aws, aws, aws)
    fake = FakeProvider(["fake-1"], build="b")
    found = LookAbilities.of(fake)
    assert (found.machines, found.lost, found.errors, found.many) == (None, fake, None, fake)
    ssh = SshProvider(tmp_path, {})
    assert LookAbilities.of(ssh) == LookAbilities(machines=None, lost=None, errors=ssh)
    local = LocalProvider(tmp_path)  # its nodes are this machine: every port is reached
    assert LookAbilities.of(local) == LookAbilities(None, None, None, every_port=True)
    assert not LookAbilities.of(aws).every_port and not LookAbilities.of(ssh).every_port
