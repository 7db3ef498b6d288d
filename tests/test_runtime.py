"""The actor runtime on a real SQLite file: versioned writes, restarts, intensity, timers."""

from __future__ import annotations

import enum
import sqlite3
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import structlog

from stixd.runtime.actor import Actor
from stixd.runtime.clock import ManualClock
from stixd.runtime.machine import Machine
from stixd.runtime.mailbox import Envelope, reply_channel
from stixd.runtime.supervisor import GIVEN_UP_WITHIN_S, RestartPolicy, Supervisor
from stixd.runtime.watch import RowWatch
from stixd.store.db import MIGRATIONS, Row, RowExists, StaleWrite, open_store
from stixproto.errors import InvalidRequest
from tests.conftest import OpenStore

pytestmark = pytest.mark.anyio
LOG: Any = structlog.wrap_logger(structlog.ReturnLogger())


class S(enum.Enum):
    IDLE = "IDLE"
    BUSY = "BUSY"
    DONE = "DONE"


class Ev(enum.Enum):
    WORK = "work"
    FINISH = "finish"


class Counter(Actor):
    """A test actor: counts messages, crashes on request, finishes on 'finish'."""

    kind = "counter"
    machine = Machine("counter", {(S.IDLE, Ev.WORK): S.BUSY, (S.BUSY, Ev.FINISH): S.DONE})
    state_type = S
    reconciles = 0

    @staticmethod
    def is_terminal(state: Any) -> bool:
        return state is S.DONE

    async def reconcile(self) -> None:
        type(self).reconciles += 1

    async def handle(self, message: Any) -> None:
        payload = message.payload if isinstance(message, Envelope) else message
        if payload == "crash":
            raise RuntimeError("asked to crash")
        if payload == "work":
            await self.transition(Ev.WORK, "told to")
        elif payload == "finish":
            await self.transition(Ev.FINISH, "told to")
        elif payload == "later":
            self.after("t", 0.05, "work")
        if isinstance(message, Envelope):
            message.answer(self.row.state)


async def test_conditional_writes_refuse_a_stale_version(open_any: OpenStore) -> None:
    async with open_any() as store:
        row = await store.insert(Row(kind="k", id="a", state="IDLE", version=0), "created")
        newer = await store.update(row, event="work", state="BUSY")
        assert newer.version == row.version + 1
        with pytest.raises(StaleWrite):
            await store.update(row, event="other", state="DONE")
        with pytest.raises(RowExists):
            await store.insert(Row(kind="k", id="a", state="IDLE", version=0), "created")
        events = await store.events("k", "a")
        assert [(e.event, e.from_state, e.to_state) for e in events] == [
            ("created", None, "IDLE"),
            ("work", "IDLE", "BUSY"),
        ]
    # reopening runs no migration twice and keeps everything
    async with open_any() as store:
        got = await store.get("k", "a")
        assert got is not None and got.state == "BUSY" and got.version == 2


def test_the_sqlite_store_is_at_the_last_schema_and_in_wal_mode(tmp_path: Path) -> None:
    async def twice() -> None:
        for _ in range(2):
            async with open_store(tmp_path / "s.db"):
                pass

    anyio.run(twice)
    with sqlite3.connect(tmp_path / "s.db") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_a_refused_write_never_undoes_a_concurrent_one(open_any: OpenStore) -> None:
    """Writers share one connection: a duplicate insert or a stale update rolls back only
    itself, even when other actors' writes are in flight at the same moment."""
    async with open_any() as store:
        stale = await store.insert(Row(kind="k", id="s", state="A", version=0), "created")
        await store.update(stale, event="moved", state="B")
        refused: list[str] = []

        async def insert(i: int) -> None:
            try:
                await store.insert(Row(kind="k", id=str(i % 25), state="A", version=0), "c")
            except RowExists:
                refused.append("dup")

        async def update_stale() -> None:
            try:
                await store.update(stale, event="late", state="C")
            except StaleWrite:
                refused.append("stale")

        async with anyio.create_task_group() as tg:
            for i in range(50):
                tg.start_soon(insert, i)
                if i % 5 == 0:
                    tg.start_soon(update_stale)
        assert refused.count("dup") == 25 and refused.count("stale") == 10
        assert sorted(int(r.id) for r in await store.rows("k") if r.id != "s") == list(range(25))
        got = await store.get("k", "s")
        assert got is not None and got.state == "B"


