"""Lists in pages: a context with many pods is read with ``limit`` and ``continue`` (the fake
cuts pages as the API server does, proven by kubectl's ``--chunk-size`` and
kubernetes-asyncio), a continue token that expired starts the list over once, and an answer
larger than stix reads fails that one call in one line."""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest

from stixd.providers.kubernetes.api import KubeApi, KubeApiError, path
from stixd.providers.kubernetes.contexts import Clients, read_kubeconfig
from stixd.providers.kubernetes.nodes import list_nodes
from tests.kube_fake.process import FakeProcess
from tests.kube_fake.server import CONTEXT

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="needs kubectl")

CROWD = "crowd"
MANY = 230
ASKING_GPUS = (0, 115, MANY - 1)
"""The crowd's pods that ask one GPU each: on the first, a middle and the last page."""
T = TypeVar("T")


def crowd_pod(i: int) -> dict[str, Any]:
    """A pod bound to gpu-1 by ``nodeName`` that no kubelet of the fake starts (Pending as a
    pod whose node has not started it yet): many of them cost no process."""
    limits = {"nvidia.com/gpu": "1"} if i in ASKING_GPUS else {}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"p{i:03d}", "labels": {"crowd": "yes"}},
        "spec": {
            "nodeName": "gpu-1",
            "containers": [{"name": "main", "image": "x", "resources": {"limits": limits}}],
        },
    }


def with_api(fake: FakeProcess, use: Callable[[KubeApi], Awaitable[T]], **knobs: Any) -> T:
    async def main() -> T:
        config = read_kubeconfig({"KUBECONFIG": str(fake.kubeconfig)})
        clients = Clients(config, fake.workdir / "certs")
        try:
            return await use(KubeApi(await clients.client(CONTEXT), CONTEXT, **knobs))
        finally:
            await clients.aclose()

    return asyncio.run(main())


def counted(api: KubeApi, after: Callable[[int], None] = lambda n: None) -> list[dict[str, str]]:
    """The queries of ``api``'s calls from now on; ``after(n)`` runs once the n-th answered."""
    queries: list[dict[str, str]] = []
    real = api.call

    async def call(method: str, where: str, **kw: Any) -> dict[str, Any]:
        queries.append(dict(kw.get("query") or {}))
        answer = await real(method, where, **kw)
        await asyncio.to_thread(after, len(queries))
        return answer

    api.call = call  # type: ignore[method-assign]
    return queries


BUMPS = itertools.count()


def bump_and_compact(fake: FakeProcess, n: int = 0) -> None:
    """A write, then etcd's compaction: a list begun before is no longer consistent."""
    fake.kubectl("create", "namespace", f"bump-{next(BUMPS)}")
    fake.admin("compact")


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeProcess]:
    async def fill(api: KubeApi) -> None:
        where = path("namespaces", CROWD, "pods")
        for start in range(0, MANY, 50):
            batch = range(start, min(start + 50, MANY))
            await asyncio.gather(*(api.call("POST", where, body=crowd_pod(i)) for i in batch))

    with FakeProcess(tmp_path_factory.mktemp("kube-paging")) as made:
        made.kubectl("create", "namespace", CROWD)
        with_api(made, fill)
        yield made


def test_kubectl_reads_the_crowd_in_pages_of_its_chunk_size(fake: FakeProcess) -> None:
    done = fake.kubectl("get", "pods", "-n", CROWD, "--chunk-size=50", "-o", "name", "-v=6")
    assert done.stdout.split() == [f"pod/p{i:03d}" for i in range(MANY)]
    asked = [line for line in done.stderr.splitlines() if f"/namespaces/{CROWD}/pods" in line]
    assert len(asked) == 5 and all("limit=50" in line for line in asked), asked
    assert sum("continue=" in line for line in asked) == 4, asked
    table = fake.kubectl("get", "pods", "-n", CROWD, "--chunk-size=100", "--no-headers")
    assert len(table.stdout.splitlines()) == MANY


