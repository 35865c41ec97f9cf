"""A store that cannot write: calls still annunciated, decisions held in order, then written.

SQLite is made to fail on write without privileges: ``PRAGMA max_page_count`` on the
store's own writer connection caps the database at the pages it has; once the room left in
them is used up, a write fails with SQLITE_FULL exactly as on a full disk (the store maps it
to StoreError). A real full filesystem is the end-to-end test's.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path
from typing import Any

from drivers.backoff import Backoff
from drivers.ids import DeviceRef
from drivers.observations import PointObserved
from drivers.profile import PollClass
from gateway.core.effects import Emit, SaveAlarm, WritePoint, is_safety
from gateway.core.inputs import AlarmAction, RunCommand, Tick
from gateway.engine.held import HeldDecisions, Value
from gateway.model.errors import StoreError
from gateway.model.messages import SetLightsBody
from tests.engine_harness import T0, Clock, Harness, running_engine
from tests.waiting import until

RIO = DeviceRef.parse("1201/rio")
DND = DeviceRef.parse("1202/rio")
FLOOR = DeviceRef.parse("floorpanel")


UNLIMITED = 1073741823
FILL_SIZES = (65536, 4096, 512, 64, 8, 1)


def _cap(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS filler (b BLOB)")


def _cap2(conn: sqlite3.Connection) -> None:
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")


def _uncap(conn: sqlite3.Connection) -> None:
    conn.execute(f"PRAGMA max_page_count = {UNLIMITED}")


async def disk_full(h: Harness) -> None:
    """Cap the database at its pages and fill the room left in them (each failed insert is
    its own transaction, rolled back by SQLITE_FULL); then let the floor's own writes use
    up what room is left in its tables' pages, until the store fails."""
    await h.store.write(_cap)
    await h.store.write(_cap2)
    for size in FILL_SIZES:
        with contextlib.suppress(StoreError):
            while True:
                await h.store.write(
                    lambda c, n=size: c.execute("INSERT INTO filler VALUES (zeroblob(?))", (n,))
                )
    for i in range(10_000):
        if h.engine.storage_failing:
            return
        h.inbox.put(PointObserved(DND, "dnd", 0, i % 2 == 0, 0.0))
        await h.settle()
    raise AssertionError("the store never filled up")


async def disk_freed(h: Harness) -> None:
    # A setting of the writer's connection, reached through a write op that writes nothing.
    await h.store.write(_uncap)


def _events(conn: sqlite3.Connection) -> list[tuple[int, str, str | None, dict[str, Any]]]:
    rows = conn.execute("SELECT seq, type, room, data FROM events ORDER BY seq")
    return [(int(s), str(t), r, json.loads(d)) for s, t, r, d in rows]


def writes(h: Harness, device: DeviceRef) -> dict[str, object]:
    return {w.point: w.value for w in h.actuators.writes if w.device == device}


def fast_retry() -> Backoff:
    return Backoff(initial_s=0.01, cap_s=0.05, jitter="none")


async def test_a_call_on_a_full_disk_is_annunciated_held_and_written_in_order(
    run_dir: Path,
) -> None:
    async with running_engine(run_dir, Clock(live=True), retry=fast_retry()) as h:
        h.inbox.put(PointObserved(RIO, "bath_count", 0, 0, 0.0))
        await h.settle()
        h.forget()
        await disk_full(h)
        await h.settle()  # the storage alarm, decided in the batch after the failure
        assert [(a.point, str(a.kind)) for a in h.engine.state.alarms.open_alarms()] == [
            ("storage", "technical")
        ]
        assert writes(h, FLOOR) == {"trouble_lamp": True, "trouble_buzzer": True}
        h.forget()
        h.inbox.put(PointObserved(RIO, "bath_count", 0, 1, 0.0))  # a guest pulls the cord
        await h.settle()
        # The room's lamps and the floor panel at once, though nothing can be written.
        assert writes(h, RIO) == {"dome_lamp": True, "reassure_lamp": True}
        assert writes(h, FLOOR) == {"floor_call_lamp": True, "floor_sounder": True}  # link down
        assert h.engine.storage_failing

        # Commands are refused cleanly while the disk is bad; floorctl still acknowledges.
        body = SetLightsBody(room="1203", circuits={"main": True})
        reply = json.loads(await h.inbox.submit(RunCommand("c-1", "set_lights", body)))  # type: ignore[arg-type]
        assert (reply["ok"], reply["error"]["code"]) == (False, "internal")
        storage = h.engine.state.alarms.open_alarms()[0]
        acked = await h.inbox.submit(AlarmAction("ack", storage.alarm_id, "tech"))
        assert acked is not None
        assert writes(h, FLOOR)["trouble_buzzer"] is False
        assert h.engine.held >= 3

        await disk_freed(h)
        await until(lambda: h.inbox.submit(Tick()) and not h.engine.storage_failing)
        await h.settle()
        await h.settle()
        events = await h.store.read(_events)
    held = [(t, d.get("point")) for _, t, _, d in events if t.startswith("alarm.")]
    assert held == [
        ("alarm.raised", "storage"),
        ("alarm.raised", "bath"),
        ("alarm.acknowledged", "storage"),
        ("alarm.resolved", "storage"),
    ]
    seqs = [s for s, *_ in events]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == len(seqs)
    assert writes(h, FLOOR)["trouble_lamp"] is False


async def test_polling_goes_on_and_nothing_stops_while_the_disk_is_full(run_dir: Path) -> None:
    async with running_engine(run_dir, Clock(live=True), retry=fast_retry()) as h:
        await disk_full(h)
        for i in range(50):
            h.inbox.put(PointObserved(RIO, "dnd", 0, i % 2 == 0, 0.0))
        await h.settle()
        await h.settle()
        assert h.engine.storage_failing
        await disk_freed(h)
        await until(lambda: h.inbox.submit(Tick()) and not h.engine.storage_failing)
        events = await h.store.read(_events)
    dnd = [d["on"] for _, t, r, d in events if t == "room.dnd" and r == "1201"]
    assert dnd == [i % 2 == 0 for i in range(1, 50)]  # every change, in order, once


def test_the_held_queue_drops_low_value_first_and_never_an_alarm() -> None:
    held = HeldDecisions(limit=3)
    alarm = SaveAlarm.__new__(SaveAlarm)
    low = [Emit("room.presence", "1201", low_value=True)]
    normal = [Emit("room.dnd", "1201")]
    assert held.add(low, T0) is None
    assert held.add(normal, T0) is None
    assert held.add([alarm], T0) is None
    dropped = held.add(normal, T0)
    assert dropped is not None
    assert dropped.value is Value.LOW
    dropped = held.add([alarm], T0)
    assert dropped is not None
    assert dropped.value is Value.NORMAL
    dropped = held.add([alarm], T0)
    assert dropped is not None
    assert dropped.value is Value.NORMAL
    assert held.add([alarm], T0) is None  # only alarms left: kept, over the limit
    assert len(held) == 4
    assert [h.value for h in held.head(10)] == [Value.ALARM] * 4
    held.written(4)
    assert len(held) == 0
    assert held.head(1) == []


def test_a_write_point_is_a_safety_action_only_at_emergency_priority() -> None:
    assert is_safety(WritePoint(RIO, "dome_lamp", True, priority=PollClass.EMERGENCY))
    assert not is_safety(WritePoint(RIO, "light_main", True, priority=PollClass.ROOM))
