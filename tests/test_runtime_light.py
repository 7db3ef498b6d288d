"""The runtime's light parts keep the runtime's promises: a mailbox that outlives its actor,
timers and helpers that end with it, actors built at boot and run later, typed rows kept once."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import msgspec
import pytest

from stixd.runtime.clock import ManualClock
from stixd.runtime.mailbox import Envelope, Mailbox, reply_channel
from stixd.runtime.supervisor import RestartPolicy, Supervisor
from stixd.store.db import Row, open_store
from tests.test_runtime import LOG, Counter, S

pytestmark = pytest.mark.anyio


def _request(sup: Supervisor, id_: str, payload: Any) -> Any:
    """Tell a request without waiting: its reply stream, to read later."""
    send, receive = reply_channel()
    assert sup.tell("counter", id_, Envelope(payload=payload, reply=send))
    return receive


async def _reply(receive: Any) -> Any:
    with anyio.fail_after(5):
        async with receive:
            async for item in receive:
                return item
    return None


async def test_requests_queued_behind_a_crash_reach_the_successor_in_order(
    tmp_path: Path,
) -> None:
    """Built but not yet run (as every actor at boot), the actor is told a crash and two
    requests after it: the crash is answered with its error, the two others by its successor,
    in the order they were told."""
    async with open_store(tmp_path / "s.db") as store, anyio.create_task_group() as tg:
        sup = Supervisor(tg, store, LOG, RestartPolicy(max_restarts=3, within_seconds=60))
        row = await store.insert(Row(kind="counter", id="c", state="IDLE", version=0), "created")
        sup.spawn(row, lambda r: Counter(r, store, LOG), defer=True)
        crash, work, ping = (_request(sup, "c", p) for p in ("crash", "work", "ping"))
        tg.start_soon(sup.start_deferred)
        first = await _reply(crash)
        assert first.code == "internal" and "asked to crash" in first.message
        assert await _reply(work) == "BUSY"
        assert await _reply(ping) == "BUSY"
        history = [e.event for e in await store.events("counter", "c")]
        assert history == ["created", "restarted", "work"]
        tg.cancel_scope.cancel()


async def test_a_timer_armed_before_a_crash_never_rings_for_the_successor(
    tmp_path: Path,
) -> None:
    clock = ManualClock()
    async with open_store(tmp_path / "s.db") as store, anyio.create_task_group() as tg:
        sup = Supervisor(tg, store, LOG, RestartPolicy(), clock=clock)
        row = await store.insert(Row(kind="counter", id="t", state="IDLE", version=0), "created")
        sup.spawn(row, lambda r: Counter(r, store, LOG))
        assert await _reply(_request(sup, "t", "later")) == "IDLE"  # after("t", 0.05, "work")
        assert await _reply(_request(sup, "t", "later")) == "IDLE"  # the same timer, again
        assert clock.waiting == 1
        reply = await _reply(_request(sup, "t", "crash"))
        assert reply.code == "internal"
        assert clock.waiting == 0  # ended with the actor that armed it
        clock.advance(1)
        assert await _reply(_request(sup, "t", "ping")) == "IDLE"
        stored = await store.get("counter", "t")
        assert stored is not None and stored.state == "IDLE"
        tg.cancel_scope.cancel()


async def test_a_closed_mailbox_refuses_messages_and_wakes_its_reader() -> None:
    box = Mailbox()
    box.put("a")
    assert await box.get() == "a"
    got: list[BaseException] = []

    async def reader() -> None:
        try:
            await box.get()
        except anyio.ClosedResourceError as exc:
            got.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        await anyio.wait_all_tasks_blocked()
        box.close()
    assert len(got) == 1
    with pytest.raises(anyio.ClosedResourceError):
        box.put("b")


async def test_a_mailbox_hands_out_what_is_left_for_an_actor_that_will_not_read_it() -> None:
    box = Mailbox()
    for message in ("a", "b", "c"):
        box.put(message)
    assert await box.get() == "a"
    assert box.take_all() == ["b", "c"] and len(box) == 0


class Spec(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    tags: list[str] = []


class Data(msgspec.Struct, frozen=True, kw_only=True):
    runs: int = 0
    note: str | None = None


class Typed(Counter):
    kind = "typed"
    spec_type = Spec
    data_type = Data

    async def handle(self, message: Any) -> None:
        payload = message.payload if isinstance(message, Envelope) else message
        if payload == "run":
            await self.save(runs=self.data.runs + 1)
        if isinstance(message, Envelope):
            message.answer(self.row)


async def test_a_typed_actor_reads_and_writes_its_row_whole_from_its_structs(
    tmp_path: Path,
) -> None:
    """It keeps its spec and data once, as Structs: its `row` still shows them as stored,
    and a write of one data field stores every field of both (unknown keys are dropped)."""
    async with open_store(tmp_path / "s.db") as store, anyio.create_task_group() as tg:
        sup = Supervisor(tg, store, LOG, RestartPolicy())
        row = await store.insert(
            Row(
                kind="typed",
                id="x",
                state=S.IDLE.value,
                version=0,
                spec={"name": "n", "tags": ["a"], "old_key": 1},
                data={"runs": 2},
            ),
            "created",
        )
        sup.spawn(row, lambda r: Typed(r, store, LOG))
        send, receive = reply_channel()
        assert sup.tell("typed", "x", Envelope(payload="run", reply=send))
        shown = await _reply(receive)
        assert shown.spec == {"name": "n", "tags": ["a"]}
        assert shown.data == {"runs": 3, "note": None}
        stored = await store.get("typed", "x")
        assert stored is not None and stored.version == 2
        assert (stored.spec, stored.data) == (shown.spec, shown.data)
        tg.cancel_scope.cancel()


async def test_cancelling_the_supervisors_group_ends_every_actor_before_it_exits(
    tmp_path: Path,
) -> None:
    async with open_store(tmp_path / "s.db") as store:
        async with anyio.create_task_group() as tg:
            sup = Supervisor(tg, store, LOG, RestartPolicy())
            children = []
            for i in range(50):
                row = await store.insert(
                    Row(kind="counter", id=str(i), state="IDLE", version=0), "created"
                )
                children.append(sup.spawn(row, lambda r: Counter(r, store, LOG)))
            assert await _reply(_request(sup, "49", "ping")) == "IDLE"
            tg.cancel_scope.cancel()
        assert all(child.finished.is_set() for child in children)
        for child in children:
            with pytest.raises(anyio.ClosedResourceError):
                child.mailbox.put("late")


async def test_a_supervising_task_that_fails_fails_the_group(tmp_path: Path) -> None:
    """Not an actor's crash (that is restarted) but the supervisor's own trouble: here the
    store refuses to record the restart. It is not swallowed."""
    async with open_store(tmp_path / "s.db") as store:
        row = await store.insert(Row(kind="counter", id="c", state="IDLE", version=0), "created")

        async def refuse(*args: Any, **kwargs: Any) -> None:
            raise RuntimeError("the store is gone")

        store.record = refuse  # type: ignore[method-assign]
        with pytest.raises(BaseExceptionGroup) as raised, anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                sup = Supervisor(tg, store, LOG, RestartPolicy())
                sup.spawn(row, lambda r: Counter(r, store, LOG))
                sup.tell("counter", "c", "crash")
                await anyio.sleep_forever()
        assert "the store is gone" in repr(raised.value.exceptions)


async def test_the_live_rows_read_in_pages_are_the_live_rows_damaged_flags_included(
    tmp_path: Path,
) -> None:
    async with open_store(tmp_path / "s.db") as store:
        for i in range(25):
            row = await store.insert(Row(kind="k", id=str(i), state="A", version=0), "c")
            if i % 5 == 0:
                await store.update(row, event="end", state="Z", terminal=True)
    with closing(sqlite3.connect(tmp_path / "s.db")) as db, db:
        db.execute("UPDATE actors SET terminal=2 WHERE id='7'")  # neither live nor ended
    async with open_store(tmp_path / "s.db") as store:
        pages = [page async for page in store.live_rows_in_pages(page=6)]
        assert all(0 < len(page) <= 6 for page in pages)
        paged = sorted(row.id for page in pages for row in page)
        assert paged == sorted(row.id for row in await store.live_rows())
        assert "7" in paged and "5" not in paged and len(paged) == 20


class Helped(Counter):
    """A counter whose helpers fail on request, or clean up (shielded) when they end."""

    async def handle(self, message: Any) -> None:
        payload = message.payload if isinstance(message, Envelope) else message
        if payload == "helper-fails":
            self.start_soon(self._fail)
            await anyio.sleep_forever()  # only the helper's failure ends this handler
        elif payload == "helper-waits":
            self.start_soon(self._wait_then_clean_up)
        await super().handle(message)

    async def _fail(self) -> None:
        await anyio.lowlevel.checkpoint()
        raise RuntimeError("the helper broke")

    async def _wait_then_clean_up(self) -> None:
        try:
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):
                await self.store.record(self.kind, self.id, "helper_cleaned_up")


async def test_a_helper_that_fails_ends_its_actor_mid_handler_and_it_restarts(
    tmp_path: Path,
) -> None:
    """As in a task group: the helper's error interrupts the handler its actor is in, and the
    supervisor restarts the actor with that error as the reason; the successor answers."""
    async with open_store(tmp_path / "s.db") as store, anyio.create_task_group() as tg:
        sup = Supervisor(tg, store, LOG, RestartPolicy(max_restarts=3, within_seconds=60))
        row = await store.insert(Row(kind="counter", id="c", state="IDLE", version=0), "created")
        sup.spawn(row, lambda r: Helped(r, store, LOG))
        assert sup.tell("counter", "c", "helper-fails")
        assert await _reply(_request(sup, "c", "ping")) == "IDLE"  # from the successor
        restarts = [e for e in await store.events("counter", "c") if e.event == "restarted"]
        assert [e.why for e in restarts] == ["RuntimeError: the helper broke"]
        tg.cancel_scope.cancel()


async def test_helpers_end_with_their_actor_and_finish_their_shielded_part(
    tmp_path: Path,
) -> None:
    """An actor that finishes cancels the helpers still running, and has ended only once
    each has unwound, shielded cleanup included."""
    async with open_store(tmp_path / "s.db") as store, anyio.create_task_group() as tg:
        sup = Supervisor(tg, store, LOG, RestartPolicy())
        row = await store.insert(Row(kind="counter", id="c", state="IDLE", version=0), "created")
        child = sup.spawn(row, lambda r: Helped(r, store, LOG))
        for payload in ("helper-waits", "work", "finish"):
            assert sup.tell("counter", "c", payload)
        with anyio.fail_after(5):
            await child.finished.wait()
        history = [e.event for e in await store.events("counter", "c")]
        assert history == ["created", "work", "finish", "helper_cleaned_up"]
        tg.cancel_scope.cancel()
