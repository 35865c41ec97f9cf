"""The floor's decision function over the demo floor: kinds, room state, health, inputs."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, get_args

import pytest

from drivers.ids import DeviceRef, RoomId
from drivers.observations import DeviceFault, DeviceOffline, DeviceOnline, PointObserved, PointsRead
from drivers.panelproto import (
    CallCancelled,
    CallPlaced,
    FaultCode,
    LineFault,
    PanelOffline,
    PanelOnline,
    Point,
)
from gateway.core import inputs
from gateway.core.alarms import AlarmState
from gateway.core.decide import Stored, decide, restore, room_snapshot
from gateway.core.effects import Audit, Effect, Emit, ReconcileLock, SaveAlarm, WritePoint
from gateway.core.kinds import KINDS, ROOM_KINDS
from gateway.core.kinds import lock as lock_kind
from gateway.core.locksync import LogEntry
from gateway.core.staff import StaffKey
from gateway.core.state import FloorState
from gateway.model.messages import LockdownBody, SetLightsBody, UnlockBody
from tests.engine_harness import demo_config

T0 = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)
_ids = (f"a{i}" for i in itertools.count())


@pytest.fixture
def layout(run_dir: Path) -> Any:
    return demo_config(run_dir).layout()


def floor_of(layout: Any, values: dict[tuple[str, str], object] | None = None) -> FloorState:
    state, _ = restore(layout, Stored(values or {}, [], [], {}), T0, new_id=lambda: next(_ids))
    return state


def obs(device: str, point: str, value: object, index: int = 0) -> PointObserved:
    return PointObserved(DeviceRef.parse(device), point, index, value, 0.0)  # type: ignore[arg-type]


def emits(effects: list[Effect]) -> list[Emit]:
    return [e for e in effects if isinstance(e, Emit)]


def doors(effects: list[Effect]) -> list[Emit]:
    return [e for e in emits(effects) if e.type.startswith("door.")]


def test_the_registry_has_the_reference_kinds() -> None:
    assert list(KINDS) == ["tstat", "lock", "rio", "meter", "floorpanel"]
    assert ROOM_KINDS == ("tstat", "lock", "rio", "meter")


def test_first_value_is_a_baseline_then_changes_are_events(layout: Any) -> None:
    floor = floor_of(layout)
    assert decide(floor, obs("1201/rio", "dnd", False), T0).effects == []
    assert decide(floor, obs("1201/rio", "dnd", False), T0).effects == []
    assert decide(floor, obs("1201/rio", "dnd", True), T0).effects == [
        Emit("room.dnd", "1201", {"on": True}, low_value=True)
    ]


def test_a_stored_value_makes_a_change_across_restart_an_event(layout: Any) -> None:
    floor = floor_of(layout, {("1201/rio", "window_open"): False})
    assert decide(floor, obs("1201/rio", "window_open", True), T0).effects == [
        Emit("room.window", "1201", {"on": True}, low_value=True)
    ]


def test_tamper_is_an_event_that_matters_and_a_technical_alarm(layout: Any) -> None:
    floor = floor_of(layout, {("1201/lock", "tamper"): False})
    effects = decide(floor, obs("1201/lock", "tamper", True), T0).effects
    assert effects[0] == Emit("lock.tamper", "1201", {"on": True}, low_value=False)
    (alarm,) = floor.alarms.open_alarms()
    assert (alarm.room, alarm.point) == ("1201", "lock_tamper")
    decide(floor, obs("1201/lock", "tamper", False), T0)
    assert floor.alarms.open_alarms() == []


def test_door_held_open_once_per_opening(layout: Any) -> None:
    floor = floor_of(layout, {("1201/lock", "door_open"): False})
    (opened,) = doors(decide(floor, obs("1201/lock", "door_open", True), T0).effects)
    assert opened.type == "door.opened"
    assert doors(decide(floor, inputs.Tick(), T0 + timedelta(seconds=59)).effects) == []
    (held,) = doors(decide(floor, inputs.Tick(), T0 + timedelta(seconds=61)).effects)
    data = {"open_s": 61, "opening": "guest"}
    assert (held.type, held.room, held.data) == ("door.held_open", "1201", data)
    assert doors(decide(floor, inputs.Tick(), T0 + timedelta(seconds=500)).effects) == []
    (closed,) = doors(decide(floor, obs("1201/lock", "door_open", False), T0).effects)
    assert closed.type == "door.closed"


def test_health_events_skip_an_ordinary_start(layout: Any) -> None:
    floor = floor_of(layout)
    lock = DeviceRef.parse("1201/lock")
    assert emits(decide(floor, DeviceOnline(lock, 0.0), T0).effects) == []
    (off,) = emits(decide(floor, DeviceOffline(lock, "timeout", 1.0), T0).effects)
    assert (off.type, off.data) == ("device.offline", {"device": "1201/lock", "reason": "timeout"})
    (on,) = emits(decide(floor, DeviceOnline(lock, 2.0), T0).effects)
    assert (on.type, on.data) == ("device.online", {"device": "1201/lock"})
    (fault,) = emits(decide(floor, DeviceFault(lock, "exception 04", 3.0), T0).effects)
    assert fault.data == {"device": "1201/lock", "code": "exception 04"}


def test_a_lock_back_is_read_and_reconciled_and_its_missed_writes_resent(layout: Any) -> None:
    floor = floor_of(layout)
    effects = decide(floor, DeviceOnline(DeviceRef.parse("1201/lock"), 0.0), T0).effects
    assert ReconcileLock(RoomId("1201"), "verify", read_slots=True) in effects
    assert any(type(e).__name__ == "DeviceBack" for e in effects)


def test_a_room_io_offline_makes_its_call_points_unreachable(layout: Any) -> None:
    floor = floor_of(layout)
    rio = DeviceRef.parse("1201/rio")
    decide(floor, DeviceOnline(rio, 0.0), T0)
    decide(floor, DeviceOffline(rio, "timeout", 1.0), T0)
    (alarm,) = floor.alarms.open_alarms()
    assert (alarm.room, alarm.point, alarm.kind) == ("1201", "call_point_unreachable", "technical")
    decide(floor, DeviceOnline(rio, 2.0), T0)
    assert floor.alarms.open_alarms() == []


def test_room_state_has_nulls_for_unknown_and_offline(layout: Any) -> None:
    floor = floor_of(layout)
    tstat = DeviceRef.parse("1201/tstat")
    decide(floor, DeviceOnline(tstat, 0.0), T0)
    for point, value in (("room_temp", 23.4), ("power", 1), ("mode", "cool")):
        decide(floor, obs("1201/tstat", point, value), T0)
    snap = room_snapshot(floor, RoomId("1201"), T0)
    assert snap["climate"] == {
        "temp_c": 23.4,
        "setpoint_c": None,
        "mode": "cool",
        "fan": None,
        "power": True,
    }
    assert snap["door"] is None
    assert snap["devices"] == {"tstat": "online", "lock": "offline", "rio": "offline"}
    assert snap["lights"] == {"entry": None, "main": None, "bedside": None, "bath": None}
    decide(floor, DeviceOffline(tstat, "timeout", 1.0), T0)
    snap = room_snapshot(floor, RoomId("1201"), T0)
    assert snap["climate"]["temp_c"] is None  # type: ignore[index]
    assert list(snap) == [
        "schema", "room", "ts", "occupancy", "stay_id", "rental", "presence", "energy",
        "housekeeping", "service", "door", "deadbolt", "lock_battery",
        "climate", "lights", "keycard", "dnd", "mur", "window_open", "call", "devices",
        "observed", "stale",
    ]  # fmt: skip


def test_array_elements_are_kept_apart(layout: Any) -> None:
    floor = floor_of(layout)
    lock = DeviceRef.parse("1201/lock")
    decide(floor, obs("1201/lock", "slot", 0, index=0), T0)
    decide(floor, obs("1201/lock", "slot", 77, index=1), T0)
    assert floor.points.last_known(lock, "slot", 0) == 0
    assert floor.points.last_known(lock, "slot", 1) == 77


def test_rooms_without_a_thermostat_or_room_io_have_null_sections(layout: Any) -> None:
    snap = room_snapshot(floor_of(layout), RoomId("1205"), T0)
    assert snap["lights"] is None
    assert snap["climate"] is not None
    assert snap["devices"] == {"tstat": "offline", "lock": "offline"}


def test_a_thermostat_sensor_fault_reaches_maintenance(layout: Any) -> None:
    floor = floor_of(layout, {("1201/tstat", "sensor_fault"): False})
    assert decide(floor, obs("1201/tstat", "sensor_fault", True), T0).effects == [
        Emit("device.fault", "1201", {"device": "1201/tstat", "code": "sensor_fault"})
    ]
    assert decide(floor, obs("1201/tstat", "sensor_fault", False), T0).effects == []


def test_a_call_counter_raises_with_lamps_and_saves_its_value(layout: Any) -> None:
    floor = floor_of(layout, {("1201/rio", "bath_count"): 4})
    floor.dirty_rooms.clear()  # every room's state went out at start
    effects = decide(floor, obs("1201/rio", "bath_count", 5), T0).effects
    (raised,) = [e for e in emits(effects) if e.type == "alarm.raised"]
    assert raised.room == "1201"
    lamps = {(str(w.device), w.point) for w in effects if isinstance(w, WritePoint)}
    assert {("1201/rio", "dome_lamp"), ("1201/rio", "reassure_lamp")} <= lamps
    assert type(effects[-1]).__name__ == "SaveCounter"
    assert floor.dirty_rooms == {"1201"}


def test_a_panel_call_lights_the_panel_lamp(layout: Any) -> None:
    floor = floor_of(layout)
    effects = decide(floor, CallPlaced("panel", "1205", Point.BATH, 7), T0).effects
    assert any(isinstance(e, SaveAlarm) and e.alarm.state is AlarmState.ACTIVE for e in effects)
    assert any(type(e).__name__ == "SetPanelLamp" for e in effects)


def test_every_input_type_is_decided(layout: Any) -> None:
    floor = floor_of(layout)
    lock = DeviceRef.parse("1201/lock")
    one_of_each: list[inputs.Input] = [
        obs("1201/rio", "dnd", True),
        DeviceOnline(lock, 0.0),
        PointsRead(lock, ("door_open",), 0.0),
        DeviceOffline(lock, "timeout", 0.0),
        DeviceFault(lock, "x", 0.0),
        CallPlaced("panel", "1205", Point.BED, 1),
        CallCancelled("panel", "1205", Point.BED, 2),
        LineFault("panel", "1205", Point.BATH, FaultCode.CUT, 3),
        PanelOffline("panel"),
        PanelOnline("panel"),
        inputs.Tick(),
        inputs.LinkChanged(up=True),
        inputs.UplinkRefusing(refusing=True),
        inputs.ClockJumped(5.0),
        inputs.RunCommand("c1", "set_lights", SetLightsBody(room="1203", circuits={"main": True})),
        inputs.CommandRefused("c2", "stale", "old", recorded=False),
        inputs.AlarmAction("ack", "nope", "x"),
        inputs.AuditAction("tech", "floorctl.scan", None, {}),
        inputs.LockRepaired(RoomId("1201"), lock, 1, 0, drift=True),
        inputs.AccessLogRead(lock, [LogEntry(1, "granted", 0x1234)], gap=0, last_seen=1),
        inputs.StorageChanged(failing=True, error="disk full"),
        inputs.LampChecked(DeviceRef.parse("1201/rio"), "dome_lamp", ok=False),
        inputs.Lifecycle("gateway.started", {"version": "x"}),
        inputs.ConfigVerdict("ab" * 32, ()),
    ]
    assert {type(i) for i in one_of_each} == set(get_args(inputs.Input))
    for item in one_of_each:
        decide(floor, item, T0)


def test_an_operator_signed_command_names_the_operator_everywhere(layout: Any) -> None:
    floor = floor_of(layout)
    body = UnlockBody(room="1203", by="sec-02", reason="guest locked out")
    decision = decide(floor, inputs.RunCommand("c9", "unlock", body, "sec-02"), T0)
    assert isinstance(decision.outcome, bytes)
    assert json.loads(decision.outcome)["by"] == "sec-02"
    (audit,) = [e for e in decision.effects if isinstance(e, Audit)]
    assert audit.actor == "sec-02"
    lockdown = LockdownBody(on=True, by="sec-02", reason="drill")
    effects = decide(floor, inputs.RunCommand("c10", "lockdown", lockdown, "sec-02"), T0).effects
    (changed,) = [e for e in emits(effects) if e.type == "lockdown.changed"]
    assert changed.data == {"on": True, "by": "sec-02", "reason": "drill"}
    refused = decide(floor, inputs.RunCommand("c11", "unlock", body, "sec-02"), T0)
    (rejected,) = emits(refused.effects)
    assert rejected.data == {"id": "c11", "code": "conflict", "by": "sec-02"}
    assert json.loads(refused.outcome)["by"] == "sec-02"  # type: ignore[arg-type]


def test_a_hmac_command_has_no_by(layout: Any) -> None:
    floor = floor_of(layout)
    body = SetLightsBody(room="1203", circuits={"main": True})
    decision = decide(floor, inputs.RunCommand("c1", "set_lights", body), T0)
    assert "by" not in json.loads(decision.outcome)  # type: ignore[arg-type]


def test_battery_events_on_entering_low_and_critical_with_hysteresis(layout: Any) -> None:
    floor = floor_of(layout)

    def battery(value: int) -> list[Emit]:
        return emits(decide(floor, obs("1201/lock", "battery", value), T0).effects)

    assert battery(55) == []
    assert battery(20) == [Emit("lock.battery", "1201", {"percent": 20, "level": "low"})]
    assert battery(21) == []  # within the hysteresis: still low
    assert battery(19) == []
    assert battery(10) == [Emit("lock.battery", "1201", {"percent": 10, "level": "critical"})]
    assert battery(13) == []  # better is not news
    assert battery(100) == []
    assert battery(20) == [Emit("lock.battery", "1201", {"percent": 20, "level": "low"})]
    # A reading already low at the first contact after start is announced.
    fresh = floor_of(layout)
    (first,) = emits(decide(fresh, obs("1202/lock", "battery", 8), T0).effects)
    assert first.data == {"percent": 8, "level": "critical"}


def test_a_battery_not_read_for_a_day_is_stale(layout: Any) -> None:
    floor = floor_of(layout, {("1201/lock", "battery"): 70})
    lock = DeviceRef.parse("1201/lock")
    assert lock_kind.battery(floor, "1201", T0) == lock_kind.Battery(None, None, stale=True)
    decide(floor, DeviceOnline(lock, 0.0), T0)
    decide(floor, obs("1201/lock", "battery", 71), T0)
    assert lock_kind.battery(floor, "1201", T0).percent == 71
    decide(floor, DeviceOffline(lock, "timeout", 1.0), T0 + timedelta(hours=1))
    assert lock_kind.battery(floor, "1201", T0 + timedelta(hours=24)).percent == 71
    late = lock_kind.battery(floor, "1201", T0 + timedelta(hours=25))
    assert (late.percent, late.stale) == (None, True)


def test_a_staff_opening_is_held_open_after_the_staff_limit(layout: Any) -> None:
    floor = floor_of(layout, {("1201/lock", "door_open"): False})
    staff = StaffKey("hk", "00000000000000b1", frozenset({"floor"}), None, False, "file", 0)
    floor.authz = floor.authz.with_staff(floor.authz.staff.add(staff))
    lock = DeviceRef.parse("1201/lock")
    read = inputs.AccessLogRead(lock, (LogEntry(5, "granted", 0xB1),), 0, 5)
    (granted,) = [e for e in decide(floor, read, T0).effects if isinstance(e, Emit)]
    assert (granted.type, granted.data["key_id"]) == ("access.granted", "hk")
    decide(floor, obs("1201/lock", "door_open", True), T0 + timedelta(seconds=1))
    assert emits(decide(floor, inputs.Tick(), T0 + timedelta(seconds=100)).effects) == []
    (held,) = emits(decide(floor, inputs.Tick(), T0 + timedelta(seconds=122)).effects)
    assert held.data == {"open_s": 121, "opening": "staff"}