async def test_a_write_cancelled_midway_is_whole_or_absent_and_spares_the_others(
    open_any: OpenStore,
) -> None:
    """Writers cancelled at every point of their write (deadlines spread over the time a write
    takes) leave each row with its event or not at all, and never a half-write that the next
    writer's commit would complete."""
    async with open_any() as store:

        async def insert(kind: str, i: int, deadline: float | None) -> None:
            with anyio.move_on_after(deadline):
                await store.insert(Row(kind=kind, id=str(i), state="A", version=0), "created")

        for i in range(150):  # one at a time: each deadline falls at its own point of a write
            await insert("cut", i, i * 0.00003)
            await insert("kept", i, None)
        kept = await store.rows("kept")
        assert sorted(int(r.id) for r in kept) == list(range(150))
        for row in await store.rows("cut"):
            assert [e.event for e in await store.events("cut", row.id, 10)] == ["created"]


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "s.db") as db:
        db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(RuntimeError, match="newer stix"):
        async with open_store(tmp_path / "s.db"):
            pass


async def _ask(sup: Supervisor, id_: str, payload: Any) -> Any:
    send, receive = reply_channel()
    assert sup.tell("counter", id_, Envelope(payload=payload, reply=send))
    async with receive:
        async for item in receive:
            return item
    return None


async def test_crashed_actor_restarts_from_its_row_and_keeps_its_mailbox(tmp_path: Path) -> None:
    Counter.reconciles = 0
    async with open_store(tmp_path / "s.db") as store, anyio.create_task_group() as tg:
        sup = Supervisor(tg, store, LOG, RestartPolicy(max_restarts=3, within_seconds=60))
        row = await store.insert(Row(kind="counter", id="c", state="IDLE", version=0), "created")
        sup.spawn(row, lambda r: Counter(r, store, LOG))
        reply = await _ask(sup, "c", "crash")
        assert reply.code == "internal" and "asked to crash" in reply.message
        assert await _ask(sup, "c", "work") == "BUSY"  # the successor read the mailbox
        assert Counter.reconciles == 2  # every (re)start reconciles first
        history = [e.event for e in await store.events("counter", "c")]
        assert history == ["created", "restarted", "work"]
        assert await _ask(sup, "c", "finish") == "DONE"
        with anyio.fail_after(5):
            while sup.get("counter", "c") is not None:
                await anyio.sleep(0.01)  # a finished actor leaves the supervisor
        tg.cancel_scope.cancel()


async def test_too_many_crashes_mark_the_actor_failed_with_the_reason(tmp_path: Path) -> None:
    async with open_store(tmp_path / "s.db") as store, anyio.create_task_group() as tg:
        sup = Supervisor(tg, store, LOG, RestartPolicy(max_restarts=2, within_seconds=60))
        row = await store.insert(Row(kind="counter", id="c", state="IDLE", version=0), "created")
        child = sup.spawn(row, lambda r: Counter(r, store, LOG))
        for _ in range(3):
            await _ask(sup, "c", "crash")
        with anyio.fail_after(5):
            await child.finished.wait()
        assert child.failed and "crashed 3 times" in child.failed
        assert "asked to crash" in child.failed
        assert not sup.tell("counter", "c", "work")
        events = await store.events("counter", "c")
        assert [e.event for e in events[-2:]] == ["failed", "quarantined"]
        assert "asked to crash" in events[-1].why
        stored = await store.get("counter", "c")  # kept aside across daemon restarts too
        assert stored is not None and stored.quarantined == child.failed
        tg.cancel_scope.cancel()


async def test_a_timer_fires_when_its_time_comes_on_the_supervisors_clock(
    tmp_path: Path,
) -> None:
    clock = ManualClock()
    async with open_store(tmp_path / "s.db") as store, anyio.create_task_group() as tg:
        watch = RowWatch(store)
        sup = Supervisor(tg, store, LOG, RestartPolicy(), clock=clock)
        row = await store.insert(Row(kind="counter", id="t", state="IDLE", version=0), "created")
        sup.spawn(row, lambda r: Counter(r, store, LOG))
        sup.tell("counter", "t", "later")  # after("t", 0.05, "work")
        with anyio.fail_after(5):
            await clock.until_waiting()
        clock.advance(0.04)
        assert clock.waiting == 1  # not yet due: still armed
        assert await _ask(sup, "t", "ping") == "IDLE"
        clock.advance(0.01)
        with anyio.fail_after(5):
            got = await watch.wait_for(
                "counter", "t", lambda r: r is not None and r.state == "BUSY"
            )
        assert got is not None and got.version == 2
        tg.cancel_scope.cancel()