def test_kubernetes_asyncio_follows_continue_and_a_compaction_expires_its_token(
    fake: FakeProcess,
) -> None:
    k8s = pytest.importorskip("kubernetes_asyncio")

    async def main() -> tuple[list[int], list[Any], Any, list[str]]:
        await k8s.config.load_kube_config(config_file=str(fake.kubeconfig))
        async with k8s.client.ApiClient() as api:
            v1 = k8s.client.CoreV1Api(api)
            sizes, remaining, token, names = [], [], None, []
            while True:
                page = await v1.list_namespaced_pod(CROWD, limit=60, _continue=token)
                sizes.append(len(page.items))
                remaining.append(page.metadata.remaining_item_count)
                names += [p.metadata.name for p in page.items]
                token = page.metadata._continue
                if not token:
                    break
            first = await v1.list_namespaced_pod(CROWD, limit=60, label_selector="crowd=yes")
            await asyncio.to_thread(bump_and_compact, fake, 0)
            with pytest.raises(k8s.client.ApiException) as expired:
                await v1.list_namespaced_pod(CROWD, limit=60, _continue=first.metadata._continue)
            status = json.loads(expired.value.body)  # its token goes on, from the latest state
            rest = await v1.list_namespaced_pod(CROWD, _continue=status["metadata"]["continue"])
            names_after = [p.metadata.name for p in rest.items]
            assert names_after == [f"p{i:03d}" for i in range(60, MANY)]
            return sizes, remaining, (first, expired.value), names

    sizes, remaining, (first, expired), names = asyncio.run(main())
    assert sizes == [60, 60, 60, 50] and names == [f"p{i:03d}" for i in range(MANY)]
    assert remaining == [170, 110, 50, None]
    assert first.metadata.remaining_item_count is None  # not said with a selector, as a server
    status = json.loads(expired.body)
    assert (expired.status, status["reason"], status["code"]) == (410, "Expired", 410)
    assert "too old to display a consistent list" in status["message"]


def test_stix_lists_every_pod_of_a_crowded_context_in_pages(fake: FakeProcess) -> None:
    async def use(api: KubeApi) -> tuple[list[str], list[dict[str, str]], int | None]:
        queries = counted(api)
        listed = await api.list_all(path("namespaces", CROWD, "pods"))
        names = [p["metadata"]["name"] for p in listed["items"]]
        paged = list(queries)
        gpu = [n for n in await list_nodes(api) if n.name == "gpu-1"]
        return names, paged, gpu[0].gpus_requested

    names, queries, requested = with_api(fake, use, page_size=50)
    assert names == [f"p{i:03d}" for i in range(MANY)]
    assert [q["limit"] for q in queries] == ["50"] * 5
    assert ["continue" in q for q in queries] == [False, True, True, True, True]
    assert requested == len(ASKING_GPUS)  # counted across every page of every namespace


def test_an_expired_continue_token_starts_the_list_over_once(fake: FakeProcess) -> None:
    async def once(api: KubeApi) -> tuple[int, list[dict[str, str]]]:
        queries = counted(api, lambda n: bump_and_compact(fake, n) if n == 2 else None)
        listed = await api.list_all(path("namespaces", CROWD, "pods"))
        return len(listed["items"]), queries

    found, queries = with_api(fake, once, page_size=100)
    assert found == MANY
    started = [q for q in queries if "continue" not in q]
    assert len(started) == 2, queries  # the first list, and the one after the 410

    async def always(api: KubeApi) -> str:
        counted(api, lambda n: bump_and_compact(fake, n))
        with pytest.raises(KubeApiError) as failed:
            await api.list_all(path("namespaces", CROWD, "pods"))
        return failed.value.message

    said = with_api(fake, always, page_size=100)
    assert len(said.splitlines()) == 1 and CONTEXT in said and "expired twice" in said


def test_an_answer_larger_than_the_cap_fails_that_call_alone_in_one_line(
    fake: FakeProcess,
) -> None:
    async def use(api: KubeApi) -> tuple[str, int]:
        with pytest.raises(KubeApiError) as failed:
            await api.list_all(path("namespaces", CROWD, "pods"))
        api.max_bytes = 2**20  # the same API, a page within the cap: served again
        return failed.value.message, len((await api.list_all(path("nodes")))["items"])

    said, nodes = with_api(fake, use, page_size=500, max_bytes=64 * 1024)
    assert len(said.splitlines()) == 1 and CONTEXT in said, said
    assert "answered more than 64 KiB" in said, said
    assert nodes == 4
