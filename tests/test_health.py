"""Device health: unknown/online/offline, the probe backoff and the recent figures."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.health import DeviceHealth, HealthState, Transition


def health(**kwargs: object) -> DeviceHealth:
    kwargs.setdefault("rng", random.Random(7))
    return DeviceHealth(**kwargs)  # type: ignore[arg-type]


def test_first_answer_makes_an_unknown_device_online() -> None:
    h = health()
    assert h.state is HealthState.UNKNOWN
    assert not h.online
    assert h.success(10.0, 0.02) is Transition.ONLINE
    assert h.success(11.0, 0.02) is None
    assert h.online
    assert h.last_seen == 11.0


def test_a_device_that_never_answers_goes_offline_after_n_failures() -> None:
    h = health(offline_after=3)
    assert h.failure(1.0, "timeout") is None
    assert h.failure(2.0, "timeout") is None
    assert h.state is HealthState.UNKNOWN
    assert h.failure(3.0, "crc") is Transition.OFFLINE
    assert h.state is HealthState.OFFLINE
    assert h.reason == "crc"
    assert h.probe_at is not None
    assert 3.0 + 0.25 <= h.probe_at <= 3.0 + 0.5  # equal jitter of the first 0.5 s step


def test_failures_below_the_threshold_do_not_take_a_device_offline() -> None:
    h = health(offline_after=3)
    h.success(0.0, 0.01)
    for t in range(10):  # two failures, then an answer, again and again
        assert h.failure(t + 0.1, "timeout") is None
        assert h.failure(t + 0.2, "timeout") is None
        assert h.success(t + 0.3, 0.01) is None
    assert h.online
    assert h.consecutive_failures == 0
    assert h.probe_at is None


def test_probes_back_off_to_the_cap_and_an_answer_resets_them() -> None:
    h = health(offline_after=1, probe_max_s=8.0)
    now = 0.0
    h.failure(now, "timeout")
    delays = []
    for _ in range(8):
        assert h.probe_at is not None
        assert h.probe_due(h.probe_at)
        assert not h.probe_due(h.probe_at - 1e-6)
        delays.append(h.probe_at - now)
        now = h.probe_at
        assert h.failure(now, "timeout") is None  # a failed probe: still offline
    ceilings = [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert h.success(now, 0.01) is Transition.ONLINE
    assert h.probe_at is None
    h.failure(now, "timeout")  # offline again at once (offline_after=1): from 0.5 s again
    assert h.probe_at is not None
    assert h.probe_at - now <= 0.5


def test_probe_now_brings_the_next_probe_forward() -> None:
    h = health(offline_after=1)
    h.failure(0.0, "bus gone")
    for t in range(1, 6):
        h.failure(float(t), "bus gone")
    h.probe_now(6.0)
    assert h.probe_at == 6.0
    on = health()
    on.probe_now(1.0)  # not offline: nothing to probe
    assert on.probe_at is None


def test_recent_success_rate_and_latency_percentiles() -> None:
    h = health()
    assert h.success_rate is None
    assert h.latency_s(0.5) is None
    for i in range(1, 101):
        h.success(float(i), i / 1000)
    h.failure(101.0, "timeout")
    h.failure(102.0, "timeout")
    assert h.success_rate == pytest.approx(100 / 102)
    assert h.latency_s(0.5) == pytest.approx(0.050)
    assert h.latency_s(0.99) == pytest.approx(0.099)
    assert h.latency_s(1.0) == pytest.approx(0.100)
    assert (h.transactions, h.failures) == (102, 2)
    with pytest.raises(ValueError):
        h.latency_s(1.5)


def test_offline_after_must_be_positive() -> None:
    with pytest.raises(ValueError):
        health(offline_after=0)


@given(
    st.integers(min_value=1, max_value=5),
    st.lists(st.booleans(), max_size=60),
)
def test_state_follows_the_outcomes(offline_after: int, outcomes: list[bool]) -> None:
    """Offline exactly while the last failures in a row reach the threshold."""
    h = health(offline_after=offline_after, probe_max_s=4.0)
    answered = False
    for t, ok in enumerate(outcomes):
        before = h.state
        change = h.success(float(t), 0.01) if ok else h.failure(float(t), "timeout")
        answered = answered or ok
        if h.consecutive_failures >= offline_after:
            assert h.state is HealthState.OFFLINE
            assert h.probe_at is not None
            assert t < h.probe_at <= t + 4.0
        elif answered:
            assert h.state is HealthState.ONLINE
        else:
            assert h.state is HealthState.UNKNOWN
        assert (change is not None) == (h.state is not before)