async def test_the_manual_clock_wakes_sleepers_and_ends_deadlines_only_when_moved_on() -> None:
    clock = ManualClock(start=100.0)
    woke: list[str] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append(name)

    async def bounded() -> None:
        with pytest.raises(TimeoutError), clock.fail_after(5):
            await anyio.sleep_forever()
        woke.append("deadline")

    async with anyio.create_task_group() as tg:
        tg.start_soon(sleeper, "late", 10)
        tg.start_soon(sleeper, "early", 3)
        tg.start_soon(bounded)
        with anyio.fail_after(5):
            await clock.until_waiting(3)
        clock.advance(2.5)
        assert clock.waiting == 3 and clock.now() == 102.5
        clock.advance(7.5)  # all three are due: they end in the order they were due
        with anyio.fail_after(5):
            while len(woke) < 3:
                await anyio.lowlevel.checkpoint()
    assert woke == ["early", "deadline", "late"] and clock.waiting == 0
    with pytest.raises(ValueError, match="only moves forward"):
        clock.advance(-1)
    with pytest.raises(TimeoutError), clock.fail_after(0):
        await anyio.sleep_forever()  # no time at all: over before it starts, as anyio's


async def _crash_every(sup: Supervisor, clock: ManualClock, gap: float, times: int) -> None:
    """Crash actor "c" `times` times, `gap` seconds apart on `clock`; each crash but the last
    is followed by a request its successor answers (so the crash was counted first)."""
    for i in range(times):
        if i:
            clock.advance(gap)
        reply = await _ask(sup, "c", "crash")
        assert reply.code == "internal" and "asked to crash" in reply.message
        if i < times - 1:
            assert await _ask(sup, "c", "ping") == "IDLE"


async def test_crashes_spread_beyond_the_window_never_trip_the_restart_limit(
    tmp_path: Path,
) -> None:
    """Two restarts allowed per 60 s: six crashes 31 s apart never put three in one window, so
    the actor is restarted every time (counting them all, without the window, would stop it
    at the third)."""
    clock = ManualClock()
    async with open_store(tmp_path / "s.db") as store, anyio.create_task_group() as tg:
        sup = Supervisor(tg, store, LOG, RestartPolicy(max_restarts=2, within_seconds=60), clock)
        row = await store.insert(Row(kind="counter", id="c", state="IDLE", version=0), "created")
        child = sup.spawn(row, lambda r: Counter(r, store, LOG))
        await _crash_every(sup, clock, gap=31, times=6)
        assert await _ask(sup, "c", "work") == "BUSY"
        assert child.failed is None and sup.get("counter", "c") is child
        history = [e.event for e in await store.events("counter", "c", 20)]
        assert history == ["created", *["restarted"] * 6, "work"]
        tg.cancel_scope.cancel()


async def test_the_same_crashes_within_the_window_trip_the_restart_limit(tmp_path: Path) -> None:
    clock = ManualClock()
    async with open_store(tmp_path / "s.db") as store, anyio.create_task_group() as tg:
        sup = Supervisor(tg, store, LOG, RestartPolicy(max_restarts=2, within_seconds=60), clock)
        row = await store.insert(Row(kind="counter", id="c", state="IDLE", version=0), "created")
        child = sup.spawn(row, lambda r: Counter(r, store, LOG))
        await _crash_every(sup, clock, gap=29, times=3)  # the third is 58 s after the first
        with anyio.fail_after(5):
            await child.finished.wait()
        assert child.failed is not None and "crashed 3 times in 60s" in child.failed
        assert not sup.tell("counter", "c", "work")
        tg.cancel_scope.cancel()


class Stubborn(Counter):
    """Its last words never end (a teardown that hangs)."""

    async def given_up(self, reason: str) -> None:
        await anyio.sleep_forever()


async def test_last_words_that_hang_are_cut_off_after_their_bound(tmp_path: Path) -> None:
    clock = ManualClock()
    async with open_store(tmp_path / "s.db") as store, anyio.create_task_group() as tg:
        sup = Supervisor(tg, store, LOG, RestartPolicy(max_restarts=0), clock)
        row = await store.insert(Row(kind="counter", id="c", state="IDLE", version=0), "created")
        child = sup.spawn(row, lambda r: Stubborn(r, store, LOG))
        await _ask(sup, "c", "crash")
        with anyio.fail_after(5):
            await clock.until_waiting()  # the bound on its last words
        clock.advance(GIVEN_UP_WITHIN_S - 1)
        assert not child.finished.is_set() and clock.waiting == 1
        clock.advance(1)
        with anyio.fail_after(5):
            await child.finished.wait()
        stored = await store.get("counter", "c")  # its row was not ended: kept aside
        assert stored is not None and stored.quarantined == child.failed
        tg.cancel_scope.cancel()


