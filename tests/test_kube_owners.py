"""Two stix homes (two users, or two daemons) that give a cluster the same name in one
namespace, on the fake API server (tests/kube_fake): each makes, lists, takes down and counts
as leaks only its own pods, a pod of that name another home made is never adopted, and one
home finds its own pods again after a crash."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from stixd.providers.kubernetes import pods
from stixd.providers.kubernetes.owner import FILE, owner_of
from stixd.providers.kubernetes.podspec import (
    LABEL_CLUSTER,
    LABEL_OWNER,
    LABEL_RANK,
    PodPlan,
    manifest,
    pod_name,
)
from stixd.providers.kubernetes.provider import KubernetesProvider
from stixd.providers.kubernetes.records import Where
from stixd.providers.kubernetes.seams import PodRequest
from stixproto.errors import ProvisionError
from tests.kube_fake.process import FakeProcess
from tests.kube_fake.server import CONTEXT
from tests.test_kube_provider import gone, open_provider, pods_of, request

pytestmark = pytest.mark.anyio


@pytest.fixture
async def provider_home(kube: FakeProcess, tmp_path: Path) -> AsyncIterator[KubernetesProvider]:
    made = open_provider(kube, tmp_path)
    try:
        yield made
    finally:
        await made.aclose()


def uids_of(kube: FakeProcess, cluster: str, owner: str) -> set[str]:
    return {
        p["metadata"]["uid"]
        for p in pods_of(kube, cluster)
        if p["metadata"]["labels"].get(LABEL_OWNER) == owner
    }


def test_a_home_keeps_one_owner_id_and_another_home_has_another(tmp_path: Path) -> None:
    first = owner_of(tmp_path / "a")
    assert first == owner_of(tmp_path / "a") and len(first) == 8
    assert owner_of(tmp_path / "b") != first
    (tmp_path / "a" / FILE).write_text("not an id\n")
    with pytest.raises(ProvisionError) as refused:
        owner_of(tmp_path / "a")
    assert "\n" not in refused.value.message and "delete it" in refused.value.message


async def test_two_homes_run_the_same_cluster_name_and_down_of_one_leaves_the_other(
    kube: FakeProcess, tmp_path: Path
) -> None:
    alice = open_provider(kube, tmp_path / "alice")
    bob = open_provider(kube, tmp_path / "bob")
    try:
        hers = await alice.make_pods(request("same", 2))
        his = await bob.make_pods(request("same", 2))
        her_uids = {p["metadata"]["uid"] for p in hers.pods.values()}
        assert not her_uids & {p["metadata"]["uid"] for p in his.pods.values()}
        assert uids_of(kube, "same", alice.owner) == her_uids
        assert len(uids_of(kube, "same", bob.owner)) == 2
        assert len(await alice.query("same")) == len(await bob.query("same")) == 2

        leaks = await alice.leaks(alice.regions(), live=set(), young_s=0)
        assert sorted(x.id.partition("/")[2] for x in leaks) == sorted(hers.pods)

        await bob.terminate("same")
        assert uids_of(kube, "same", bob.owner) == set()
        assert uids_of(kube, "same", alice.owner) == her_uids  # alice's pods run on
        assert all(p["status"]["phase"] == "Running" for p in pods_of(kube, "same"))
        assert len(await alice.query("same")) == 2 and alice.lost_nodes("same") == []
        assert await bob.leaks(bob.regions(), live=set(), young_s=0) == []
    finally:
        await bob.terminate("same")
        await alice.terminate("same")
        await alice.aclose()
        await bob.aclose()
    assert await gone(kube, "same") == []


async def test_a_pod_of_our_name_that_another_home_made_is_refused_not_adopted(
    kube: FakeProcess, tmp_path: Path
) -> None:
    alice = open_provider(kube, tmp_path / "alice")
    name = pod_name("taken", 0, alice.owner)
    foreign = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": {LABEL_CLUSTER: "taken", LABEL_RANK: "0", LABEL_OWNER: "ffffffff"},
        },
        "spec": {"containers": [{"name": "stix", "image": "x", "command": ["sleep", "60"]}]},
    }
    kube.kubectl("apply", "-f", "-", input=json.dumps(foreign))
    uid = kube.kubectl_json("get", "pod", name)["metadata"]["uid"]
    try:
        with pytest.raises(ProvisionError) as refused:
            await alice.make_pods(request("taken"))
        message = refused.value.message
        assert "\n" not in message and name in message and "not this stix home's" in message
        await alice.terminate("taken")
        assert kube.kubectl_json("get", "pod", name)["metadata"]["uid"] == uid  # still theirs
    finally:
        await alice.aclose()
        kube.kubectl("delete", "pod", name, "--ignore-not-found")


async def test_a_create_that_meets_our_own_pod_adopts_it(
    kube: FakeProcess, provider_home: KubernetesProvider
) -> None:
    """Two tries at once, or a retry whose first POST was made but not answered."""
    owner = provider_home.owner
    plan = PodPlan("mine", 0, "default", owner)
    body = manifest(PodRequest(cpus=0.1, memory_gb=0.1), plan, provider_home.config)
    api = await provider_home.api(provider_home.contexts()[0])
    try:
        made = await pods.create(api, "default", body, "mine", owner)
        again = await pods.create(api, "default", body, "mine", owner)
        assert again["metadata"]["uid"] == made["metadata"]["uid"]
        with pytest.raises(ProvisionError, match="not this stix home's"):
            await pods.create(api, "default", body, "mine", "ffffffff")
    finally:
        await pods.delete_cluster(api, "default", "mine", owner)
    assert await gone(kube, "mine") == []


async def test_a_cluster_made_before_owners_is_taken_down_and_not_another_homes(
    kube: FakeProcess, tmp_path: Path
) -> None:
    alice = open_provider(kube, tmp_path / "alice")
    bob = open_provider(kube, tmp_path / "bob")
    old = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "old-0", "labels": {LABEL_CLUSTER: "old", LABEL_RANK: "0"}},
        "spec": {"containers": [{"name": "stix", "image": "x", "command": ["sleep", "60"]}]},
    }
    try:
        await bob.make_pods(request("old"))
        kube.kubectl("apply", "-f", "-", input=json.dumps(old))  # named and labelled as then
        alice.records.place("old", Where(CONTEXT, alice.namespace(CONTEXT), 1))
        await alice.terminate("old")
        assert [p["metadata"]["name"] for p in pods_of(kube, "old")] == names_of(bob, "old")
    finally:
        await bob.terminate("old")
        await alice.aclose()
        await bob.aclose()
        kube.kubectl("delete", "pod", "old-0", "--ignore-not-found")
    assert await gone(kube, "old") == []


def names_of(provider: KubernetesProvider, cluster: str) -> list[str]:
    return [pod_name(cluster, 0, provider.owner)]
