"""The room model: change events, baselines, door held open, the mqtt.md snapshot."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from drivers.observations import DeviceOffline, DeviceOnline, PointObserved, PointValue
from gateway.core.effects import Emit
from gateway.core.roles import DeviceRole
from gateway.core.rooms import Rooms, layouts

T0 = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)


def _rooms(stored: dict[tuple[str, str], object] | None = None) -> Rooms:
    return Rooms(
        layouts([("1201", ["tstat", "lock", "rio"], None), ("1205", ["tstat", "lock"], "panel")]),
        door_held_open_s=120,
        stored=stored,
    )


def _obs(device: str, point: str, value: PointValue, index: int = 0) -> PointObserved:
    room, role = device.split("/")
    return PointObserved(device, room, DeviceRole(role), point, index, value, 0.0)


def test_first_value_is_a_baseline_then_changes_are_events() -> None:
    rooms = _rooms()
    assert rooms.observe(_obs("1201/rio", "dnd", False), T0) == []
    assert rooms.observe(_obs("1201/rio", "dnd", False), T0) == []
    assert rooms.observe(_obs("1201/rio", "dnd", True), T0) == [
        Emit("room.dnd", "1201", {"on": True}, low_value=True)
    ]


def test_stored_value_makes_a_change_across_restart_an_event() -> None:
    rooms = _rooms({("1201/rio", "window_open"): False})
    assert rooms.observe(_obs("1201/rio", "window_open", True), T0) == [
        Emit("room.window", "1201", {"on": True}, low_value=True)
    ]


def test_tamper_is_not_low_value() -> None:
    rooms = _rooms({("1201/lock", "tamper"): False})
    (event,) = rooms.observe(_obs("1201/lock", "tamper", True), T0)
    assert event == Emit("lock.tamper", "1201", {"on": True}, low_value=False)


def test_door_held_open_once_per_opening() -> None:
    rooms = _rooms({("1201/lock", "door_open"): False})
    assert rooms.observe(_obs("1201/lock", "door_open", True), T0)[0].type == "door.opened"
    assert rooms.next_deadline() == T0 + timedelta(seconds=120)
    assert rooms.tick(T0 + timedelta(seconds=119)) == []
    (held,) = rooms.tick(T0 + timedelta(seconds=121))
    assert (held.type, held.room, held.data) == ("door.held_open", "1201", {"open_s": 121})
    assert rooms.tick(T0 + timedelta(seconds=500)) == []
    assert rooms.next_deadline() is None
    assert rooms.observe(_obs("1201/lock", "door_open", False), T0)[0].type == "door.closed"
    rooms.observe(_obs("1201/lock", "door_open", True), T0 + timedelta(seconds=600))
    assert rooms.next_deadline() == T0 + timedelta(seconds=720)


def test_health_events_skip_an_ordinary_start() -> None:
    rooms = _rooms()
    assert rooms.health(DeviceOnline("1201/lock", "1201", DeviceRole.LOCK, 0.0)) == []
    (off,) = rooms.health(DeviceOffline("1201/lock", "1201", DeviceRole.LOCK, "timeout", 1.0))
    assert (off.type, off.data) == ("device.offline", {"device": "1201/lock", "reason": "timeout"})
    (on,) = rooms.health(DeviceOnline("1201/lock", "1201", DeviceRole.LOCK, 2.0))
    assert (on.type, on.data) == ("device.online", {"device": "1201/lock"})


def test_snapshot_has_nulls_for_unknown_and_offline() -> None:
    rooms = _rooms()
    rooms.health(DeviceOnline("1201/tstat", "1201", DeviceRole.TSTAT, 0.0))
    rooms.observe(_obs("1201/tstat", "room_temp", 23.4), T0)
    rooms.observe(_obs("1201/tstat", "power", 1), T0)
    rooms.observe(_obs("1201/tstat", "mode", "cool"), T0)
    snap = rooms.snapshot("1201", occupancy="vacant", stay_id=None, call="idle", ts="t")
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
    rooms.health(DeviceOffline("1201/tstat", "1201", DeviceRole.TSTAT, "timeout", 1.0))
    snap = rooms.snapshot("1201", occupancy="vacant", stay_id=None, call="idle", ts="t")
    assert snap["climate"]["temp_c"] is None  # type: ignore[index]
    assert set(snap) == {
        "schema", "room", "ts", "occupancy", "stay_id", "door", "deadbolt", "lock_battery",
        "climate", "lights", "keycard", "dnd", "mur", "window_open", "call", "devices",
    }  # fmt: skip


def test_array_elements_are_kept_apart() -> None:
    rooms = _rooms()
    rooms.health(DeviceOnline("1201/lock", "1201", DeviceRole.LOCK, 0.0))
    rooms.observe(_obs("1201/lock", "slot", 0, index=0), T0)
    rooms.observe(_obs("1201/lock", "slot", 77, index=1), T0)
    assert rooms.last_known("1201/lock", "slot", 0) == 0
    assert rooms.last_known("1201/lock", "slot", 1) == 77


def test_rooms_without_a_thermostat_or_room_io_have_null_sections() -> None:
    rooms = _rooms()
    snap = rooms.snapshot("1205", occupancy="vacant", stay_id=None, call="idle", ts="t")
    assert snap["lights"] is None
    assert snap["climate"] is not None
    assert snap["devices"] == {"tstat": "offline", "lock": "offline"}


def test_a_thermostat_sensor_fault_reaches_maintenance() -> None:
    rooms = _rooms({("1201/tstat", "sensor_fault"): False})
    assert rooms.observe(_obs("1201/tstat", "sensor_fault", True), T0) == [
        Emit("device.fault", "1201", {"device": "1201/tstat", "code": "sensor_fault"})
    ]
    assert rooms.observe(_obs("1201/tstat", "sensor_fault", False), T0) == []
