"""A bug of ours in one connection is logged once and contained; the server keeps serving.

The socket server runs in-process on a real Unix socket with a dispatch that fails as a bug
would (nothing else of the daemon is needed to show this), so the failure can be chosen.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import msgspec
import pytest

from stixd.config import load_config
from stixd.control.server import ControlServer
from stixd.logs import make_logger
from stixproto import PROTOCOL_VERSION
from stixproto import messages as m
from stixproto.framing import decode, encode, recv_frame

pytestmark = pytest.mark.anyio
_decoder = msgspec.msgpack.Decoder(m.ServerMessage)


def _ask(path: Path, request: Any) -> Any:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(path))
        s.sendall(encode(m.Hello(protocol=PROTOCOL_VERSION)))
        assert isinstance(decode(recv_frame(s) or b"", _decoder), m.HelloOk)
        s.sendall(encode(request))
        return decode(recv_frame(s) or b"", _decoder)


async def test_a_failing_request_is_logged_once_and_the_next_one_is_served(
    tmp_path: Path,
) -> None:
    log, stream = make_logger(tmp_path / "stixd.log")
    app: Any = SimpleNamespace(
        log=log, config=load_config(tmp_path, env={}), shutdown=anyio.Event()
    )

    async def dispatch(app: Any, request: Any, emit: Any) -> Any:
        if request.clusters == ["bug"]:
            raise RuntimeError("a bug of ours")
        if request.clusters == ["deep"]:
            raise RecursionError("maximum recursion depth exceeded")
        return m.OkReply(message="served")

    path = tmp_path / "s.sock"
    async with anyio.create_task_group() as tg:
        await tg.start(ControlServer(app, path, dispatch).serve)
        for name in ("bug", "deep"):
            reply = await anyio.to_thread.run_sync(_ask, path, m.Status(clusters=[name]))
            assert isinstance(reply, m.ErrorReply) and reply.code == "internal"
        reply = await anyio.to_thread.run_sync(_ask, path, m.Status(clusters=["ok"]))
        assert reply == m.OkReply(message="served")
        tg.cancel_scope.cancel()
    stream.close()
    lines = [json.loads(line) for line in (tmp_path / "stixd.log").read_text().splitlines()]
    failed = [e for e in lines if e["event"] == "request_failed"]
    assert len(failed) == 2
    assert "a bug of ours" in failed[0]["exception"]
    assert "RecursionError" in failed[1]["exception"]
