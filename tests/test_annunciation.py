"""Annunciation: desired lamps and sounder from the open calls, and the writes between states."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from hypothesis import given
from hypothesis import strategies as st

from drivers.ids import DeviceRef
from drivers.panelproto import LampState
from drivers.profile import PollClass
from gateway.core.annunciation import (
    FLOORPANEL,
    CallDemand,
    Output,
    Troubles,
    changes,
    desired,
    outputs_of,
)
from gateway.core.effects import SetPanelLamp, WritePoint


@dataclass(frozen=True)
class Floor:
    rio_rooms: frozenset[str] = frozenset({"1201", "1202"})
    panel_rooms: Mapping[str, str] = field(default_factory=lambda: {"1205": "panel"})
    has_floorpanel: bool = True


FLOOR = Floor()


def coil(device: str, point: str, on: bool) -> WritePoint:
    return WritePoint(DeviceRef.parse(device), point, on, priority=PollClass.EMERGENCY)


def call(
    room: str, bus: str | None = None, *, acknowledged: bool = False, sounding: bool = False
) -> CallDemand:
    return CallDemand(room, bus, acknowledged, sounding)


def test_nothing_open_everything_off_in_a_stable_order() -> None:
    assert list(desired(FLOOR, []).values()) == [
        coil("1201/rio", "dome_lamp", False),
        coil("1201/rio", "reassure_lamp", False),
        coil("1202/rio", "dome_lamp", False),
        coil("1202/rio", "reassure_lamp", False),
        SetPanelLamp("panel", "1205", LampState.OFF),
        coil("floorpanel", "floor_call_lamp", False),
        coil("floorpanel", "floor_sounder", False),
        coil("floorpanel", "trouble_lamp", False),
        coil("floorpanel", "trouble_buzzer", False),
    ]


def test_a_room_io_call_lights_its_room_and_the_floor_call_lamp() -> None:
    out = desired(FLOOR, [call("1202", acknowledged=True)])
    assert outputs_of(out, DeviceRef.parse("1202/rio")) == [
        coil("1202/rio", "dome_lamp", True),
        coil("1202/rio", "reassure_lamp", True),
    ]
    assert outputs_of(out, DeviceRef.parse("1201/rio")) == [
        coil("1201/rio", "dome_lamp", False),
        coil("1201/rio", "reassure_lamp", False),
    ]
    assert outputs_of(out, DeviceRef.parse("floorpanel")) == [
        coil("floorpanel", "floor_call_lamp", True),
        coil("floorpanel", "floor_sounder", False),
        coil("floorpanel", "trouble_lamp", False),
        coil("floorpanel", "trouble_buzzer", False),
    ]


def test_troubles_light_the_trouble_lamp_and_buzz_until_acknowledged() -> None:
    def floor_panel(troubles: Troubles) -> list[object]:
        return list(outputs_of(desired(FLOOR, [], troubles), DeviceRef.parse("floorpanel")))

    assert floor_panel(Troubles(open=True, unacknowledged=True)) == [
        coil("floorpanel", "floor_call_lamp", False),
        coil("floorpanel", "floor_sounder", False),
        coil("floorpanel", "trouble_lamp", True),
        coil("floorpanel", "trouble_buzzer", True),
    ]
    assert floor_panel(Troubles(open=True, unacknowledged=False))[2:] == [
        coil("floorpanel", "trouble_lamp", True),
        coil("floorpanel", "trouble_buzzer", False),
    ]


def test_panel_lamp_on_while_any_call_is_unacknowledged_flash_once_all_are() -> None:
    def lamp(*calls: CallDemand) -> list[Output]:
        return outputs_of(desired(FLOOR, calls), "panel:panel")

    assert lamp(call("1205", "panel")) == [SetPanelLamp("panel", "1205", LampState.ON)]
    assert lamp(call("1205", "panel", acknowledged=True)) == [
        SetPanelLamp("panel", "1205", LampState.FLASH)
    ]
    assert lamp(call("1205", "panel", acknowledged=True), call("1205", "panel")) == [
        SetPanelLamp("panel", "1205", LampState.ON)
    ]


def test_the_sounder_follows_any_call_that_wants_it() -> None:
    out = desired(FLOOR, [call("1201"), call("1202", sounding=True)])
    assert out[(FLOORPANEL, "floor_sounder", "coil")] == coil("floorpanel", "floor_sounder", True)


def test_no_floor_panel_no_floor_outputs() -> None:
    out = desired(Floor(has_floorpanel=False), [call("1201", sounding=True)])
    assert outputs_of(out, DeviceRef.parse("floorpanel")) == []


def test_unlisted_rooms_get_their_lamp_and_lose_it_when_the_call_ends() -> None:
    before = desired(FLOOR, [call("7777"), call("8888", "panel-b")])
    assert coil("7777/rio", "dome_lamp", True) in before.values()
    assert SetPanelLamp("panel-b", "8888", LampState.ON) in before.values()
    after = desired(FLOOR, [])
    assert changes(before, after) == [
        coil("floorpanel", "floor_call_lamp", False),
        coil("7777/rio", "dome_lamp", False),
        coil("7777/rio", "reassure_lamp", False),
        SetPanelLamp("panel-b", "8888", LampState.OFF),
    ]


def test_changes_are_only_what_differs() -> None:
    before = desired(FLOOR, [call("1201")])
    assert changes(before, before) == []
    after = desired(FLOOR, [call("1201", sounding=True), call("1205", "panel")])
    assert changes(before, after) == [
        SetPanelLamp("panel", "1205", LampState.ON),
        coil("floorpanel", "floor_sounder", True),
    ]


calls = st.lists(
    st.builds(
        CallDemand,
        st.sampled_from(("1201", "1202", "1205", "9999")),
        st.sampled_from((None, "panel", "panel-b")),
        st.booleans(),
        st.booleans(),
    ),
    max_size=6,
)


@given(calls, calls)
def test_applying_the_changes_reaches_the_desired_state(
    a: list[CallDemand], b: list[CallDemand]
) -> None:
    before, after = desired(FLOOR, a), desired(FLOOR, b)
    state = {_key(e): _value(e) for e in before.values()}
    for effect in changes(before, after):
        state[_key(effect)] = _value(effect)
    target = {_key(e): _value(e) for e in after.values()}
    for key, value in state.items():
        assert target.get(key, False if isinstance(value, bool) else LampState.OFF) == value


def _key(effect: Output) -> tuple[str, str]:
    if isinstance(effect, WritePoint):
        return (effect.device, effect.point)
    return (effect.bus, effect.room)


def _value(effect: Output) -> object:
    return effect.value if isinstance(effect, WritePoint) else effect.state
