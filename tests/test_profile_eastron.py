"""The eastron-sdm120 profile: the maker's input registers, float32 high word first."""

from __future__ import annotations

import struct
import tomllib

from drivers.codec import decode
from drivers.planner import ReadPlanner, Want
from drivers.profile import DataType, PollClass, Profile, Table, structure_problems
from tests.conftest import REPO

PATH = REPO / "config" / "profiles" / "eastron-sdm120.toml"


def profile() -> Profile:
    return Profile.model_validate(tomllib.loads(PATH.read_text()))


def test_loads_without_structure_problems() -> None:
    prof = profile()
    assert prof.name == PATH.stem
    assert prof.device == "meter"
    assert structure_problems(prof) == []
    assert (prof.serial.baud, prof.serial.parity) == (2400, "N")


def test_registers_as_published() -> None:
    points = {p.name: p for p in profile().point}
    assert {n: p.address for n, p in points.items()} == {
        "energy": 0x0156,  # 30343
        "power": 0x000C,  # 30013
        "voltage": 0x0000,  # 30001
        "current": 0x0006,  # 30007
        "frequency": 0x0046,  # 30071
    }
    for p in points.values():
        assert (p.table, p.type, p.word_order, p.access) == (Table.INPUT, DataType.F32, "big", "r")
    roles = profile().by_role()
    assert sorted(roles) == ["energy_kwh", "power_w"]
    assert roles["energy_kwh"].name == "energy"
    assert roles["power_w"].name == "power"


def test_a_reading_decodes_as_the_meter_sends_it() -> None:
    energy = profile().by_role()["energy_kwh"]
    high, low = struct.unpack(">HH", struct.pack(">f", 1234.56))
    assert decode(energy, [high, low]) == 1234.56
    assert decode(energy, [0x7FC0, 0]) is None


def test_poll_intervals_and_reads() -> None:
    prof = profile()
    roles = prof.by_role()
    assert roles["energy_kwh"].poll is PollClass.SLOW
    assert prof.interval_ms(roles["energy_kwh"]) == 60_000
    assert prof.interval_ms(roles["power_w"]) == 10_000
    requests = ReadPlanner().plan([Want(roles["energy_kwh"]), Want(roles["power_w"])])
    assert [(r.table, r.address, r.count) for r in requests] == [
        (Table.INPUT, 0x000C, 2),
        (Table.INPUT, 0x0156, 2),
    ]
