"""Troubles apart from calls: the trouble lamp and buzzer, acknowledgement, storage,
lamp_fault and the well-being alarm in the alarm core."""

from __future__ import annotations

import asyncio
import contextlib

from drivers.errors import WriteFailedError
from drivers.ids import DeviceRef
from drivers.profile import PollClass
from gateway.core.alarms import AlarmKind, Alarms, AlarmState
from gateway.core.effects import Emit, WritePoint
from gateway.core.inputs import LampChecked
from gateway.engine.actuators import Actuators
from tests.test_alarms import at, devices, emits, floor, fresh, ok, rio_lamps, troubles
from tests.waiting import until


def test_a_trouble_lamp_stays_until_the_cause_clears_and_ack_silences_the_buzzer() -> None:
    a, fx = fresh().call_point_unreachable("1201", at(0))
    assert devices(fx) == troubles(True, True)
    assert a.call_state("1201") == "idle"  # the call lamp is not lit for a trouble
    (alarm,) = a.open_alarms()
    a, fx = ok(a.ack(alarm.alarm_id, "tech", at(5)))
    assert devices(fx) == [floor("trouble_buzzer", False)]  # the lamp stays on
    a, fx = a.tamper("1203", True, at(6))  # a new trouble sounds the buzzer again
    assert devices(fx) == [floor("trouble_buzzer", True)]
    (_, tamper) = a.open_alarms()
    a, fx = ok(a.ack(tamper.alarm_id, "tech", at(7)))
    assert devices(fx) == [floor("trouble_buzzer", False)]
    a, fx = a.tamper("1203", False, at(8))
    assert devices(fx) == []  # one trouble still open: the lamp stays
    a, fx = a.call_point_reachable("1201", at(9))
    assert devices(fx) == [floor("trouble_lamp", False)]


def test_a_call_and_a_trouble_use_their_own_lamps() -> None:
    a, fx = fresh().storage(True, at(0))
    a, fx = a.counter("1201", "bath_count", 0, 1, at(1))
    assert devices(fx) == [*rio_lamps("1201", True), floor("floor_call_lamp", True)]
    a, fx = a.storage(False, at(2))
    assert devices(fx) == troubles(False, False)
    assert [e.data["point"] for e in emits(fx)] == ["storage"]


def test_storage_is_raised_once_and_resolved_by_the_system() -> None:
    a, fx = fresh().storage(True, at(0))
    (alarm,) = a.open_alarms()
    assert (alarm.room, alarm.kind, alarm.point) == (None, AlarmKind.TECHNICAL, "storage")
    same, fx = a.storage(True, at(1))
    assert (same, fx) == (a, [])
    a, fx = a.storage(False, at(2))
    assert [(e.type, e.data["resolved_by"]) for e in emits(fx)] == [("alarm.resolved", "system")]
    same, fx = a.storage(False, at(3))
    assert (same, fx) == (a, [])


def test_a_lamp_that_does_not_read_back_is_a_lamp_fault_of_its_room() -> None:
    a, fx = fresh().lamp_checked("1201", "dome_lamp", False, at(0))
    ((room, point, faults),) = [(x.room, x.point, x.faults) for x in a.open_alarms()]
    assert (room, point, faults) == ("1201", "lamp_fault", ("dome_lamp",))
    a, _ = a.lamp_checked("1201", "reassure_lamp", True, at(1))  # another lamp: still open
    assert [x.faults for x in a.open_alarms()] == [("dome_lamp",)]
    a, _ = a.lamp_checked("1201", "reassure_lamp", False, at(2))
    assert [x.faults for x in a.open_alarms()] == [("dome_lamp", "reassure_lamp")]
    a, fx = a.lamp_checked("1201", "dome_lamp", True, at(3))
    assert [e.type for e in emits(fx)] == []
    a, fx = a.lamp_checked("1201", "reassure_lamp", True, at(4))
    assert a.open_alarms() == []
    assert [e.type for e in emits(fx)] == ["alarm.resolved"]


