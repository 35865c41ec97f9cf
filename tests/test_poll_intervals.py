"""Which interval a polled point gets: its own, the floor's, the profile's under its bus kind's cap.

The demo floor's lan bus is Modbus TCP and rs485-a is RTU; both carry FG-RIO-1 modules,
whose profile sizes the emergency class (the call counters) for RS-485 at 300 ms.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from drivers.health import DeviceHealth
from drivers.lines import DeviceSpec
from drivers.points import KIND_INTERVAL_CAPS_MS, PolledDevice
from drivers.profile import PollClass
from gateway.config.floor import FloorConfig
from tests.conftest import FLOORS
from tests.test_floorsim_support import load


@pytest.fixture
def floor(run_dir: Path) -> FloorConfig:
    return load(FLOORS / "demo.toml")


def rio(floor: FloorConfig, bus: str) -> DeviceSpec:
    return next(d for d in floor.devices(bus) if d.role == "rio")


def emergency_ms(spec: DeviceSpec, kind: str, overrides: dict[PollClass, int]) -> set[int]:
    dev = PolledDevice(spec, DeviceHealth(), overrides, KIND_INTERVAL_CAPS_MS.get(kind, {}))
    return {ms for cls, ms in dev.group_class.values() if cls is PollClass.EMERGENCY}


def test_tcp_samples_the_call_counters_every_100_ms_by_default(floor: FloorConfig) -> None:
    spec = rio(floor, "lan")
    assert spec.profile.intervals[PollClass.EMERGENCY] == 300
    assert emergency_ms(spec, "modbus-tcp", {}) == {100}


def test_rtu_keeps_the_profiles_interval(floor: FloorConfig) -> None:
    assert emergency_ms(rio(floor, "rs485-a"), "modbus-rtu", {}) == {300}


def test_the_floor_still_decides(floor: FloorConfig) -> None:
    spec = rio(floor, "lan")
    assert emergency_ms(spec, "modbus-tcp", {PollClass.EMERGENCY: 250}) == {250}
    assert emergency_ms(spec, "modbus-tcp", {PollClass.EMERGENCY: 40}) == {40}


def test_a_profile_faster_than_the_cap_keeps_its_interval(floor: FloorConfig) -> None:
    spec = rio(floor, "lan")
    fast = spec.profile.model_copy(update={"intervals": {PollClass.EMERGENCY: 60}})
    quick = DeviceSpec(spec.room, spec.role, spec.bus, spec.unit, fast, spec.roles)
    assert emergency_ms(quick, "modbus-tcp", {}) == {60}


def test_the_cap_touches_only_its_class(floor: FloorConfig) -> None:
    spec = rio(floor, "lan")
    tcp = PolledDevice(spec, DeviceHealth(), {}, KIND_INTERVAL_CAPS_MS["modbus-tcp"])
    rtu = PolledDevice(spec, DeviceHealth(), {})
    others = {g: c for g, c in rtu.group_class.items() if c[0] is not PollClass.EMERGENCY}
    assert {g: c for g, c in tcp.group_class.items() if c[0] is not PollClass.EMERGENCY} == others
