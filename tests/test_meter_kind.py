"""The energy meter kind: its profile, the floor file, the room state, and floorsim end to end."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from drivers.ids import DeviceRef, RoomId
from drivers.observations import DeviceOnline, PointObserved
from gateway.config.load import load_floor, load_profile, shipped_profiles_dir
from gateway.core.decide import Stored, decide, restore, room_snapshot
from gateway.core.kinds import KINDS, ROOM_KINDS
from tests.conftest import demo_floor_dict
from tests.e2e import (  # noqa: F401 (fixtures)
    ROOT,
    WAIT_S,
    Mosquitto,
    mosquitto_fixture,
    mqtt_certs,
    retained_until,
    running,
)
from tests.waiting import until

T0 = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)
METER = {"role": "meter", "profile": "eastron-sdm120", "bus": "lan", "unit": 9}


def with_meter(data: dict[str, Any]) -> None:
    """Room 1203 (on the Modbus TCP bus) gets a meter, read often enough for a test."""
    room = next(r for r in data["room"] if r["id"] == "1203")
    room["devices"].append(dict(METER))
    lan = next(b for b in data["bus"] if b["name"] == "lan")
    lan["intervals_ms"] = {"slow": 300}


def test_the_meter_is_a_room_device_kind() -> None:
    assert "meter" in ROOM_KINDS
    assert set(KINDS["meter"].points) == {"energy_kwh", "power_w"}


def test_the_shipped_eastron_profile_fits_the_meter_kind() -> None:
    profile = load_profile(shipped_profiles_dir() / "eastron-sdm120.toml")
    assert profile.device == "meter"
    assert {"energy_kwh", "power_w"} <= profile.roles(KINDS["meter"].points)


def test_a_floor_with_a_meter_loads_and_shows_it_in_the_room_state(
    write_floor: Any, run_dir: Path
) -> None:
    data = demo_floor_dict()
    with_meter(data)
    config, _ = load_floor(write_floor(data))
    layout = config.layout()
    meter = DeviceRef.parse("1203/meter")
    assert meter in layout.room("1203").devices  # type: ignore[union-attr]
    floor, _ = restore(layout, Stored({}, [], [], {}), T0, new_id=lambda: "a")
    decide(floor, DeviceOnline(meter, 0.0), T0)
    decide(floor, PointObserved(meter, "energy_kwh", 0, 12.5, 0.0), T0)
    snap = room_snapshot(floor, RoomId("1203"), T0)
    assert snap["meter"] == {"energy_kwh": 12.5, "power_w": None}
    assert list(snap)[-5:] == ["meter", "call", "devices", "observed", "stale"]
    assert snap["devices"] == {
        "tstat": "offline",
        "lock": "offline",
        "rio": "offline",
        "meter": "online",
    }
    assert "meter" not in room_snapshot(floor, RoomId("1201"), T0)


@pytest.mark.integration
async def test_floorsim_serves_the_meter_and_its_energy_rises_while_the_fan_runs(
    run_dir: Path, mosquitto: Mosquitto
) -> None:
    async with running(run_dir, mosquitto, edit=with_meter) as f:
        topic = f"{ROOT}/rooms/1203/state"

        def energy(doc: dict[str, Any]) -> float | None:
            value = (doc.get("meter") or {}).get("energy_kwh")
            return value if isinstance(value, float) else None

        reply = await f.command(
            "set_climate", {"room": "1203", "power": True, "mode": "cool", "setpoint_c": 16.0}
        )
        assert reply["ok"] is True
        await until(lambda: f.sim.device("1203/tstat").get("fan_state") != 0, timeout=WAIT_S)
        first = energy(await retained_until(mosquitto, topic, lambda d: energy(d) is not None))
        assert first is not None
        later = await retained_until(mosquitto, topic, lambda d: (energy(d) or 0.0) > first)
        power = later["meter"]["power_w"]
        assert power is None or power > 100.0  # the fan-coil's draw, not standby
