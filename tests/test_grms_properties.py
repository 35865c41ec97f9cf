"""Properties of presence and energy over random guests: never away while the key card is
in, never set back while presence is unknown, unsold within unsold_after_s of a checkout."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config.floor import FloorConfig
from tests.engine_harness import demo_config
from tests.grms_harness import RoomDriver

Step = tuple[str, int]
STEPS = st.lists(
    st.tuples(
        st.sampled_from(
            ["open", "close", "card_in", "card_out", "motion", "bit_on", "bit_off", "wait"]
        ),
        st.integers(min_value=0, max_value=900),
    ),
    max_size=40,
)
SETTINGS = settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture
def config(run_dir: Path) -> FloorConfig:
    return demo_config(run_dir)


def play(room: RoomDriver, step: Step) -> None:
    action, seconds = step
    match action:
        case "open":
            room.see("lock", "door_open", True)
        case "close":
            room.see("lock", "door_open", False)
        case "card_in":
            room.see("rio", "keycard", True)
        case "card_out":
            room.see("rio", "keycard", False)
        case "motion":
            room.motion()
        case "bit_on":
            room.see("rio", "motion", True)
        case "bit_off":
            room.see("rio", "motion", False)
        case _:
            room.later(seconds)


def card_in(room: RoomDriver) -> bool:
    return room.floor.points.last_known(room.layout.device("1201", "rio"), "keycard") is True  # type: ignore[arg-type]


@SETTINGS
@given(steps=STEPS)
def test_never_away_with_the_card_in_nor_set_back_while_unknown(
    config: FloorConfig, steps: list[Step]
) -> None:
    room = RoomDriver(config.layout())
    room.checkin()
    for step in steps:
        play(room, step)
        room.later(1)
        if card_in(room):
            assert room.mode != "away"
            assert room.presence != "absent"
        if room.presence is None:
            assert room.mode not in ("away", "unsold")
        if room.mode == "away":
            assert room.presence == "absent"


@SETTINGS
@given(before=STEPS, after=STEPS)
def test_unsold_within_unsold_after_s_of_every_checkout(
    config: FloorConfig, before: list[Step], after: list[Step]
) -> None:
    room = RoomDriver(config.layout())
    room.checkin()
    for step in before:
        play(room, step)
    room.checkout()
    limit = room.now.timestamp() + room.layout.energy.unsold_after_s
    for step in after:
        if room.now.timestamp() + step[1] >= limit:
            break
        play(room, step)
    room.later(limit - room.now.timestamp())
    assert room.mode == "unsold"
    assert room.writes("tstat")["setpoint"] in (26.7, 15.6)


@SETTINGS
@given(steps=STEPS)
def test_away_is_set_back_by_at_least_two_degrees_within_the_check(
    config: FloorConfig, steps: list[Step]
) -> None:
    room = RoomDriver(config.layout())
    room.checkin()
    for step in steps:
        play(room, step)
    room.see("rio", "keycard", False)
    room.see("lock", "door_open", True)
    room.see("lock", "door_open", False)
    room.take()
    room.later(room.layout.energy.presence_check_s)
    assert room.mode == "away"
    setpoint: Any = room.writes("tstat")["setpoint"]
    assert abs(setpoint - 22.0) >= 2.0