def test_wellbeing_escalates_like_a_call_and_staff_presence_resolves_it() -> None:
    a, fx = fresh().wellbeing("1201", at(0))
    (alarm,) = a.open_alarms()
    assert (alarm.kind, alarm.point, alarm.state) == (
        AlarmKind.WELLBEING, "no_activity", AlarmState.ACTIVE,
    )  # fmt: skip
    assert emits(fx)[0].data["kind"] == "wellbeing"
    assert devices(fx) == [*rio_lamps("1201", True), floor("floor_call_lamp", True)]
    a, fx = a.tick(at(60))
    assert [e.type for e in emits(fx)] == ["alarm.escalated"]
    assert floor("floor_sounder", True) in devices(fx)
    a, fx = a.counter("1201", "staff_count", 3, 4, at(61))
    assert a.open_alarms() == []
    assert [(e.type, e.data["resolved_by"]) for e in emits(fx)] == [
        ("alarm.resolved", "staff_presence")
    ]


def test_wellbeing_can_be_resolved_by_command() -> None:
    a, _ = fresh().wellbeing("1201", at(0))
    (alarm,) = a.open_alarms()
    a, _ = ok(a.resolve(alarm.alarm_id, "desk", at(1)))
    assert a.open_alarms() == []


def test_open_troubles_come_back_as_they_were_after_a_restart() -> None:
    a, _ = fresh().storage(True, at(0))
    a, _ = a.wellbeing("1202", at(1))
    stored = a.open_alarms()
    b, fx = Alarms.restore(a.layout, stored, at(2), link_up=True, new_id=lambda: "x")
    assert b.open_alarms() == stored
    outputs = [
        e for e in fx if isinstance(e, WritePoint) and e.device == DeviceRef.parse("floorpanel")
    ]
    assert floor("trouble_lamp", True) in outputs
    assert not [e for e in fx if isinstance(e, Emit)]


async def test_the_write_queues_report_whether_a_room_lamp_read_back() -> None:
    rio = DeviceRef.parse("1201/rio")
    stuck = {"reassure_lamp"}
    reports: list[object] = []

    async def write(device: DeviceRef, point: str, value: object, **_: object) -> None:
        if point in stuck:
            raise WriteFailedError(f"{device} {point}: read back differs", answered=True)

    actuators = Actuators({"bus": write}, {rio: "bus"}, report=reports.append)
    task = asyncio.create_task(actuators.run("bus"))
    try:
        for point in ("dome_lamp", "reassure_lamp", "light_main"):
            priority = PollClass.ROOM if point == "light_main" else PollClass.EMERGENCY
            actuators.enqueue(WritePoint(rio, point, True, priority=priority))
        await until(lambda: len(reports) == 2)
        assert await actuators.write_now(WritePoint(rio, "dome_lamp", True)) is True
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert reports == [
        LampChecked(rio, "dome_lamp", ok=True),
        LampChecked(rio, "reassure_lamp", ok=False),
        LampChecked(rio, "dome_lamp", ok=True),
    ]


async def test_a_lamp_write_never_waits_behind_routine_writes() -> None:
    rio = DeviceRef.parse("1201/rio")
    made: list[str] = []
    never = asyncio.Event()  # a routine write waiting for its turn on a busy line

    async def write(device: DeviceRef, point: str, value: object, **_: object) -> None:
        if point.startswith("light_"):
            await never.wait()
        made.append(point)

    actuators = Actuators({"bus": write}, {rio: "bus"})
    task = asyncio.create_task(actuators.run("bus"))
    try:
        for circuit in ("entry", "main", "bedside", "bath"):
            actuators.enqueue(WritePoint(rio, f"light_{circuit}", False, priority=PollClass.ROOM))
        await asyncio.sleep(0)  # the first routine write is under way (and stuck)
        actuators.enqueue(WritePoint(rio, "dome_lamp", True, priority=PollClass.EMERGENCY))
        await until(lambda: made == ["dome_lamp"])
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
