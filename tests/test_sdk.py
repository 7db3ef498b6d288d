"""The Python SDK drives the same daemon as the CLI, sync and async."""

from __future__ import annotations

import pytest

from stixctl.sdk import AsyncClient, Client
from stixproto.task import Resources, Task
from tests.conftest import Stix, wait_until


def test_sync_client_launch_logs_queue_down(stix: Stix, task_file) -> None:
    client = Client(stix.home)
    task = Task(name="sdk", run="echo from-sdk $SKYPILOT_NODE_RANK", resources=Resources(cpus="1+"))
    result = client.launch(task, "sdk", detach=False)
    assert result.cluster == "sdk" and result.job_id == 1 and result.job_status == "SUCCEEDED"
    assert "".join(client.logs("sdk", 1)) == "from-sdk 0\n"
    by_file = client.exec("sdk", task_file("run: echo from-file\n"))
    wait_until(lambda: client.job_status("sdk", by_file.job_id) == "SUCCEEDED")
    by_cmd = client.exec("sdk", "sleep 30")
    assert by_cmd.job_id is not None
    wait_until(lambda: client.job_status("sdk", by_cmd.job_id) == "RUNNING")
    assert client.cancel("sdk", [by_cmd.job_id]) == [3]
    [record] = client.status()
    assert record.name == "sdk" and record.status == "UP"
    jobs = {j.job_id: j.status for j in client.queue("sdk")}
    assert jobs[1] == "SUCCEEDED" and jobs[2] == "SUCCEEDED"
    wait_until(lambda: client.job_status("sdk", 3) == "CANCELLED")
    client.down("sdk")
    assert client.status() == []


@pytest.mark.anyio
async def test_async_client_does_the_same(stix: Stix) -> None:
    client = AsyncClient(stix.home)
    result = await client.launch(Task(run="echo async-one; echo async-two"), "asdk", detach=False)
    assert result.job_status == "SUCCEEDED"
    chunks = [c async for c in client.logs("asdk", result.job_id, follow=True)]
    assert "".join(chunks).split() == ["async-one", "async-two"]
    assert [c.name for c in await client.status()] == ["asdk"]
    assert (await client.queue("asdk"))[0].status == "SUCCEEDED"
    assert await client.job_status("asdk") == "SUCCEEDED"
    await client.stop("asdk")
    assert (await client.status())[0].status == "STOPPED"
    await client.down("asdk")
    assert await client.status() == []
