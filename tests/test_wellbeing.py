"""The well-being check: opt-in per stay, a present room without activity raises an alarm."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from drivers.ids import DeviceRef, RoomId
from drivers.observations import DeviceOnline
from gateway.core import wellbeing as wb
from gateway.core.decide import Stored, decide, restore
from gateway.core.inputs import RunCommand, Tick
from gateway.core.state import FloorState
from gateway.model.messages import CheckinBody
from tests.test_decide import T0, floor_of, layout, obs

__all__ = ["layout"]  # the fixture

RIO = DeviceRef.parse("1201/rio")
TOKEN = "00000000000000a1"


def at(seconds: float) -> Any:
    return T0 + timedelta(seconds=seconds)


def checked_in(floor: FloorState, hours: int | None) -> None:
    prefs = {} if hours is None else {"preferences": {"wellbeing_h": hours}}
    body = CheckinBody.model_validate(
        {
            "room": "1201", "stay_id": "S-1", "tokens": [TOKEN],
            "valid_from": "2026-11-23T05:00:00Z", "valid_until": "2026-11-25T11:00:00Z",
            **prefs,
        }
    )  # fmt: skip
    reply = decide(floor, RunCommand("c-1", "checkin", body), at(0)).outcome
    assert isinstance(reply, bytes)
    assert b'"ok":true' in reply


def present(floor: FloorState, seconds: float) -> None:
    decide(floor, DeviceOnline(RIO, 0.0), at(seconds))
    decide(floor, obs("1201/rio", "keycard", True), at(seconds))


def wellbeing(floor: FloorState) -> list[Any]:
    return [a for a in floor.alarms.open_alarms() if str(a.kind) == "wellbeing"]


def test_a_present_guest_without_activity_for_the_period_raises_wellbeing(layout: Any) -> None:
    floor = floor_of(layout)
    checked_in(floor, hours=2)
    present(floor, 1)
    decide(floor, Tick(), at(2))
    assert wb.next_deadline(floor, at(2)) == at(2) + timedelta(hours=2)  # from the first tick
    decide(floor, obs("1201/rio", "motion_count", 1), at(1800))  # baseline, not a change
    decide(floor, obs("1201/rio", "motion_count", 2), at(3600))  # activity: period again
    decide(floor, Tick(), at(3600 + 7199))
    assert wellbeing(floor) == []
    effects = decide(floor, Tick(), at(3600 + 7200)).effects
    (alarm,) = wellbeing(floor)
    assert (alarm.room, alarm.point) == ("1201", "no_activity")
    raised = [e for e in effects if getattr(e, "type", "") == "alarm.raised"]
    assert raised[0].data["kind"] == "wellbeing"
    decide(floor, obs("1201/rio", "staff_count", 1), at(3600 + 7300))  # baseline
    decide(floor, obs("1201/rio", "staff_count", 2), at(3600 + 7400))  # staff at the room
    assert wellbeing(floor) == []


def test_no_check_without_opting_in_or_for_an_absent_room(layout: Any) -> None:
    floor = floor_of(layout)
    checked_in(floor, hours=None)
    present(floor, 1)
    decide(floor, Tick(), at(2))
    decide(floor, Tick(), at(3 * 86400))
    assert wellbeing(floor) == []


def test_a_pending_deadline_survives_a_restart(layout: Any) -> None:
    floor = floor_of(layout)
    checked_in(floor, hours=1)
    present(floor, 1)
    decide(floor, Tick(), at(2))
    due = wb.next_deadline(floor, at(2))
    cache = {
        (str(d), k): v for (d, k), v in floor.points.take_dirty().items()
    }  # what the committer wrote to the point cache
    stays = [floor.authz.stay(RoomId("1201"), "S-1")]
    again, _ = restore(layout, Stored(cache, stays, [], {}), at(600), new_id=lambda: "w")
    assert wb.next_deadline(again, at(600)) == due
    decide(again, Tick(), at(3602))
    assert [a.point for a in again.alarms.open_alarms()] == ["no_activity"]
