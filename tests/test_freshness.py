"""Freshness: ``observed`` and ``stale`` in the room state, and the stale limit per device."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from drivers.ids import DeviceRef, RoomId
from drivers.observations import DeviceOffline, DeviceOnline, PointsRead
from drivers.points import slowest_poll_ms
from gateway.core.decide import decide, room_snapshot
from gateway.core.inputs import Tick
from tests.engine_harness import demo_config
from tests.test_decide import T0, floor_of, layout, obs

__all__ = ["layout"]  # the fixture

TSTAT = DeviceRef.parse("1201/tstat")


def at(seconds: float) -> Any:
    return T0 + timedelta(seconds=seconds)


def test_fields_go_stale_past_the_limit_while_the_device_is_online(layout: Any) -> None:
    limit = layout.devices[TSTAT].stale_after_s
    floor = floor_of(layout)
    decide(floor, DeviceOnline(TSTAT, 0.0), at(0))
    decide(floor, obs("1201/tstat", "room_temp", 23.0), at(0))
    decide(floor, PointsRead(TSTAT, ("power", "room_temp", "setpoint"), 0.0), at(0))
    snap = room_snapshot(floor, RoomId("1201"), at(1))
    assert snap["observed"] == {"tstat": "2026-11-23T06:00:00.000Z", "lock": None, "rio": None}
    assert snap["stale"] == []
    # Later reads answer for the setpoint only: the temperature is no longer current.
    decide(floor, PointsRead(TSTAT, ("setpoint",), 0.0), at(limit))
    floor.dirty_rooms.clear()
    decide(floor, Tick(), at(limit + 1))
    assert floor.dirty_rooms == {"1201"}  # the stale list changed: published again
    snap = room_snapshot(floor, RoomId("1201"), at(limit + 1))
    assert snap["stale"] == ["climate.power", "climate.temp_c"]
    assert snap["climate"]["temp_c"] == 23.0  # published as last read, but listed
    assert snap["observed"]["tstat"] == (at(limit)).isoformat(timespec="milliseconds")[:-6] + "Z"
    floor.dirty_rooms.clear()
    decide(floor, Tick(), at(limit + 2))
    assert floor.dirty_rooms == set()  # no change, no republish
    decide(floor, PointsRead(TSTAT, ("power", "room_temp"), 0.0), at(limit + 3))
    assert room_snapshot(floor, RoomId("1201"), at(limit + 3))["stale"] == []
    assert floor.dirty_rooms == {"1201"}


def test_an_offline_device_has_no_stale_fields_its_values_are_null(layout: Any) -> None:
    floor = floor_of(layout)
    decide(floor, DeviceOnline(TSTAT, 0.0), at(0))
    decide(floor, PointsRead(TSTAT, ("room_temp",), 0.0), at(0))
    decide(floor, DeviceOffline(TSTAT, "timeout", 0.0), at(100))
    assert room_snapshot(floor, RoomId("1201"), at(100))["stale"] == []


def test_a_call_counter_not_read_marks_the_call_stale(layout: Any) -> None:
    rio = DeviceRef.parse("1201/rio")
    floor = floor_of(layout)
    decide(floor, DeviceOnline(rio, 0.0), at(0))
    decide(floor, PointsRead(rio, ("bath_count", "dnd"), 0.0), at(0))
    decide(floor, PointsRead(rio, ("dnd",), 0.0), at(100))
    assert room_snapshot(floor, RoomId("1201"), at(100))["stale"] == ["call"]


def test_the_stale_limit_is_three_slowest_intervals_at_least_15_s(run_dir: Any) -> None:
    config = demo_config(run_dir)
    layout = config.layout()
    for spec in config.devices():
        slowest = slowest_poll_ms(spec, config.poll.intervals_ms)
        expected = max(15.0, 3 * (slowest or 0) / 1000)
        assert layout.devices[spec.ref].stale_after_s == expected
    assert layout.devices[DeviceRef.parse("floorpanel")].stale_after_s == 90.0  # 30 s coils
