"""Device names: parsed once, equal and hashed by their parts, kept across pickling."""

from __future__ import annotations

import pickle

import pytest

from drivers.ids import DeviceRef, RoomId


def test_a_device_is_equal_and_hashed_by_its_room_and_role() -> None:
    a, b = DeviceRef.parse("1201/rio"), DeviceRef.of("1201", "rio")
    assert a == b
    assert hash(a) == hash(b)
    assert {a: 1}[b] == 1
    assert DeviceRef.parse("floorpanel") == DeviceRef(None, "floorpanel")
    assert a != DeviceRef.parse("1202/rio")
    assert a != DeviceRef.parse("1201/lock")
    assert str(a) == "1201/rio"
    assert repr(a) == "DeviceRef(room='1201', role='rio')"
    assert sorted([DeviceRef.parse("1202/lock"), a]) == [a, DeviceRef.parse("1202/lock")]


def test_a_pickled_device_is_rebuilt_from_its_parts() -> None:
    a = DeviceRef(RoomId("1203"), "lock")
    back = pickle.loads(pickle.dumps(a))
    assert back == a
    assert hash(back) == hash(a)
    assert b"_hash" not in pickle.dumps(a)


@pytest.mark.parametrize(
    ("room", "role"), [("1201", ""), ("12/01", "rio"), ("1201", "r/o"), ("", "rio")]
)
def test_not_a_device(room: str, role: str) -> None:
    with pytest.raises(ValueError, match=r"not a device|not empty"):
        DeviceRef(RoomId(room), role)
