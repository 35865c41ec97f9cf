"""Wall-clock jump detection from (monotonic, wall) pairs; the core's time format."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.core.clock import ClockJump, ClockWatch
from gateway.model.time import format_ts, parse_ts, to_ms

T0 = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)


def test_steady_clocks_and_small_drift_are_not_jumps() -> None:
    w = ClockWatch()
    assert w.observe(100.0, T0) is None  # baseline
    assert w.observe(101.0, T0 + timedelta(seconds=1)) is None
    assert w.observe(161.0, T0 + timedelta(seconds=62.9)) is None  # +1.9 s: slewing
    assert w.observe(162.0, T0 + timedelta(seconds=61.9)) is None  # -2.0 s: at the tolerance


def test_a_forward_step_is_reported_once() -> None:
    w = ClockWatch()
    w.observe(10.0, T0)
    jump = w.observe(11.0, T0 + timedelta(seconds=3601))
    assert jump == ClockJump(3600.0, T0 + timedelta(seconds=1), T0 + timedelta(seconds=3601))
    assert w.observe(12.0, T0 + timedelta(seconds=3602)) is None  # the new baseline


def test_a_backward_step_is_negative() -> None:
    w = ClockWatch()
    w.observe(10.0, T0)
    jump = w.observe(11.0, T0 - timedelta(seconds=30))
    assert jump is not None
    assert jump.seconds == -31.0


def test_tolerance_is_configurable() -> None:
    w = ClockWatch(tolerance_s=0.5)
    w.observe(0.0, T0)
    assert w.observe(1.0, T0 + timedelta(seconds=1.6)) is not None
    with pytest.raises(ValueError):
        ClockWatch(tolerance_s=0)


def test_reset_forgets_the_baseline() -> None:
    w = ClockWatch()
    w.observe(0.0, T0)
    w.reset()
    assert w.observe(1.0, T0 + timedelta(days=1)) is None


def test_mixed_clocks_and_naive_times_are_errors() -> None:
    w = ClockWatch()
    w.observe(5.0, T0)
    with pytest.raises(ValueError):
        w.observe(4.0, T0)
    with pytest.raises(ValueError):
        w.observe(6.0, datetime(2026, 1, 1))  # noqa: DTZ001


@given(st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=8))])))
def test_format_ts_round_trips_to_the_millisecond(dt: datetime) -> None:
    text = format_ts(dt)
    assert text.endswith("Z")
    assert len(text) == len("2026-11-23T06:00:00.000Z")
    assert datetime.fromisoformat(text) == to_ms(dt)
    assert parse_ts(text) == to_ms(dt)


def test_to_ms_truncates_and_converts_to_utc() -> None:
    local = datetime(2026, 11, 23, 14, 0, 0, 123999, tzinfo=timezone(timedelta(hours=8)))
    assert to_ms(local) == datetime(2026, 11, 23, 6, 0, 0, 123000, tzinfo=UTC)
    assert to_ms(local).tzinfo is UTC
