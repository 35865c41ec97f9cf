"""The pure alarm core: lifecycle, escalation, annunciation decisions, restore (no loop)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.ids import DeviceRef
from drivers.panelproto import FaultCode, LampState, Point
from drivers.profile import PollClass
from gateway.config.load import load_floor
from gateway.core.alarms import Alarm, AlarmKind, AlarmLayout, Alarms, AlarmState, Effect, Refusal
from gateway.core.annunciation import FLOORPANEL
from gateway.core.effects import Audit, Emit, Retain, SaveAlarm, SetPanelLamp, WritePoint

T0 = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
LEVELS = ((0, "floor-staff"), (60, "duty-manager"), (180, "security"))
LAYOUT = AlarmLayout(
    rio_rooms=frozenset({"1201", "1202"}),
    panel_rooms={"1205": "panel", "1206": "panel"},
    has_floorpanel=True,
    escalation=LEVELS,
    repeat_s=60,
    ack_timeout_s=300,
)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def id_factory() -> Callable[[], str]:
    numbers = itertools.count(1)
    return lambda: f"a{next(numbers)}"


def fresh(layout: AlarmLayout = LAYOUT, *, link_up: bool = True) -> Alarms:
    return Alarms(layout, link_up=link_up, new_id=id_factory())


def emits(effects: Iterable[Effect]) -> list[Emit]:
    return [e for e in effects if isinstance(e, Emit)]


def levels(effects: Iterable[Effect]) -> list[tuple[str, str, int, object]]:
    """(type, alarm_id, level, notify) of every alarm event."""
    return [
        (e.type, str(e.data["alarm_id"]), int(str(e.data["level"])), e.data.get("notify"))
        for e in emits(effects)
    ]


def devices(effects: Iterable[Effect]) -> list[WritePoint | SetPanelLamp]:
    return [e for e in effects if isinstance(e, WritePoint | SetPanelLamp)]


def lamp(device: str, point: str, on: bool) -> WritePoint:
    return WritePoint(DeviceRef.parse(device), point, on, priority=PollClass.EMERGENCY)


def rio_lamps(room: str, on: bool) -> list[WritePoint]:
    return [lamp(f"{room}/rio", "dome_lamp", on), lamp(f"{room}/rio", "reassure_lamp", on)]


def floor(point: str, on: bool) -> WritePoint:
    return lamp("floorpanel", point, on)


def troubles(lamp_on: bool, buzzer_on: bool) -> list[WritePoint]:
    return [floor("trouble_lamp", lamp_on), floor("trouble_buzzer", buzzer_on)]


def ok(result: tuple[Alarms, list[Effect]] | Refusal) -> tuple[Alarms, list[Effect]]:
    assert not isinstance(result, Refusal), result
    return result


def bath_call(a: Alarms, room: str = "1201", t: float = 0) -> tuple[Alarms, list[Effect]]:
    return a.counter(room, "bath_count", 7, 8, at(t))


# --- raising a call -------------------------------------------------------------------


def test_bath_counter_raises_a_call_with_event_retained_snapshot_and_lamps() -> None:
    a, fx = bath_call(fresh())
    (alarm,) = a.open_alarms()
    snapshot = {
        "schema": 1, "alarm_id": "a1", "room": "1201", "kind": "call", "point": "bath",
        "state": "active", "level": 0, "raised_at": "2026-11-23T02:00:00.000Z",
        "acknowledged_at": None, "acknowledged_by": None, "resolved_at": None,
        "resolved_by": None,
    }  # fmt: skip
    assert alarm.snapshot() == snapshot
    assert fx == [
        SaveAlarm(alarm),
        Emit("alarm.raised", "1201", {**snapshot, "notify": "floor-staff"}),
        Retain("alarms/a1", snapshot),
        *rio_lamps("1201", True),
        floor("floor_call_lamp", True),
    ]
    assert alarm.next_due_at == at(60)
    assert a.call_state("1201") == "active"
    assert a.call_state("1202") == "idle"


def test_bed_counter_raises_a_bed_call() -> None:
    a, _ = fresh().counter("1202", "bed_count", 0, 1, at(0))
    assert [(x.room, x.kind, x.point) for x in a.open_alarms()] == [("1202", "call", "bed")]


@pytest.mark.parametrize(
    ("old", "new", "raised"),
    [
        (None, 5, False),  # the first read ever is the baseline
        (5, 5, False),
        (5, 6, True),
        (5, 9, True),  # several presses between reads: one call
        (65535, 0, True),  # wraps 65535 -> 0
        (65530, 3, True),
        (500, 0, False),  # the device restarted its counter, nothing pressed since
        (500, 2, True),  # restarted, then pressed
    ],
)
def test_counter_increments(old: int | None, new: int, raised: bool) -> None:
    a, fx = fresh().counter("1201", "bath_count", old, new, at(0))
    assert len(a.open_alarms()) == int(raised)
    assert [e.type for e in emits(fx)] == (["alarm.raised"] if raised else [])


def test_repeat_presses_do_not_raise_another_call_but_another_point_does() -> None:
    a, _ = bath_call(fresh())
    again, fx = a.counter("1201", "bath_count", 8, 9, at(5))
    assert (again.open_alarms(), fx) == (a.open_alarms(), [])
    acked, _ = ok(a.ack("a1", "nurse", at(10)))
    again, fx = acked.counter("1201", "bath_count", 9, 10, at(20))
    assert (again.open_alarms(), fx) == (acked.open_alarms(), [])
    both, fx = a.counter("1201", "bed_count", 0, 1, at(5))
    assert [x.point for x in both.open_alarms()] == ["bath", "bed"]
    assert devices(fx) == []  # the room's lamps are already on


def test_unknown_counter_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="counter"):
        fresh().counter("1201", "keycard", 0, 1, at(0))


def test_times_are_kept_to_the_millisecond_in_utc() -> None:
    plus8 = timezone(timedelta(hours=8))
    a, _ = fresh().counter(
        "1201", "bath_count", 0, 1, datetime(2026, 11, 23, 10, 0, 0, 123987, plus8)
    )
    (alarm,) = a.open_alarms()
    assert alarm.raised_at == datetime(2026, 11, 23, 2, 0, 0, 123000, tzinfo=UTC)
    assert alarm.snapshot()["raised_at"] == "2026-11-23T02:00:00.123Z"


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        fresh().tick(datetime(2026, 11, 23))  # noqa: DTZ001


# --- staff presence -------------------------------------------------------------------


def test_staff_counter_resolves_every_call_of_the_room_only() -> None:
    a, _ = bath_call(fresh())
    a, _ = a.counter("1201", "bed_count", 0, 1, at(1))
    a, _ = bath_call(a, "1202", 2)
    a, fx = a.counter("1201", "staff_count", 3, 4, at(30))
    resolved = [x for x in fx if isinstance(x, SaveAlarm)]
    assert [(s.alarm.alarm_id, s.alarm.state, s.alarm.resolved_by) for s in resolved] == [
        ("a1", AlarmState.RESOLVED, "staff_presence"),
        ("a2", AlarmState.RESOLVED, "staff_presence"),
    ]
    assert [e.type for e in emits(fx)] == ["alarm.resolved", "alarm.resolved"]
    assert emits(fx)[0].data["resolved_at"] == "2026-11-23T02:00:30.000Z"
    assert Retain("alarms/a1", None) in fx
    assert Retain("alarms/a2", None) in fx
    assert devices(fx) == rio_lamps("1201", False)  # 1202 still calls: floor lamp stays on
    assert [x.alarm_id for x in a.open_alarms()] == ["a3"]
    assert a.call_state("1201") == "idle"


def test_staff_counter_first_read_or_unchanged_does_nothing() -> None:
    a, _ = bath_call(fresh())
    for old, new in ((None, 4), (4, 4)):
        b, fx = a.counter("1201", "staff_count", old, new, at(1))
        assert (b.open_alarms(), fx) == (a.open_alarms(), [])


# --- escalation -----------------------------------------------------------------------


def test_escalation_climbs_each_level_on_time_then_repeats_the_last() -> None:
    a, _ = bath_call(fresh())
    assert a.next_deadline() == at(60)
    assert a.tick(at(59.999)) == (a, [])
    a, fx = a.tick(at(60))
    assert levels(fx) == [("alarm.escalated", "a1", 1, "duty-manager")]
    assert devices(fx) == [floor("floor_sounder", True)]  # unacknowledged past level 0
    assert Retain("alarms/a1", a.open_alarms()[0].snapshot()) in fx
    assert a.next_deadline() == at(180)
    a, fx = a.tick(at(180.5))
    assert levels(fx) == [("alarm.escalated", "a1", 2, "security")]
    assert devices(fx) == []
    a, fx = a.tick(at(240))
    assert levels(fx) == [("alarm.escalated", "a1", 2, "security")]
    assert a.next_deadline() == at(300)


def test_levels_that_fell_due_are_all_emitted_in_order_and_missed_repeats_once() -> None:
    a, _ = bath_call(fresh())
    a, fx = a.tick(at(1000))
    assert levels(fx) == [
        ("alarm.escalated", "a1", 1, "duty-manager"),
        ("alarm.escalated", "a1", 2, "security"),
        ("alarm.escalated", "a1", 2, "security"),
    ]
    assert a.next_deadline() == at(1020)  # still on the 180 + k * 60 grid


def test_escalations_of_several_alarms_interleave_in_time_order() -> None:
    a, _ = bath_call(fresh())
    a, _ = bath_call(a, "1202", 30)
    a, fx = a.tick(at(200))
    assert [(i, lv) for _, i, lv, _ in levels(fx)] == [("a1", 1), ("a2", 1), ("a1", 2)]


def test_single_level_floor_repeats_level_0() -> None:
    layout = AlarmLayout(frozenset({"1201"}), {}, False, ((0, "desk"),), repeat_s=30)
    a, _ = bath_call(fresh(layout))
    assert a.next_deadline() == at(30)
    a, fx = a.tick(at(30))
    assert levels(fx) == [("alarm.escalated", "a1", 0, "desk")]


def test_every_operation_first_brings_escalation_up_to_now() -> None:
    a, _ = bath_call(fresh())
    a, fx = a.counter("1202", "bed_count", 0, 1, at(61))
    assert [(t, i) for t, i, _, _ in levels(fx)] == [
        ("alarm.escalated", "a1"),
        ("alarm.raised", "a2"),
    ]


# --- acknowledgement ------------------------------------------------------------------


def test_ack_stops_escalation_keeps_the_lamps_and_silences_the_sounder() -> None:
    a, _ = bath_call(fresh())
    a, _ = a.tick(at(60))
    a, fx = ok(a.ack("a1", "nurse-4", at(90)))
    (alarm,) = a.open_alarms()
    assert (alarm.state, alarm.acknowledged_at, alarm.acknowledged_by) == (
        AlarmState.ACKNOWLEDGED, at(90), "nurse-4",
    )  # fmt: skip
    assert levels(fx) == [("alarm.acknowledged", "a1", 1, None)]
    assert Audit("nurse-4", "alarm.acknowledge", "1201", {"alarm_id": "a1"}) in fx
    assert devices(fx) == [floor("floor_sounder", False)]  # the room's lamps stay on
    assert a.call_state("1201") == "acknowledged"
    assert a.next_deadline() == at(390)
    assert a.tick(at(389)) == (a, [])


def test_ack_times_out_and_the_call_escalates_anew() -> None:
    a, _ = bath_call(fresh())
    a, _ = ok(a.ack("a1", "nurse", at(30)))
    a, fx = a.tick(at(330))
    (alarm,) = a.open_alarms()
    assert levels(fx) == [("alarm.escalated", "a1", 0, "floor-staff")]
    assert (alarm.state, alarm.acknowledged_at, alarm.acknowledged_by) == (
        AlarmState.ACTIVE, None, None,
    )  # fmt: skip
    assert alarm.raised_at == at(0)
    assert devices(fx) == []  # level 0 again: no sounder yet
    a, fx = a.tick(at(390))
    assert levels(fx) == [("alarm.escalated", "a1", 1, "duty-manager")]
    assert devices(fx) == [floor("floor_sounder", True)]


def test_ack_and_resolve_refusals() -> None:
    a, _ = bath_call(fresh())
    assert a.ack("nope", "x", at(1)) == Refusal("conflict", "alarm nope is not open")
    assert a.resolve("nope", "x", at(1)) == Refusal("conflict", "alarm nope is not open")
    b, _ = ok(a.ack("a1", "nurse", at(1)))
    refusal = b.ack("a1", "other", at(2))
    assert isinstance(refusal, Refusal)
    assert refusal.code == "conflict"
    assert "nurse" in refusal.message
    refusal = b.resolve("a1", "desk", at(3))
    assert isinstance(refusal, Refusal)
    assert (refusal.code, "reset at the room" in refusal.message) == ("conflict", True)
    c, _ = a.counter("1201", "staff_count", 0, 1, at(4))
    assert c.ack("a1", "late", at(5)) == Refusal("conflict", "alarm a1 is not open")


def test_resolve_a_bedside_call_by_command() -> None:
    a, _ = fresh().counter("1201", "bed_count", 0, 1, at(0))
    a, fx = ok(a.resolve("a1", "desk", at(20)))
    assert a.open_alarms() == []
    (event,) = emits(fx)
    assert (event.type, event.data["state"], event.data["resolved_by"]) == (
        "alarm.resolved", "resolved", "desk",
    )  # fmt: skip
    assert "notify" not in event.data
    assert Retain("alarms/a1", None) in fx
    assert Audit("desk", "alarm.resolve", "1201", {"alarm_id": "a1"}) in fx
    assert devices(fx) == [*rio_lamps("1201", False), floor("floor_call_lamp", False)]


def test_other_panel_call_must_be_reset_at_the_room() -> None:
    a, _ = fresh().panel_call("panel", "1205", Point.OTHER, at(0))
    refusal = a.resolve("a1", "desk", at(1))
    assert isinstance(refusal, Refusal)
    assert refusal.code == "conflict"


# --- floor sounder and the link ---------------------------------------------------------


def test_call_raised_while_the_link_is_down_sounds_at_once_until_acknowledged() -> None:
    a, fx = fresh().link_changed(False, at(0))
    assert fx == []
    a, fx = bath_call(a, t=1)
    assert devices(fx)[-2:] == [floor("floor_call_lamp", True), floor("floor_sounder", True)]
    assert a.open_alarms()[0].latched
    a, fx = a.link_changed(True, at(5))
    assert devices(fx) == []  # stays on until acknowledged
    a, fx = ok(a.ack("a1", "nurse", at(10)))
    assert devices(fx) == [floor("floor_sounder", False)]
    assert not a.open_alarms()[0].latched


def test_link_going_down_does_not_latch_calls_already_raised() -> None:
    a, _ = bath_call(fresh())
    a, fx = a.link_changed(False, at(10))
    assert fx == []
    assert not a.open_alarms()[0].latched


def test_ack_timeout_while_the_link_is_down_sounds_at_once() -> None:
    a, _ = bath_call(fresh())
    a, _ = ok(a.ack("a1", "nurse", at(10)))
    a, _ = a.link_changed(False, at(20))
    a, fx = a.tick(at(310))
    assert devices(fx) == [floor("floor_sounder", True)]


def test_sounder_stays_on_while_any_call_wants_it() -> None:
    a, _ = bath_call(fresh())
    a, _ = bath_call(a, "1202", 10)
    a, _ = a.tick(at(70))
    a, fx = ok(a.ack("a1", "n", at(71)))
    assert devices(fx) == []
    a, fx = ok(a.ack("a2", "n", at(72)))
    assert devices(fx) == [floor("floor_sounder", False)]


# --- call panel -------------------------------------------------------------------------


def test_panel_call_lamp_on_flash_off() -> None:
    a, fx = fresh().panel_call("panel", "1205", Point.BATH, at(0))
    (alarm,) = a.open_alarms()
    assert (alarm.point, alarm.source, alarm.kind) == ("bath", "panel", AlarmKind.CALL)
    assert devices(fx) == [
        SetPanelLamp("panel", "1205", LampState.ON),
        floor("floor_call_lamp", True),
    ]
    again, fx = a.panel_call("panel", "1205", Point.BATH, at(1))
    assert (again.open_alarms(), fx) == (a.open_alarms(), [])
    a, fx = ok(a.ack("a1", "nurse", at(2)))
    assert devices(fx) == [SetPanelLamp("panel", "1205", LampState.FLASH)]
    a, fx = a.panel_cancel("panel", "1205", Point.BATH, at(3))
    assert emits(fx)[0].data["resolved_by"] == "staff_presence"
    assert devices(fx) == [
        SetPanelLamp("panel", "1205", LampState.OFF),
        floor("floor_call_lamp", False),
    ]


def test_panel_lamp_is_on_while_any_call_of_the_room_is_unacknowledged() -> None:
    a, _ = fresh().panel_call("panel", "1205", Point.BATH, at(0))
    a, _ = ok(a.ack("a1", "n", at(1)))
    a, fx = a.panel_call("panel", "1205", Point.BED, at(2))
    assert devices(fx) == [SetPanelLamp("panel", "1205", LampState.ON)]
    a, fx = a.panel_cancel("panel", "1205", Point.BED, at(3))
    assert devices(fx) == [SetPanelLamp("panel", "1205", LampState.FLASH)]
    assert [x.point for x in a.open_alarms()] == ["bath"]


def test_a_call_from_a_room_the_floor_does_not_list_still_lights_its_lamp() -> None:
    a, fx = fresh().panel_call("panel", "9999", Point.BED, at(0))
    assert SetPanelLamp("panel", "9999", LampState.ON) in fx
    assert SetPanelLamp("panel", "9999", LampState.ON) in a.outputs()
    a, fx = a.panel_cancel("panel", "9999", Point.BED, at(1))
    assert SetPanelLamp("panel", "9999", LampState.OFF) in fx
    assert all(getattr(o, "room", None) != "9999" for o in a.outputs())


def test_panel_fault_is_one_technical_alarm_per_room_cleared_by_cancels() -> None:
    a, fx = fresh().panel_fault("panel", "1205", Point.BATH, FaultCode.CUT, at(0))
    (alarm,) = a.open_alarms()
    assert (alarm.kind, alarm.point, alarm.room, alarm.source, alarm.faults) == (
        AlarmKind.TECHNICAL, "call_point_fault", "1205", "panel", ("bath",),
    )  # fmt: skip
    assert devices(fx) == troubles(True, True)  # the trouble lamp, never a call lamp
    same, fx = a.panel_fault("panel", "1205", Point.BATH, FaultCode.SHORT, at(1))
    assert (same, fx) == (a, [])
    a, fx = a.panel_fault("panel", "1205", Point.BED, FaultCode.CUT, at(2))
    assert [type(x) for x in fx] == [SaveAlarm]
    assert a.open_alarms()[0].faults == ("bath", "bed")
    a, fx = a.panel_cancel("panel", "1205", Point.BATH, at(3))
    assert [type(x) for x in fx] == [SaveAlarm]
    assert a.open_alarms()[0].faults == ("bed",)
    a, fx = a.panel_cancel("panel", "1205", Point.OTHER, at(4))
    assert fx == []
    a, fx = a.panel_cancel("panel", "1205", Point.BED, at(5))
    assert [(e.type, e.data["resolved_by"]) for e in emits(fx)] == [("alarm.resolved", "system")]
    assert a.open_alarms() == []


def test_panel_fault_can_be_resolved_by_command() -> None:
    a, _ = fresh().panel_fault("panel", "1205", Point.BATH, FaultCode.CUT, at(0))
    a, _ = ok(a.resolve("a1", "tech", at(1)))
    assert a.open_alarms() == []


def test_panel_offline_is_one_roomless_alarm_per_panel_resolved_when_heard() -> None:
    a, _ = fresh().panel_call("panel", "1206", Point.BED, at(0))
    a, fx = a.panel_offline("panel", at(20))
    (event,) = emits(fx)
    assert (event.type, event.room, event.data["room"], event.data["kind"]) == (
        "alarm.raised", None, None, "technical",
    )  # fmt: skip
    assert event.data["point"] == "callpanel_offline"
    assert devices(fx) == troubles(True, True)
    same, fx = a.panel_offline("panel", at(21))
    assert (same, fx) == (a, [])
    a, _ = a.panel_offline("panel-b", at(22))
    assert [x.source for x in a.open_alarms() if x.room is None] == ["panel", "panel-b"]
    a, fx = a.panel_online("panel", at(30))
    assert [(e.type, e.data["alarm_id"], e.data["resolved_by"]) for e in emits(fx)] == [
        ("alarm.resolved", "a2", "system")
    ]
    # the panel may have lost its lamps while silent: every room of the bus is re-sent
    assert devices(fx) == [
        SetPanelLamp("panel", "1205", LampState.OFF),
        SetPanelLamp("panel", "1206", LampState.ON),
    ]
    a, fx = a.panel_online("panel", at(31))
    assert emits(fx) == []


# --- room devices and tamper ----------------------------------------------------------


def test_call_point_unreachable_until_its_room_io_answers() -> None:
    a, _ = bath_call(fresh())
    a, fx = a.call_point_unreachable("1201", at(1))
    assert [(x.point, x.kind) for x in a.open_alarms()] == [
        ("bath", "call"), ("call_point_unreachable", "technical"),
    ]  # fmt: skip
    assert devices(fx) == troubles(True, True)  # the trouble lamp, not the call lamp
    same, fx = a.call_point_unreachable("1201", at(2))
    assert (same, fx) == (a, [])
    a, fx = a.call_point_reachable("1201", at(3))
    assert [(e.type, e.data["resolved_by"]) for e in emits(fx)] == [("alarm.resolved", "system")]
    assert devices(fx) == troubles(False, False)
    assert a.outputs_for(DeviceRef.parse("1201/rio")) == rio_lamps("1201", True)


def test_a_device_back_gets_its_outputs_as_the_calls_want_them() -> None:
    a, _ = bath_call(fresh(link_up=False))
    assert a.outputs_for(DeviceRef.parse("floorpanel")) == [
        floor("floor_call_lamp", True),
        floor("floor_sounder", True),
        *troubles(False, False),
    ]
    assert a.outputs_for(DeviceRef.parse("1201/lock")) == []


def test_lock_tamper_raises_and_clears_itself() -> None:
    a, fx = fresh().tamper("1203", True, at(0))
    assert [(x.room, x.point, x.kind) for x in a.open_alarms()] == [
        ("1203", "lock_tamper", AlarmKind.TECHNICAL)
    ]
    assert devices(fx) == troubles(True, True)
    assert a.call_state("1203") == "idle"
    same, fx = a.tamper("1203", True, at(1))
    assert (same, fx) == (a, [])
    a, fx = a.tamper("1203", False, at(2))
    assert [(e.type, e.data["resolved_by"]) for e in emits(fx)] == [("alarm.resolved", "system")]
    same, fx = a.tamper("1203", False, at(3))
    assert (same, fx) == (a, [])


def test_technical_alarms_escalate_too() -> None:
    a, _ = fresh().tamper("1203", True, at(0))
    a, fx = a.tick(at(60))
    assert levels(fx) == [("alarm.escalated", "a1", 1, "duty-manager")]
    assert devices(fx) == []  # the sounder is for guest calls


# --- outputs, layout ------------------------------------------------------------------


def test_outputs_is_the_whole_annunciation() -> None:
    assert fresh().outputs() == [
        *rio_lamps("1201", False),
        *rio_lamps("1202", False),
        SetPanelLamp("panel", "1205", LampState.OFF),
        SetPanelLamp("panel", "1206", LampState.OFF),
        floor("floor_call_lamp", False),
        floor("floor_sounder", False),
        *troubles(False, False),
    ]


def test_a_floor_without_a_panel_writes_no_floor_panel() -> None:
    layout = AlarmLayout(frozenset({"1201"}), {}, False, LEVELS)
    _, fx = bath_call(fresh(layout))
    assert devices(fx) == rio_lamps("1201", True)


@pytest.mark.parametrize(
    ("escalation", "repeat_s", "message"),
    [
        ((), 60, "after_s = 0"),
        (((5, "x"),), 60, "after_s = 0"),
        (((0, "x"), (60, "y"), (60, "z")), 60, "increase"),
        (((0, "x"),), 0, "positive"),
    ],
)
def test_layout_validation(
    escalation: tuple[tuple[int, str], ...], repeat_s: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        AlarmLayout(frozenset(), {}, False, escalation, repeat_s=repeat_s)


def test_layout_from_the_demo_floor(write_floor: Callable[..., Path]) -> None:
    config, _ = load_floor(write_floor())
    layout = config.layout().alarms
    assert layout.rio_rooms == {"1201", "1202", "1203", "1204"}
    assert dict(layout.panel_rooms) == {"1205": "panel", "1206": "panel"}
    assert layout.has_floorpanel
    assert layout.escalation == LEVELS
    assert (layout.repeat_s, layout.ack_timeout_s) == (60, 300)


# --- restore --------------------------------------------------------------------------


def persisted(effects: Iterable[Effect]) -> list[Effect]:
    return [e for e in effects if not isinstance(e, WritePoint | SetPanelLamp)]


def test_restore_emits_what_fell_due_while_down_in_order_then_every_output() -> None:
    a, _ = bath_call(fresh())
    a, _ = a.panel_call("panel", "1205", Point.BED, at(30))
    a, _ = ok(a.ack("a2", "n", at(40)))
    later = at(400)
    r, fx = Alarms.restore(LAYOUT, a.open_alarms(), later, link_up=True, new_id=id_factory())
    t, tfx = a.tick(later)
    assert r.open_alarms() == t.open_alarms()
    assert persisted(fx) == persisted(tfx)
    assert [(i, lv) for _, i, lv, _ in levels(fx)] == [
        ("a1", 1),  # at 60
        ("a1", 2),  # 180
        ("a1", 2),  # 240, a repeat; the one at 300 and 360 collapse into it
        ("a2", 0),  # 340: the ack timed out
        ("a2", 1),  # 400
    ]
    assert devices(fx) == r.outputs() == t.outputs()
    assert r.next_deadline() == t.next_deadline()


def test_restore_with_nothing_due_re_asserts_outputs_only() -> None:
    a, _ = bath_call(fresh())
    r, fx = Alarms.restore(LAYOUT, a.open_alarms(), at(10), link_up=False, new_id=id_factory())
    assert fx == a.outputs()
    assert not r.link_up


def test_restore_orders_alarms_by_raise_time() -> None:
    a, _ = bath_call(fresh())
    a, _ = bath_call(a, "1202", 5)
    r, _ = Alarms.restore(
        LAYOUT, reversed(a.open_alarms()), at(6), link_up=True, new_id=id_factory()
    )
    assert r.open_alarms() == a.open_alarms()


def test_restore_refuses_resolved_alarms() -> None:
    a, fx = bath_call(fresh())
    a, fx = a.counter("1201", "staff_count", 0, 1, at(1))
    resolved = next(x.alarm for x in fx if isinstance(x, SaveAlarm))
    with pytest.raises(ValueError, match="open"):
        Alarms.restore(LAYOUT, [resolved], at(2), link_up=True, new_id=id_factory())


@pytest.mark.parametrize(
    ("state", "level", "acked_at", "due"),
    [
        (AlarmState.ACTIVE, 0, None, 60),
        (AlarmState.ACTIVE, 1, None, 180),
        (AlarmState.ACTIVE, 2, None, 240),
        (AlarmState.ACTIVE, 7, None, 240),  # fewer levels than before: the last one
        (AlarmState.ACKNOWLEDGED, 1, 100, 400),
    ],
)
def test_restore_schedules_an_alarm_stored_without_a_due_time(
    state: AlarmState, level: int, acked_at: int | None, due: int
) -> None:
    alarm = Alarm(
        "x", "1201", AlarmKind.CALL, "bath", state, level, at(0),
        acknowledged_at=None if acked_at is None else at(acked_at),
    )  # fmt: skip
    r, _ = Alarms.restore(LAYOUT, [alarm], at(1), link_up=True, new_id=id_factory())
    assert r.next_deadline() == at(due)


def test_new_alarms_after_restore_use_the_given_id_factory() -> None:
    r, _ = Alarms.restore(LAYOUT, [], at(0), link_up=True, new_id=lambda: "fixed")
    r, _ = bath_call(r)
    assert [x.alarm_id for x in r.open_alarms()] == ["fixed"]


def test_default_ids_are_unique_hex() -> None:
    a, _ = bath_call(Alarms(LAYOUT))
    a, _ = bath_call(a, "1202")
    ids = [x.alarm_id for x in a.open_alarms()]
    assert len(set(ids)) == 2
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


# --- properties over random sequences ---------------------------------------------------

BUSES = ("panel", "panel-b")
LAST = len(LEVELS) - 1
Op = tuple[object, ...]

ops = st.one_of(
    st.tuples(
        st.just("counter"),
        st.sampled_from(("1201", "1202")),
        st.sampled_from(("bath_count", "bed_count", "staff_count")),
        st.integers(0, 3),
    ),
    st.tuples(
        st.sampled_from(("panel_call", "panel_cancel", "panel_fault")),
        st.sampled_from(("1205", "1206", "9999")),
        st.sampled_from(Point),
    ),
    st.tuples(st.sampled_from(("panel_offline", "panel_online")), st.sampled_from(BUSES)),
    st.tuples(st.sampled_from(("unreachable", "reachable")), st.sampled_from(("1201", "1202"))),
    st.tuples(st.just("tamper"), st.sampled_from(("1201", "1203")), st.booleans()),
    st.tuples(st.sampled_from(("ack", "resolve")), st.integers(0, 6)),
    st.tuples(st.just("link"), st.booleans()),
    st.tuples(st.sampled_from(("tick", "restore"))),
)
# (milliseconds since the previous step, operation)
scripts = st.lists(st.tuples(st.integers(0, 200_000), ops), max_size=40)


def output_key(effect: WritePoint | SetPanelLamp) -> tuple[str, str]:
    if isinstance(effect, WritePoint):
        return (effect.device, effect.point)
    return (f"panel:{effect.bus}", effect.room)


def output_value(effect: WritePoint | SetPanelLamp) -> object:
    return effect.value if isinstance(effect, WritePoint) else effect.state


def is_off(value: object) -> bool:
    return value in (False, LampState.OFF)


class World:
    """What the adapters would hold after carrying out every effect, checked at each step."""

    def __init__(self, alarms: Alarms) -> None:
        self.alarms = alarms
        self.devices = {output_key(e): output_value(e) for e in devices(alarms.outputs())}
        self.retained: dict[str, dict[str, object]] = {}
        self.saved: dict[str, Alarm] = {}
        self.history: dict[str, tuple[str, int]] = {}  # alarm_id -> (state, level) last announced
        self.counters: dict[tuple[str, str], int | None] = {}

    def apply(self, effects: list[Effect]) -> None:
        for effect in effects:
            match effect:
                case SaveAlarm(alarm):
                    self.saved[alarm.alarm_id] = alarm
                case Emit():
                    self.check_event(effect)
                case Retain(subtopic, payload):
                    if payload is None:
                        assert subtopic in self.retained
                        del self.retained[subtopic]
                    else:
                        self.retained[subtopic] = payload
                case WritePoint() | SetPanelLamp():
                    self.devices[output_key(effect)] = output_value(effect)
                case Audit():
                    pass
                case _:
                    raise AssertionError(effect)

    def check_event(self, event: Emit) -> None:
        data = dict(event.data)
        notify = data.pop("notify", None)
        alarm_id, level = str(data["alarm_id"]), int(str(data["level"]))
        assert data == self.saved[alarm_id].snapshot(), "the event carries the saved snapshot"
        assert event.room == data["room"]
        before = self.history.get(alarm_id)
        match event.type:
            case "alarm.raised":
                assert before is None
                assert (level, notify) == (0, LEVELS[0][1])
            case "alarm.escalated":
                assert before is not None
                state, prev = before
                if state == "acknowledged":  # the acknowledgement timed out: anew from 0
                    assert level == 0
                else:  # never skips, never goes back: the next level, or the last again
                    assert level == min(prev + 1, LAST)
                assert notify == LEVELS[level][1]
            case "alarm.acknowledged":
                assert before == ("active", level)
                assert notify is None
            case "alarm.resolved":
                assert before is not None
                assert before[0] != "resolved"
                assert notify is None
            case _:
                raise AssertionError(event.type)
        self.history[alarm_id] = (str(data["state"]), level)

    def check(self, now: datetime) -> None:
        a = self.alarms
        opened = a.open_alarms()
        keys = [(x.room, x.point, x.source if x.room is None else None) for x in opened]
        assert len(keys) == len(set(keys)), "one open alarm per room and point"
        assert all(x.is_open for x in opened)
        assert {x.alarm_id: x for x in opened} == {
            i: x for i, x in self.saved.items() if x.is_open
        }, "what is stored as open is exactly what is open"
        assert self.retained == {f"alarms/{x.alarm_id}": x.snapshot() for x in opened}
        desired = {output_key(e): output_value(e) for e in devices(a.outputs())}
        for key, value in self.devices.items():
            assert desired.get(key, value if is_off(value) else None) == value, key
        assert desired.keys() <= self.devices.keys()
        calls = [x for x in opened if x.kind is AlarmKind.CALL]
        for call in calls:
            assert call.room is not None
            if call.source is None:
                rio = DeviceRef.of(call.room, "rio")
                assert desired[(rio, "dome_lamp")] is True
                assert desired[(rio, "reassure_lamp")] is True
            else:
                assert desired[(f"panel:{call.source}", call.room)] in (
                    LampState.ON,
                    LampState.FLASH,
                )
            assert a.call_state(call.room) in ("active", "acknowledged")
        assert desired[(FLOORPANEL, "floor_call_lamp")] is bool(calls)
        sounding = any(x.state is AlarmState.ACTIVE and (x.level > 0 or x.latched) for x in calls)
        assert desired[(FLOORPANEL, "floor_sounder")] is sounding
        deadline = a.next_deadline()
        assert deadline is None or deadline > now, "tick left nothing due behind"

    def run(self, op: Op, now: datetime) -> None:
        a = self.alarms
        match op:
            case ("counter", str(room), str(point), int(presses)):
                old = self.counters.get((room, point))
                new = (65534 if old is None else old + presses) % 65536
                self.counters[(room, point)] = new
                result = a.counter(room, point, old, new, now)
            case ("panel_call", str(room), Point() as point):
                result = a.panel_call("panel", room, point, now)
            case ("panel_cancel", str(room), Point() as point):
                result = a.panel_cancel("panel", room, point, now)
            case ("panel_fault", str(room), Point() as point):
                result = a.panel_fault("panel", room, point, FaultCode.CUT, now)
            case ("panel_offline", str(bus)):
                result = a.panel_offline(bus, now)
            case ("panel_online", str(bus)):
                result = a.panel_online(bus, now)
            case ("unreachable" | "reachable" as kind, str(room)):
                change = (
                    a.call_point_unreachable if kind == "unreachable" else a.call_point_reachable
                )
                result = change(room, now)
            case ("tamper", str(room), bool(on)):
                result = a.tamper(room, on, now)
            case ("ack" | "resolve" as kind, int(index)):
                opened = a.open_alarms()
                alarm_id = opened[index % len(opened)].alarm_id if opened else "gone"
                command = a.ack if kind == "ack" else a.resolve
                outcome = command(alarm_id, "staff", now)
                if isinstance(outcome, Refusal):  # nothing changed; the engine ticks anyway
                    assert outcome.code == "conflict"
                    outcome = a.tick(now)
                result = outcome
            case ("link", bool(up)):
                result = a.link_changed(up, now)
            case ("tick",):
                result = a.tick(now)
            case ("restore",):
                result = Alarms.restore(
                    LAYOUT, a.open_alarms(), now, link_up=a.link_up, new_id=a.new_id
                )
                ticked, tfx = a.tick(now)
                assert result[0].open_alarms() == ticked.open_alarms()
                assert result[0].outputs() == ticked.outputs()
                assert persisted(result[1]) == persisted(tfx)
            case _:
                raise AssertionError(op)
        self.alarms, effects = result
        self.apply(effects)


@settings(max_examples=300, deadline=None)
@given(scripts, st.booleans())
def test_invariants_hold_over_any_sequence(script: list[tuple[int, Op]], link_up: bool) -> None:
    world = World(fresh(link_up=link_up))
    now = T0
    for ms, op in script:
        now += timedelta(milliseconds=ms)
        world.run(op, now)
        world.check(now)


raises = st.lists(
    st.tuples(
        st.integers(0, 100_000),  # ms after the previous raise
        st.sampled_from(("1201", "1202", "1203")),
        st.sampled_from(("bath_count", "bed_count")),
        st.one_of(st.none(), st.integers(0, 100_000)),  # acknowledged this long after
    ),
    max_size=6,
)


@settings(max_examples=200, deadline=None)
@given(raises, st.integers(0, 3_000_000), st.integers(0, 3_000_000))
def test_restore_later_matches_ticking_straight_through(
    script: list[tuple[int, str, str, int | None]], down_ms: int, up_ms: int
) -> None:
    a, now = fresh(), T0
    acks: list[tuple[datetime, str]] = []
    for ms, room, point, ack_after in script:
        now += timedelta(milliseconds=ms)
        a, fx = a.counter(room, point, 0, 1, now)
        if ack_after is not None and (raised := levels(fx)) and raised[-1][0] == "alarm.raised":
            acks.append((now + timedelta(milliseconds=ack_after), raised[-1][1]))
    for when, alarm_id in sorted(acks):
        now = max(now, when)
        a, _ = ok(a.ack(alarm_id, "n", now))
    down = now + timedelta(milliseconds=down_ms)
    up = down + timedelta(milliseconds=up_ms)

    # straight through: the engine wakes at every deadline
    straight, seen = a.tick(down)[0], []
    while (deadline := straight.next_deadline()) is not None and deadline <= up:
        straight, fx = straight.tick(deadline)
        seen += levels(fx)
    straight, fx = straight.tick(up)
    seen += levels(fx)

    # killed at `down`, restarted at `up`
    stopped = a.tick(down)[0]
    restored, rfx = Alarms.restore(
        LAYOUT, stopped.open_alarms(), up, link_up=True, new_id=id_factory()
    )
    assert restored.open_alarms() == straight.open_alarms()
    assert restored.next_deadline() == straight.next_deadline()
    assert restored.outputs() == straight.outputs()

    def levels_only(events: list[tuple[str, str, int, object]]) -> list[tuple[str, str, int]]:
        """Events without the repeats of the last level (a restart sends those once)."""
        out, at_last = [], set()
        for kind, alarm_id, level, _ in events:
            if level == LAST and alarm_id in at_last:
                continue
            at_last.discard(alarm_id)
            if level == LAST:
                at_last.add(alarm_id)
            out.append((kind, alarm_id, level))
        return out

    assert levels_only(levels(rfx)) == levels_only(seen)
