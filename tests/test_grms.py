"""Presence and energy, pure: every row of the energy table, each timing boundary ±1 s with
an injected clock, the overrides, service and housekeeping, the ledger's local day."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from drivers.ids import DeviceRef
from gateway.core.decide import Stored
from gateway.core.effects import SaveLedger, SaveRoomStatus
from gateway.core.inputs import Lifecycle
from tests.engine_harness import demo_config
from tests.grms_harness import T0, RoomDriver


@pytest.fixture
def layout(run_dir: Path) -> Any:
    return demo_config(run_dir).layout()


@pytest.fixture
def room(layout: Any) -> RoomDriver:
    return RoomDriver(layout)


def sold_and_absent(room: RoomDriver) -> None:
    """A guest checked in, came in, and left: the door closed and nothing moved after."""
    room.checkin()
    room.see("rio", "keycard", True)
    room.see("rio", "keycard", False)
    room.door()
    room.later(300)
    assert room.presence == "absent"


# -- every room in its mode from the first second -----------------------------------------


def test_at_start_an_unsold_room_is_set_back_and_a_sold_one_in_comfort(layout: Any) -> None:
    room = RoomDriver(layout)
    assert room.mode == "unsold"
    start = [e for e in room.initial if getattr(e, "device", None) == DeviceRef.of("1201", "tstat")]
    assert {(w.point, w.value) for w in start} == {  # type: ignore[attr-defined]
        ("setpoint", 26.7),
        ("keypad_lock", 1),
        ("power", 1),
    }
    assert room.presence is None
    assert room.events("energy.mode") == []  # the first mode after start is no news


def test_a_device_back_gets_its_mode_again(room: RoomDriver) -> None:
    room.take()
    room.offline("tstat")
    room.online("tstat")
    assert room.writes("tstat") == {"setpoint": 26.7, "keypad_lock": 1, "power": 1}
    assert room.writes("rio") == {}  # only the device that came back


# -- the energy table ---------------------------------------------------------------------


def test_sold_and_present_or_null_is_comfort(room: RoomDriver) -> None:
    room.take()
    room.checkin(setpoint_c=21.5)
    assert (room.presence, room.mode) == (None, "comfort")
    assert room.writes("tstat") == {"setpoint": 21.5, "keypad_lock": 0, "power": 1}
    (event,) = room.events("energy.mode")
    assert event.data == {"mode": "comfort", "previous": "unsold", "reason": "stay_started"}
    room.motion()
    assert (room.presence, room.mode) == ("present", "comfort")


def test_sold_and_absent_is_away_at_once_then_lights_off(room: RoomDriver) -> None:
    room.checkin()
    room.see("rio", "light_main", True)
    room.door()
    room.later(299)
    assert (room.presence, room.mode) == ("present", "comfort")  # presence_check_s - 1 s
    room.take()
    room.later(1)
    assert (room.presence, room.mode) == ("absent", "away")
    assert [e.data for e in room.events("room.presence")] == [
        {"present": False, "cause": "timeout"}
    ]
    assert room.writes("tstat") == {"setpoint": 24.0, "power": 1}  # 24 °C >= 22: cooling, +2
    assert room.writes("rio") == {}
    room.later(599)
    assert room.writes("rio") == {}  # lights_off_absent_s - 1 s
    room.later(1)
    assert room.writes("rio") == dict.fromkeys(
        ("light_entry", "light_main", "light_bedside", "light_bath"), False
    )


def test_away_while_heating_sets_back_down(room: RoomDriver) -> None:
    room.see("tstat", "mode", "heat")
    room.checkin()
    room.door()
    room.take()
    room.later(300)
    assert room.writes("tstat") == {"setpoint": 20.0, "power": 1}  # heating: -2


def test_an_auto_thermostat_is_held_to_the_way_of_saving_while_set_back(
    room: RoomDriver,
) -> None:
    room.see("tstat", "mode", "auto")
    room.see("tstat", "room_temp", 19.0)  # below comfort: heating
    room.checkin()
    room.door()
    room.take()
    room.later(300)
    assert room.writes("tstat") == {"mode": "heat", "setpoint": 20.0, "power": 1}
    room.see("tstat", "mode", "heat")
    room.see("tstat", "room_temp", 24.0)  # summer came: now cooling
    room.take()
    room.checkout()
    assert room.writes("tstat")["mode"] == "cool"
    assert room.writes("tstat")["setpoint"] == 26.7
    room.take()
    room.checkin("S2")
    assert room.writes("tstat") == {"mode": "auto", "setpoint": 22.0, "keypad_lock": 0, "power": 1}


def test_a_guest_back_is_comfort_at_once(room: RoomDriver) -> None:
    sold_and_absent(room)
    room.take()
    room.see("lock", "door_open", True)
    assert (room.presence, room.mode) == ("present", "comfort")
    assert room.writes("tstat")["setpoint"] == 22.0
    assert room.events("room.presence")[0].data == {"present": True, "cause": "door"}


def test_unsold_within_unsold_after_s_of_checkout(room: RoomDriver) -> None:
    room.checkin()
    room.motion()
    room.take()
    room.checkout()
    (hk,) = room.events("housekeeping.changed")
    assert hk.data == {"status": "dirty", "previous": None, "by": "gateway"}
    assert room.mode == "comfort"  # the guest may still be packing
    room.later(599)
    assert room.mode == "comfort"
    room.later(1)
    assert room.mode == "unsold"
    assert room.writes("tstat") == {"setpoint": 26.7, "keypad_lock": 1, "power": 1}
    assert set(room.writes("rio").values()) == {False}
    assert room.state()["rental"] == "unsold"


def test_unsold_at_once_when_the_guest_left_before_checkout(room: RoomDriver) -> None:
    sold_and_absent(room)
    room.checkout()
    assert room.mode == "unsold"
    (event,) = room.events("energy.mode")[-1:]
    assert event.data == {"mode": "unsold", "previous": "away", "reason": "stay_ended"}


def test_precondition_no_earlier_than_precondition_min(room: RoomDriver) -> None:
    room.checkin(start_s=7200, setpoint_c=21.0)  # a stay starting in two hours
    assert room.mode == "unsold"
    room.at(3599)
    assert room.mode == "unsold"
    room.take()
    room.at(3600)
    assert room.mode == "precondition"
    assert room.writes("tstat") == {"setpoint": 21.0, "power": 1}
    room.at(7200)
    assert (room.mode, room.state()["rental"]) == ("comfort", "sold")


def test_window_open_longer_than_window_delay_s_powers_off_then_restores(
    room: RoomDriver,
) -> None:
    room.checkin()
    room.motion()
    room.see("rio", "window_open", True)
    room.later(59)
    assert room.mode == "comfort"
    room.take()
    room.later(1)
    assert room.mode == "window"
    assert room.writes("tstat") == {"power": 0}
    room.take()
    room.see("rio", "window_open", False)
    assert room.mode == "comfort"
    assert room.writes("tstat") == {"setpoint": 22.0, "keypad_lock": 0, "power": 1}


def test_manual_until_the_next_change_of_presence(room: RoomDriver) -> None:
    room.checkin()
    room.motion()
    room.take()
    room.command("set_climate", {"setpoint_c": 19.0})
    assert room.mode == "manual"
    assert room.writes("tstat") == {"setpoint": 19.0}
    room.door()
    room.later(300)
    assert room.mode == "away"


def test_set_energy_holds_comfort_until_the_stay_ends(room: RoomDriver) -> None:
    refused = room.command("set_energy", {"hold": True})
    assert any(getattr(e, "type", "") == "command.rejected" for e in refused)  # unsold
    room.checkin()
    effects = room.command("set_energy", {"hold": True})
    assert any(isinstance(e, SaveRoomStatus) and e.hold_stay == "S1" for e in effects)
    room.door()
    room.later(300)
    assert (room.presence, room.mode) == ("absent", "comfort")
    room.checkout()
    assert room.mode == "unsold"
    assert room.floor.rooms.by_room["1201"].energy.hold_stay is None  # type: ignore[index]


# -- presence -----------------------------------------------------------------------------


def test_a_detection_after_the_close_keeps_a_sleeping_guest_present(room: RoomDriver) -> None:
    room.checkin()
    room.door()
    room.later(100)
    room.motion()
    room.later(3600 * 8)  # asleep: nothing moves, for hours
    assert (room.presence, room.mode) == ("present", "comfort")


def test_a_motion_bit_held_from_before_the_close_does_not_count(room: RoomDriver) -> None:
    room.checkin()
    room.see("rio", "motion", True)  # seen while the guest walked out
    room.door()
    room.later(29)
    room.see("rio", "motion", True)  # still held: not a new detection
    room.later(271)
    assert room.presence == "absent"


def test_a_motion_bit_set_again_after_the_hold_counts(room: RoomDriver) -> None:
    room.checkin()
    room.see("rio", "motion", True)
    room.door()
    room.later(30)
    room.see("rio", "motion", True)  # 30 s after the close: set again since
    room.later(600)
    assert room.presence == "present"


def test_a_key_card_keeps_the_room_present(room: RoomDriver) -> None:
    room.checkin()
    room.see("rio", "keycard", True)
    room.door()
    room.later(3600)
    assert (room.presence, room.mode) == ("present", "comfort")


def test_presence_is_null_while_a_needed_device_is_offline(room: RoomDriver) -> None:
    sold_and_absent(room)
    room.offline("rio")
    assert (room.presence, room.mode) == (None, "comfort")  # treated as present
    room.online("rio")
    assert room.presence is None  # until an input tells


def test_a_room_without_a_motion_sensor_goes_by_the_key_card(layout: Any) -> None:
    room = RoomDriver(layout)
    room.floor.points._values.pop((DeviceRef.of("1201", "rio"), "motion_count"))
    room.checkin()
    room.see("rio", "keycard", True)
    assert room.presence == "present"
    room.see("rio", "keycard", False)
    room.door()
    room.later(300)
    assert room.presence == "absent"


# -- service, housekeeping, unsold presence -----------------------------------------------


def test_service_with_mur_wait(room: RoomDriver) -> None:
    room.see("rio", "mur", True)
    room.later(900)
    room.see("rio", "staff_count", 1)
    room.see("rio", "staff_present", True)
    (started,) = room.events("service.started")
    assert started.data == {"mur_wait_s": 900}
    assert room.state()["service"] == "in_progress"
    room.later(1200)
    room.see("rio", "staff_present", False)
    (finished,) = room.events("service.finished")
    assert finished.data == {"duration_s": 1200, "mur_wait_s": 900}
    assert room.state()["service"] == "idle"


def test_a_staff_key_answering_a_call_is_not_service(room: RoomDriver) -> None:
    room.see("rio", "bath_count", 1)
    room.see("rio", "staff_count", 1)  # resolves the call
    room.see("rio", "staff_present", True)
    assert room.events("service.started") == []
    assert room.state()["service"] == "idle"


def test_set_housekeeping_round_trip(room: RoomDriver) -> None:
    effects = room.command("set_housekeeping", {"status": "clean", "by": "hk/li"})
    (event,) = room.events("housekeeping.changed")
    assert event.data == {"status": "clean", "previous": None, "by": "hk/li"}
    assert SaveRoomStatus(room.floor.layout.rooms[0].room, "clean", None) in effects
    assert room.state()["housekeeping"] == "clean"
    room.take()
    room.command("set_housekeeping", {"status": "clean", "by": "hk/li"})
    assert room.events("housekeeping.changed") == []  # no change, no event


def test_presence_in_an_unsold_room_outside_service(room: RoomDriver) -> None:
    room.motion()
    (event,) = room.events("room.unsold_presence")
    assert event.data == {"cause": "motion"}


def test_no_unsold_presence_during_service(room: RoomDriver) -> None:
    room.see("rio", "staff_present", True)
    room.motion()
    assert room.events("room.unsold_presence") == []


# -- the ledger ---------------------------------------------------------------------------


def test_the_ledger_day_ends_at_local_midnight(layout: Any) -> None:
    shanghai = ZoneInfo("Asia/Shanghai")  # UTC+8: local midnight is 16:00 UTC
    room = RoomDriver(layout, timezone=shanghai)
    room.checkin()
    room.see("tstat", "run_minutes", 100)
    room.door()
    room.at(300)  # absent: away
    room.see("tstat", "run_minutes", 130)
    room.see("rio", "light_main", True)  # on while absent
    midnight = datetime(2026, 11, 23, 16, 0, tzinfo=UTC)
    room.at((midnight - T0).total_seconds() - 1)
    assert room.events("energy.daily") == []
    room.at((midnight - T0).total_seconds())
    (daily,) = room.events("energy.daily")
    data = dict(daily.data)
    assert data["date"] == "2026-11-23"
    assert data["seconds"] == {"comfort": 300, "away": 36000 - 300}
    assert data["hvac_run_s"] == 30 * 60
    assert data["lights_on_absent_s"] == 36000 - 300
    assert data["setback_degree_hours"] == pytest.approx(2.0 * (36000 - 300) / 3600, abs=0.01)
    assert data["energy_kwh"] is None
    assert any(isinstance(e, SaveLedger) and e.keep_days == 400 for e in room.effects)
    room.take()
    room.later(3600)
    assert room.events("energy.daily") == []  # once per day


def test_the_ledger_survives_a_restart_and_owes_a_missed_day(layout: Any) -> None:
    saved = {"1201": {"date": "2026-11-22", "seconds": {"away": 100}, "hvac_run_s": 60}}
    room = RoomDriver(layout, stored=Stored({}, [], [], {}, {}, saved))
    owed = [e for e in room.initial if getattr(e, "type", "") == "energy.daily"]
    assert [(e.room, e.data["date"]) for e in owed] == [("1201", "2026-11-22")]  # type: ignore[attr-defined]
    today = {"1201": {"date": "2026-11-23", "seconds": {"away": 100}, "hvac_run_s": 60}}
    room = RoomDriver(layout, stored=Stored({}, [], [], {}, {"1201": ("clean", None)}, today))
    assert room.floor.rooms.by_room["1201"].ledger.day.hvac_run_s == 60  # type: ignore[index]
    assert room.state()["housekeeping"] == "clean"


def test_stopping_saves_today(room: RoomDriver) -> None:
    effects = room.run(Lifecycle("gateway.stopping"))
    (save,) = [e for e in effects if isinstance(e, SaveLedger)]
    assert {r for r, _ in save.rows} == set(room.floor.room_ids())
    assert room.now + timedelta(seconds=600) == room.floor.rooms.checkpoint_at
