"""Alarms in SQLite: save/load round trips through a real Store, and restore after a restart."""

from __future__ import annotations

import pathlib
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.panelproto import FaultCode, Point
from gateway.adapters import journal, schema
from gateway.adapters.alarms_store import load_alarm, load_open_alarms, save_alarm
from gateway.adapters.store import Store
from gateway.core.alarms import Alarm, AlarmKind, Alarms, AlarmState, Effect
from gateway.core.effects import Emit, SaveAlarm, SetPanelLamp, WritePoint
from gateway.model.errors import StoreError
from tests.test_alarms import LAYOUT, T0, at, fresh, id_factory, ok


@pytest.fixture(autouse=True)
def no_leftover_threads() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    assert set(threading.enumerate()) <= before


@pytest.fixture
async def store(tmp_path: pathlib.Path) -> AsyncIterator[Store]:
    s = await Store.open(tmp_path / "floor.db")
    yield s
    await s.close()


def saves(effects: list[Effect]) -> list[Alarm]:
    return [e.alarm for e in effects if isinstance(e, SaveAlarm)]


def persist(conn: sqlite3.Connection, effects: list[Effect]) -> None:
    """What the engine does with one decision: its saves and events in one transaction."""
    for effect in effects:
        if isinstance(effect, SaveAlarm):
            save_alarm(conn, effect.alarm)
        elif isinstance(effect, Emit):
            journal.append_event(conn, effect.type, room=effect.room, data=effect.data, ts=T0)


async def test_saved_alarms_load_back_equal_and_resolved_ones_are_not_open(store: Store) -> None:
    a, fx1 = fresh().counter("1201", "bath_count", 0, 1, at(0.25))
    a, fx2 = a.panel_fault("panel", "1205", Point.BED, FaultCode.CUT, at(1))
    a, fx3 = a.panel_offline("panel", at(2))
    a, fx4 = ok(a.ack("a1", "nurse-4", at(3)))
    a, fx5 = a.tick(at(500))  # the ack times out: active again
    for fx in (fx1, fx2, fx3, fx4, fx5):
        await store.write(lambda conn, fx=fx: persist(conn, fx))
    assert await store.read(load_open_alarms) == a.open_alarms()

    a, fx = a.counter("1201", "staff_count", 0, 1, at(501))
    await store.write(lambda conn: persist(conn, fx))
    (resolved,) = saves(fx)
    assert await store.read(lambda conn: load_alarm(conn, "a1")) == resolved
    assert resolved.resolved_by == "staff_presence"
    assert await store.read(load_open_alarms) == a.open_alarms()
    assert [x.alarm_id for x in a.open_alarms()] == ["a2", "a3"]
    assert await store.read(lambda conn: load_alarm(conn, "nope")) is None


async def test_columns_hold_the_spec_values(store: Store) -> None:
    a, fx = fresh().counter("1201", "bath_count", 0, 1, at(0))
    a, more = a.tick(at(60))
    await store.write(lambda conn: persist(conn, fx + more))
    row = await store.read(
        lambda conn: conn.execute(
            "SELECT room, kind, point, state, level, raised_at, level_due_at, data FROM alarms"
        ).fetchall()
    )
    assert row == [
        (
            "1201", "call", "bath", "active", 1, "2026-11-23T02:00:00.000Z",
            "2026-11-23T02:03:00.000Z", '{"source":null,"latched":false,"faults":[]}',
        )
    ]  # fmt: skip


async def test_restart_mid_escalation_resumes_on_schedule(store: Store) -> None:
    """Killed after level 1; restarted later: levels 2 and a repeat, in order, then on the grid."""
    a, fx = fresh().counter("1201", "bath_count", 0, 1, at(0))
    a, more = a.tick(at(60))
    await store.write(lambda conn: persist(conn, fx + more))
    stored = await store.read(load_open_alarms)
    r, rfx = Alarms.restore(LAYOUT, stored, at(250), link_up=False, new_id=id_factory())
    assert [(e.type, e.data["level"], e.data["notify"]) for e in rfx if isinstance(e, Emit)] == [
        ("alarm.escalated", 2, "security"),
        ("alarm.escalated", 2, "security"),
    ]
    assert r.next_deadline() == at(300)
    assert [e for e in rfx if isinstance(e, WritePoint | SetPanelLamp)] == r.outputs()


async def test_an_unreadable_row_is_a_store_error(store: Store) -> None:
    def corrupt(conn: sqlite3.Connection) -> None:
        conn.execute(
            "INSERT INTO alarms (alarm_id, kind, point, state, level, raised_at, data)"
            " VALUES ('bad', 'call', 'bath', 'sleeping', 0, '2026-11-23T02:00:00.000Z', '{}')"
        )

    await store.write(corrupt)
    with pytest.raises(StoreError, match="bad"):
        await store.read(load_open_alarms)


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("data", "[]"),
        ("data", '{"faults": "bath"}'),
        ("raised_at", "2026-11-23T02:00:00"),
        ("raised_at", None),
    ],
)
def test_malformed_rows_are_refused(column: str, value: str | None) -> None:
    conn = _memory_db()
    save_alarm(conn, _alarm())
    conn.execute(f"UPDATE alarms SET {column} = ?", (value,))
    with pytest.raises(StoreError):
        load_alarm(conn, "x")


def _memory_db() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    schema.apply_migrations(conn)
    return conn


def _alarm() -> Alarm:
    return Alarm("x", "1201", AlarmKind.CALL, "bath", AlarmState.ACTIVE, 0, T0)


def _ms_times() -> st.SearchStrategy[datetime]:
    return st.integers(0, 10**10).map(lambda ms: T0 + timedelta(milliseconds=ms))


alarms = st.builds(
    Alarm,
    alarm_id=st.text("0123456789abcdef", min_size=1, max_size=32),
    room=st.one_of(st.none(), st.sampled_from(("1201", "9é-x"))),
    kind=st.sampled_from(AlarmKind),
    point=st.sampled_from(("bath", "bed", "other", "callpanel_offline", "lock_tamper")),
    state=st.sampled_from(AlarmState),
    level=st.integers(0, 9),
    raised_at=_ms_times(),
    acknowledged_at=st.one_of(st.none(), _ms_times()),
    acknowledged_by=st.one_of(st.none(), st.text(max_size=20)),
    resolved_at=st.one_of(st.none(), _ms_times()),
    resolved_by=st.one_of(st.none(), st.text(max_size=20)),
    next_due_at=st.one_of(st.none(), _ms_times()),
    source=st.one_of(st.none(), st.sampled_from(("panel", "panel-b"))),
    latched=st.booleans(),
    faults=st.lists(st.sampled_from(("bath", "bed", "other")), unique=True).map(
        lambda xs: tuple(sorted(xs))
    ),
)


@settings(max_examples=200, deadline=None)
@given(alarms, alarms)
def test_any_alarm_round_trips_and_saving_again_replaces_it(first: Alarm, second: Alarm) -> None:
    conn = _memory_db()
    save_alarm(conn, first)
    assert load_alarm(conn, first.alarm_id) == first
    again = replace(second, alarm_id=first.alarm_id)
    save_alarm(conn, again)
    assert load_alarm(conn, first.alarm_id) == again
    assert conn.execute("SELECT count(*) FROM alarms").fetchone() == (1,)
    assert load_open_alarms(conn) == ([again] if again.resolved_at is None else [])
