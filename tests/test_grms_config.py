"""The floor file's guest-room settings: [energy] and the energy codes, the time zone,
scenes, and v1's vacant_setpoint_c."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from gateway.config.load import load_floor
from gateway.core.state import Scene
from gateway.model.errors import ConfigError
from tests.conftest import demo_floor_dict


def floor_with(**sections: Any) -> dict[str, Any]:
    data = demo_floor_dict()
    for name, table in sections.items():
        if name == "gateway":
            data["gateway"].update(table)
        elif name == "policy":
            data["policy"] = table
        else:
            data[name] = table
    return data


@pytest.mark.parametrize(
    ("energy", "expected"),
    [
        ({"precondition_min": 61}, "precondition_min above 60 breaks the energy code"),
        ({"unsold_after_s": 1201}, "unsold_after_s above 1200 breaks the energy code"),
        ({"away_setback_c": 1.5}, "away_setback_c below 2.0 breaks the energy code"),
        ({"presence_check_s": 0}, "energy.presence_check_s: Input should be greater than"),
        ({"sleep_mode": True}, "energy.sleep_mode: unknown key"),
    ],
)
def test_check_refuses_settings_that_break_the_code(
    write_floor: Callable[..., Path], energy: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_floor(write_floor(floor_with(energy=energy)))
    assert any(expected in p for p in info.value.problems), info.value.problems


def test_code_limits_false_lifts_them(write_floor: Callable[..., Path]) -> None:
    energy = {"precondition_min": 120, "unsold_after_s": 3600, "away_setback_c": 1.0}
    config, _ = load_floor(write_floor(floor_with(energy={**energy, "code_limits": False})))
    settings = config.layout().energy
    assert (settings.precondition_min, settings.unsold_after_s) == (120, 3600)


def test_an_unknown_time_zone_is_refused(write_floor: Callable[..., Path]) -> None:
    with pytest.raises(ConfigError) as info:
        load_floor(write_floor(floor_with(gateway={"timezone": "Mars/Olympus_Mons"})))
    assert any(
        p.startswith("gateway.timezone:") and "unknown time zone" in p for p in info.value.problems
    ), info.value.problems


def test_time_zone_and_scenes_reach_the_core(write_floor: Callable[..., Path]) -> None:
    scenes = {"evening": {"lights": ["bedside"], "setpoint_c": 23.0}}
    data = floor_with(gateway={"timezone": "Europe/Paris"}, scene=scenes)
    config, _ = load_floor(write_floor(data))
    layout = config.layout()
    assert layout.timezone == ZoneInfo("Europe/Paris")
    assert layout.scenes["evening"] == Scene(("bedside",), 23.0)
    assert layout.scenes["welcome"] == Scene(("entry", "main"), None)


def test_a_bad_scene_is_located(write_floor: Callable[..., Path]) -> None:
    with pytest.raises(ConfigError) as info:
        load_floor(write_floor(floor_with(scene={"party": {"lights": ["disco"]}})))
    assert any(p.startswith("scene.party.lights[0]:") for p in info.value.problems)


def test_v1_vacant_setpoint_sets_unsold_cool_with_a_warning(
    write_floor: Callable[..., Path],
) -> None:
    data = floor_with(policy={"vacant_setpoint_c": 26.0})
    data.pop("energy", None)
    config, warnings = load_floor(write_floor(data))
    assert config.layout().energy.unsold_cool_c == 26.0
    assert any("below the energy code's 26.7" in w for w in warnings)
    data = floor_with(policy={})
    data.pop("energy", None)
    config, warnings = load_floor(write_floor(data))
    assert config.layout().energy.unsold_cool_c == 26.7
    assert warnings == []
