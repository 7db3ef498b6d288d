"""What a managed job costs the daemon does not grow with the jobs it already holds (issue 15).

Admitting 10,000 jobs cost 13 times the time of 1,000: the store's statements per job were the same
at both sizes, but every full collection of the cycle collector walked the whole heap, three
million objects at 10,000 jobs, and one came every couple of hundred jobs. The daemon now
freezes what each full collection leaves (stixd/runtime/heap.py). These tests count the
objects a full collection walks, never time.
"""

from __future__ import annotations

import asyncio
import gc
import shutil
import tempfile
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from stixd.runtime.heap import FrozenSurvivors, keep_heap

pytestmark = pytest.mark.anyio


class Held:
    """A long-lived object in a reference cycle, as an actor and its helpers are."""

    def __init__(self) -> None:
        self.me = self
        self.parts: list[Any] = [{}, [], {"x": []}]


@asynccontextmanager
async def kept(growth: float = 2.0) -> AsyncIterator[None]:
    async with anyio.create_task_group() as tg:
        tg.start_soon(keep_heap, growth)
        await anyio.lowlevel.checkpoint()  # its callback is in
        try:
            yield
        finally:
            tg.cancel_scope.cancel()


async def _full_collection() -> int:
    """Run a full collection, let the keeper act on it, and return how many objects it
    walked (those it could see: every tracked object not frozen)."""
    walked = len(gc.get_objects())
    gc.collect()
    for _ in range(3):  # the keeper's freeze is a callback on the event loop
        await anyio.lowlevel.checkpoint()
    return walked


async def _walked_as_the_heap_grows(steps: int, per_step: int) -> list[int]:
    held: list[Held] = []
    walked = []
    for _ in range(steps):
        held += [Held() for _ in range(per_step)]
        walked.append(await _full_collection())
    del held
    return walked


async def test_a_full_collection_walks_what_came_since_the_last_not_the_whole_heap() -> None:
    """Ten steps of 5,000 new long-lived objects, a full collection after each: the last walks
    about as many objects as the second, where without the keeper it walks ten times more."""
    async with kept():
        walked = await _walked_as_the_heap_grows(steps=10, per_step=5000)
    assert gc.get_freeze_count() == 0  # thawed when the keeper stopped
    step = 5000 * 5  # a Held is five tracked objects
    assert max(walked[1:]) < 2 * step, walked  # about one step's, not the ten steps held


async def test_without_the_keeper_a_full_collection_walks_the_whole_heap() -> None:
    """The measure above can fail: the collector alone walks everything, each time."""
    walked = await _walked_as_the_heap_grows(steps=4, per_step=5000)
    step = 5000 * 5
    assert walked[-1] - walked[1] > 1.8 * step, walked  # the two steps held since


async def test_garbage_cycles_frozen_alive_are_collected_once_the_heap_has_doubled() -> None:
    """A cycle that was alive at a full collection is frozen with it; once garbage, it is
    collected at the whole collection that follows the frozen part's doubling."""
    async with kept(growth=2.0):
        cycle = Held()
        gone = weakref.ref(cycle)
        await _full_collection()
        assert gc.get_freeze_count() > 0
        del cycle
        await _full_collection()
        assert gone() is not None  # frozen: the collector does not walk it
        held: list[Held] = []
        for _ in range(20):  # grow until the frozen part has doubled
            if gone() is None:
                break
            held += [Held() for _ in range(gc.get_freeze_count() // 10 + 1)]
            await _full_collection()
        assert gone() is None, "a frozen garbage cycle outlived the heap's doubling"
        del held


async def test_a_collection_on_another_thread_is_frozen_on_the_loop() -> None:
    """The collector runs on whichever thread allocates (the store's, too): the keeper's
    freeze is handed to the event loop, and a closed loop is left alone."""
    keeper = FrozenSurvivors(asyncio.get_running_loop())
    try:
        await anyio.to_thread.run_sync(keeper.collected, "stop", {"generation": 2})
        keeper.collected("stop", {"generation": 1})  # a young collection: nothing to do
        with anyio.fail_after(5):
            while keeper.freezes == 0:
                await anyio.lowlevel.checkpoint()
        assert keeper.freezes == 1 and gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


async def test_the_daemon_freezes_what_a_full_collection_leaves_and_thaws_at_its_stop() -> None:
    """A real daemon in this process: after a full collection its heap is frozen, and a stop
    thaws it all (a daemon run by a test leaves no frozen heap behind)."""
    from stixctl.aclient import acall
    from stixd.config import load_config
    from stixd.daemon import serve
    from stixproto import messages as m
    from stixproto.errors import StixError

    home = Path(tempfile.mkdtemp(prefix="stx", dir="/tmp"))  # a socket path must be short
    try:
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(serve, home, load_config(home, env={}))
                while True:
                    try:
                        await acall(home, m.DaemonStatus(), autostart=False)
                        break
                    except StixError:
                        await anyio.sleep(0.05)
                await _full_collection()
                assert gc.get_freeze_count() > 0
                await acall(home, m.Shutdown(), autostart=False)
        assert gc.get_freeze_count() == 0
    finally:
        gc.unfreeze()
        shutil.rmtree(home, ignore_errors=True)
