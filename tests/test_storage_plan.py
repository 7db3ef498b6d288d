"""A task's bucket mounts resolved as SkyPilot resolves them (stixd/storage/plan.py), and the
storage actor's transition table."""

from __future__ import annotations

from pathlib import Path

import pytest

from stixd.actors.storage import STORAGE_TRANSITIONS, SV
from stixd.storage.plan import MountPlan, plan_mounts
from stixproto.errors import InvalidTask
from stixproto.states import StorageStatus as S
from stixproto.task import Task


def plans(text: str, configured: tuple[str, ...] = ()) -> list[MountPlan]:
    return plan_mounts(Task.from_yaml(text), cluster="c1", configured=configured)


def test_uri_shorthand_copies_an_existing_bucket_it_never_owns() -> None:
    [p] = plans("file_mounts:\n  /data: s3://some-bucket/sub/dir\n")
    spec = p.storage
    assert (p.dest, spec.store, spec.bucket, spec.prefix) == (
        "/data",
        "s3",
        "some-bucket",
        "sub/dir",
    )
    assert spec.external and spec.mode == "COPY" and spec.persistent


def test_azure_https_and_gs_uris_name_their_store() -> None:
    got = plans(
        "file_mounts:\n  /a: https://acct.blob.core.windows.net/cont/x\n  /g: gs://gbucket\n"
    )
    assert [(p.storage.store, p.storage.bucket, p.storage.prefix) for p in got] == [
        ("azure", "cont", "x"),
        ("gcs", "gbucket", ""),
    ]


def test_store_absent_follows_the_task_cloud_then_the_first_configured_then_s3(
    tmp_path: Path,
) -> None:
    mount = f"file_mounts:\n  /d:\n    name: bkt-one\n    source: {tmp_path}\n"
    assert plans(mount)[0].storage.store == "s3"
    assert plans(mount, ("gcs", "azure"))[0].storage.store == "gcs"
    on_azure = mount + "resources:\n  cloud: azure\n"
    assert plans(on_azure, ("gcs", "azure"))[0].storage.store == "azure"
    assert plans(on_azure, ("gcs",))[0].storage.store == "gcs"  # azure not set up here


def test_named_storage_defaults_and_a_list_source_lands_under_each_name(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    [p] = plans(
        "file_mounts:\n  /d:\n    name: bkt-two\n"
        f"    source: [{tmp_path / 'a'}, {tmp_path / 'b'}]\n"
        "    config:\n      mount_cached:\n        vfs_cache_max_size: 10G\n        transfers: 8\n"
    )
    spec = p.storage
    assert spec.mode == "MOUNT" and spec.persistent and not spec.external and spec.nested
    assert spec.sources == [str(tmp_path / "a"), str(tmp_path / "b")]
    assert spec.mount_cached == {"--vfs-cache-max-size": "10G", "--transfers": "8"}


def test_a_nameless_local_source_gets_a_stable_bucket_name(tmp_path: Path) -> None:
    text = f"file_mounts:\n  /d:\n    source: {tmp_path}\n    mode: COPY\n"
    first, again = plans(text)[0].storage, plans(text)[0].storage
    assert first.bucket == again.bucket and first.bucket.startswith("stix-filemounts-c1-")


@pytest.mark.parametrize(
    ("mount", "says"),
    [
        ("/d: oci://b", "not supported by this build"),
        ("/d:\n    name: Bad_Name\n    mode: COPY", "bucket name 'Bad_Name' is not valid"),
        ("/d:\n    name: bkt-x\n    source: /no/such/dir", "is not a folder on this machine"),
        (
            "/d:\n    name: bkt-x\n    config:\n      mount_cached:\n        nope: 1",
            "unknown setting",
        ),
        (
            "/d:\n    name: bkt-x\n    config:\n      mount_cached:\n        transfers: 1; rm",
            "expected a number or size",
        ),
        ("/d:\n    source: s3://b-one\n    store: gcs", "does not match the source"),
    ],
)
def test_mounts_stix_cannot_plan_are_refused_in_one_line(mount: str, says: str) -> None:
    with pytest.raises(InvalidTask) as caught:
        plans(f"file_mounts:\n  {mount}\n")
    assert says in caught.value.message and "\n" not in caught.value.message


def test_the_storage_transition_table_is_exactly_skypilots_states_plus_deleting() -> None:
    settled = (S.READY, S.INIT_FAILED, S.UPLOAD_FAILED)
    expected = {
        **{(s, SV.SYNC): S.INIT for s in settled},
        (S.INIT, SV.READY): S.READY,
        (S.INIT, SV.INIT_FAILED): S.INIT_FAILED,
        (S.INIT, SV.UPLOAD_FAILED): S.UPLOAD_FAILED,
        **{(s, SV.DELETE): S.DELETING for s in (S.INIT, *settled)},
    }
    for state in S:
        for event in SV:
            assert STORAGE_TRANSITIONS.get((state, event)) == expected.get((state, event))


@pytest.mark.parametrize("key", ["../escape.txt", "a/../../b", "/etc/passwd", "", "a/./b"])
def test_the_agent_refuses_an_object_key_that_would_leave_the_mount(key: str) -> None:
    from stixd.agent.fetch import parse_items
    from stixd.agent.protocol import RequestError

    with pytest.raises(RequestError) as caught:
        parse_items({"dest": "/tmp/m", "items": [[key, "http://127.0.0.1:1/x"]]})
    assert caught.value.code == "bad_request"


@pytest.mark.anyio
async def test_the_agent_fetches_signed_urls_into_place(tmp_path: Path) -> None:
    import http.server
    import threading

    from stixd.agent.fetch import fetch

    served = tmp_path / "served"
    (served / "o").mkdir(parents=True)
    (served / "o" / "1.txt").write_text("one")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    def handler(*args: object) -> Quiet:
        return Quiet(*args, directory=str(served))  # type: ignore[arg-type]

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/o/1.txt"
        dest = tmp_path / "mnt"
        got = await fetch({"dest": str(dest), "items": [["deep/x.txt", url]], "workers": 2})
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    assert got == {"files": 1, "bytes": 3}
    assert (dest / "deep" / "x.txt").read_text() == "one"
    assert [p.name for p in (dest / "deep").iterdir()] == ["x.txt"]  # no partial file left