async def test_an_undeclared_transition_is_a_bug(tmp_path: Path) -> None:
    async with open_store(tmp_path / "s.db") as store:
        row = await store.insert(Row(kind="counter", id="x", state="IDLE", version=0), "created")
        actor = Counter(row, store, LOG)
        from stixd.runtime.machine import TransitionError

        with pytest.raises(TransitionError, match="FINISH is not allowed in state IDLE"):
            await actor.transition(Ev.FINISH)
        assert (await store.get("counter", "x")).state == "IDLE"  # type: ignore[union-attr]


async def _seed(store: Any, *ids: str) -> None:
    for id_ in ids:
        await store.insert(Row(kind="counter", id=id_, state="IDLE", version=0), "created")


def _damage(path: Path, id_: str, column: str, value: str) -> None:
    with sqlite3.connect(path) as db:
        db.execute(f"UPDATE actors SET {column}={value} WHERE id=?", (id_,))


@pytest.mark.parametrize(
    ("column", "value", "says"),
    [
        ("data", "'{\"idle\": Infinity}'", "NaN and Infinity are not JSON numbers"),
        ("spec", "'[1]'", "its spec is not a JSON object"),
        ("terminal", "'abc'", "its terminal flag is 'abc'"),
        ("version", "'v2'", "its version is 'v2'"),
        ("updated_at", "1e300", "its updated_at is 1e+300, not a time"),
    ],
)
async def test_a_row_that_cannot_be_read_is_returned_quarantined_never_raised(
    tmp_path: Path, column: str, value: str, says: str
) -> None:
    async with open_store(tmp_path / "s.db") as store:
        await _seed(store, "a", "bad", "z")
        _damage(tmp_path / "s.db", "bad", column, value)
        rows = {r.id: r for r in await store.live_rows()}  # a damaged terminal flag stays live
        assert set(rows) == {"a", "bad", "z"}
        assert rows["a"].quarantined is None and rows["z"].quarantined is None
        assert rows["bad"].quarantined is not None and says in rows["bad"].quarantined
        listed = await store.rows("counter", include_terminal=False)
        assert [r.id for r in listed] == ["a", "bad", "z"]


async def test_the_store_never_writes_what_it_could_not_read_back(open_any: OpenStore) -> None:
    async with open_any() as store:
        row = await store.insert(Row(kind="counter", id="c", state="IDLE", version=0), "created")
        with pytest.raises(InvalidRequest, match="not a finite number"):
            await store.update(row, event="save", data={"idle_minutes": float("inf")})
        stored = await store.get("counter", "c")
        assert stored is not None and stored.version == 1 and stored.quarantined is None


async def test_a_row_no_actor_can_be_made_of_is_quarantined_and_the_others_start(
    tmp_path: Path,
) -> None:
    async with open_store(tmp_path / "s.db") as store, anyio.create_task_group() as tg:
        await _seed(store, "a", "bad", "z")
        _damage(tmp_path / "s.db", "bad", "state", "'NO_SUCH'")
        sup = Supervisor(tg, store, LOG, RestartPolicy())
        children = {
            r.id: sup.spawn(r, lambda r: Counter(r, store, LOG)) for r in await store.live_rows()
        }
        with anyio.fail_after(5):
            await children["bad"].finished.wait()  # recorded
        assert children["bad"].failed == (
            "the stored row is not valid: its state 'NO_SUCH' is not a counter state"
        )
        assert await _ask(sup, "a", "work") == "BUSY" and await _ask(sup, "z", "work") == "BUSY"
        held = await store.get("counter", "bad")
        assert held is not None and held.quarantined == children["bad"].failed
        assert sup.spawn(held, lambda r: Counter(r, store, LOG)) is children["bad"]  # not again
        assert [e.event for e in await store.events("counter", "bad")] == ["created", "quarantined"]
        unknown = Row(kind="nobody", id="n", state="IDLE", version=1)
        assert sup.spawn(unknown, None).failed == "no actor kind is called 'nobody'"
        ended = await store.settle(held, state="DONE", parent=None, why="removed")
        assert ended.terminal
        again = await store.get("counter", "bad")
        assert again is not None and again.terminal and again.quarantined is None
        assert again.state == "DONE" and again.version == 2
        tg.cancel_scope.cancel()
