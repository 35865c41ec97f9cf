"""The well-being check through the real engine and store (demo floor, a moved clock).

The core's tests (test_wellbeing.py) cover the rules; these show the engine keeps the
deadline, raises the alarm on its own tick, annunciates it like a call (the room's dome
lamp), records it upstream, lets a sign of life restart the period, and that staff at the
room resolves it.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from drivers.ids import DeviceRef
from drivers.observations import PointObserved
from gateway.core.alarm import AlarmKind
from gateway.core.inputs import RunCommand, Tick
from gateway.model.messages import CheckinBody
from gateway.model.time import format_ts
from tests.engine_harness import T0, Clock, Harness, running_engine

ROOM = "1201"
RIO = DeviceRef.parse(f"{ROOM}/rio")


async def check_in(h: Harness, hours: int) -> None:
    body = CheckinBody.model_validate(
        {
            "room": ROOM,
            "stay_id": "s-1",
            "valid_from": format_ts(T0 - timedelta(hours=1)),
            "valid_until": format_ts(T0 + timedelta(days=2)),
            "tokens": ["0011223344556677"],
            "preferences": {"wellbeing_h": hours},
        }
    )
    await h.inbox.submit(RunCommand("c-checkin", "checkin", body))
    await h.inbox.submit(Tick())


def wellbeing_open(h: Harness) -> list[object]:
    alarms = h.engine.state.alarms.open_alarms()
    return [a for a in alarms if a.kind is AlarmKind.WELLBEING and a.room == ROOM]


async def raised_events(h: Harness) -> list[dict[str, object]]:
    rows = await h.events()
    return [json.loads(d) for _, t, _, d in rows if t == "alarm.raised"]


async def test_a_quiet_room_raises_wellbeing_and_lights_its_dome_lamp(run_dir: Path) -> None:
    clock = Clock()
    async with running_engine(run_dir, clock) as h:
        await check_in(h, hours=1)
        clock.now = T0 + timedelta(minutes=59)
        await h.inbox.submit(Tick())
        assert not wellbeing_open(h)

        h.forget()
        clock.now = T0 + timedelta(minutes=61)
        await h.inbox.submit(Tick())
        await h.settle()

        assert len(wellbeing_open(h)) == 1
        raised = await raised_events(h)
        assert [e["kind"] for e in raised] == ["wellbeing"]
        assert raised[0]["point"] == "no_activity"
        domes = [w for w in h.actuators.writes if w.device.room == ROOM and w.point == "dome_lamp"]
        assert domes, "the dome lamp calls staff"
        assert domes[-1].value not in (0, False)


async def test_a_sign_of_life_starts_the_period_again(run_dir: Path) -> None:
    clock = Clock()
    async with running_engine(run_dir, clock) as h:
        await h.inbox.submit(PointObserved(RIO, "motion", 0, False, 0.0))
        await check_in(h, hours=1)
        clock.now = T0 + timedelta(minutes=40)
        await h.inbox.submit(PointObserved(RIO, "motion", 0, True, 0.0))
        clock.now = T0 + timedelta(minutes=61)
        await h.inbox.submit(Tick())
        assert not wellbeing_open(h), "motion 21 minutes ago: not quiet for an hour"

        clock.now = T0 + timedelta(minutes=101)
        await h.inbox.submit(Tick())
        assert len(wellbeing_open(h)) == 1


async def test_staff_at_the_room_resolves_it(run_dir: Path) -> None:
    clock = Clock()
    async with running_engine(run_dir, clock) as h:
        await h.inbox.submit(PointObserved(RIO, "staff_count", 0, 0, 0.0))
        await check_in(h, hours=1)
        clock.now = T0 + timedelta(minutes=61)
        await h.inbox.submit(Tick())
        assert len(wellbeing_open(h)) == 1

        clock.now = T0 + timedelta(minutes=70)
        await h.inbox.submit(PointObserved(RIO, "staff_count", 0, 1, 0.0))
        await h.settle()
        assert not wellbeing_open(h)
        rows = await h.events()
        resolved = [json.loads(d) for _, t, _, d in rows if t == "alarm.resolved"]
        assert [e["kind"] for e in resolved] == ["wellbeing"]
