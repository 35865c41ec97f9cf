"""The pure core's answer to a broker that refuses publishes: ``uplink_refused`` after 30 s
of an unbroken run, resolved when the run ends; and ``command.rejected`` coalesced in a
flood of refused commands (mqtt.md v2)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.alarms import UPLINK_REFUSED, AlarmState
from gateway.core.decide import decide, next_deadline
from gateway.core.effects import Emit
from gateway.core.inputs import CommandRefused, Tick, UplinkRefusing
from gateway.core.rejections import INDIVIDUAL, WINDOW, Rejections
from gateway.core.state import FloorState
from tests.engine_harness import demo_config
from tests.test_alarms import emits, fresh
from tests.test_decide import T0, floor_of


@pytest.fixture
def floor(run_dir: Path) -> FloorState:
    return floor_of(demo_config(run_dir).layout())


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_uplink_refused_is_raised_30_s_after_the_first_refusal_and_resolved_on_acceptance() -> None:
    alarms, effects = fresh().uplink_refusing(True, at(0))
    assert effects == []
    assert alarms.next_deadline() == at(30)
    alarms, effects = alarms.uplink_refusing(True, at(10))  # the same run: still due at 30 s
    assert alarms.next_deadline() == at(30)
    alarms, effects = alarms.tick(at(29.999))
    assert effects == []
    alarms, effects = alarms.tick(at(30))
    [raised] = emits(effects)
    assert raised.type == "alarm.raised"
    assert (raised.room, raised.data["kind"], raised.data["point"]) == (
        None,
        "technical",
        UPLINK_REFUSED,
    )
    [open_alarm] = alarms.open_alarms()
    assert open_alarm.state is AlarmState.ACTIVE
    # Raised once: the run goes on, nothing more (but escalation, as for any alarm).
    assert alarms.next_deadline() == open_alarm.next_due_at
    alarms, effects = alarms.tick(at(31))
    assert effects == []
    alarms, effects = alarms.uplink_refusing(False, at(45))
    [resolved] = emits(effects)
    assert resolved.type == "alarm.resolved"
    assert resolved.data["resolved_by"] == "system"
    assert alarms.open_alarms() == []
    assert alarms.next_deadline() is None


def test_a_run_broken_before_30_s_raises_nothing_and_a_new_run_counts_from_its_start() -> None:
    alarms, _ = fresh().uplink_refusing(True, at(0))
    alarms, effects = alarms.uplink_refusing(False, at(20))
    assert effects == []
    assert alarms.next_deadline() is None
    alarms, _ = alarms.uplink_refusing(True, at(25))
    alarms, effects = alarms.tick(at(50))
    assert effects == []
    alarms, effects = alarms.tick(at(55))
    assert [e.type for e in emits(effects)] == ["alarm.raised"]


def test_the_engine_ticks_at_the_refusal_deadline(floor: FloorState) -> None:
    decide(floor, UplinkRefusing(refusing=True), at(0))
    assert next_deadline(floor, at(1)) == at(30)
    assert [e for e in decide(floor, Tick(), at(30)).effects if isinstance(e, Emit)]
    assert [a.point for a in floor.alarms.open_alarms()] == [UPLINK_REFUSED]
    decide(floor, UplinkRefusing(refusing=False), at(40))
    assert floor.alarms.open_alarms() == []


def rejected(effects: list[object]) -> list[dict[str, object]]:
    return [dict(e.data) for e in effects if isinstance(e, Emit) and e.type == "command.rejected"]


def test_twenty_refusals_in_10_s_have_their_own_event_then_one_per_code_with_a_count(
    floor: FloorState,
) -> None:
    out: list[dict[str, object]] = []
    for i in range(50):
        code = "unauthenticated" if i % 2 else "invalid"
        decision = decide(floor, CommandRefused(f"c{i}", code, "x", recorded=False), at(i * 0.01))
        out += rejected(list(decision.effects))
        assert decision.outcome is not None  # every refusal still gets its reply
    assert [d["id"] for d in out] == [f"c{i}" for i in range(INDIVIDUAL)]
    assert next_deadline(floor, at(1)) == at(0.2) + WINDOW  # the first counted one + 10 s
    assert rejected(list(decide(floor, Tick(), at(9)).effects)) == []
    counted = rejected(list(decide(floor, Tick(), at(10.3)).effects))
    assert counted == [{"code": "invalid", "count": 15}, {"code": "unauthenticated", "count": 15}]
    # The window slid on: refusals have their own events again.
    later = decide(floor, CommandRefused("c-late", "stale", "x", recorded=False), at(11))
    assert rejected(list(later.effects)) == [{"id": "c-late", "code": "stale"}]


@settings(max_examples=60, deadline=None)
@given(gaps=st.lists(st.floats(min_value=0, max_value=3), min_size=1, max_size=200))
def test_no_10_s_window_has_more_than_20_individual_events_and_every_refusal_is_counted(
    gaps: list[float],
) -> None:
    rejections = Rejections()
    now = T0
    individual: list[datetime] = []
    counted = 0
    for i, gap in enumerate(gaps):
        now += timedelta(seconds=gap)
        rejections, events = rejections.refused(f"c{i}", "invalid", now)
        for e in events:
            if "id" in e.data:
                individual.append(now)
            else:
                counted += int(e.data["count"])  # type: ignore[call-overload]
    rejections, events = rejections.due(now + WINDOW)
    counted += sum(int(e.data["count"]) for e in events)  # type: ignore[call-overload]
    assert rejections.next_deadline() is None
    assert len(individual) + counted == len(gaps)
    for t in individual:
        assert sum(1 for u in individual if t - WINDOW < u <= t) <= INDIVIDUAL
