"""Scheduling decisions with an injected clock: order, overdue-first, no stacking, offline.

The last tests replay a saturated RS-485 line (the bench floor's load, about 1.3x what
the bus can carry) in simulated time: emergency polls keep their interval and no class
starves.
"""

from __future__ import annotations

import itertools
from collections import defaultdict

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.profile import PollClass
from drivers.schedule import DESPERATE, Kind, Schedule, stagger

E, L, R, S = PollClass.EMERGENCY, PollClass.LOCK, PollClass.ROOM, PollClass.SLOW


def drain(s: Schedule[str], now: float) -> list[str]:
    """Everything due at ``now``, in the order picked (each finished at once)."""
    out = []
    while (key := s.pick(now)) is not None:
        out.append(key)
        s.done(key)
    return out


def test_priority_order_between_kinds_and_classes() -> None:
    s: Schedule[str] = Schedule()
    for cls in (S, R, L, E):  # added lowest first: order must not come from insertion
        s.add_poll(f"poll-{cls}", f"dev-{cls}", cls, 1.0, 0.0)
        s.add_request(f"req-{cls}", cls, 0.0)
    s.add_request("scan", S, 0.0, kind=Kind.SCAN)
    s.suspend("dead", "probe-dead", 0.0, 1.0)
    picked = []
    # (at 0.2 s no lock write has waited LOCK_PATIENCE_S: the plain order)
    while (key := s.pick(0.2)) is not None:
        picked.append(key)
    assert picked == [
        "req-emergency",
        "poll-emergency",
        "req-lock",
        "poll-lock",
        "req-room",
        "poll-room",
        "req-slow",
        "poll-slow",
        "probe-dead",
        "scan",
    ]


def test_overdue_first_within_a_class() -> None:
    s: Schedule[str] = Schedule()
    s.add_poll("a", "a", E, 0.3, 1.00)
    s.add_poll("b", "b", E, 0.3, 0.90)  # the most overdue
    s.add_poll("c", "c", E, 0.3, 0.95)
    s.add_poll("d", "d", E, 0.3, 1.05)  # not due yet
    assert [s.pick(1.0), s.pick(1.0), s.pick(1.0), s.pick(1.0)] == ["b", "c", "a", None]


def test_overdue_relative_to_the_interval() -> None:
    s: Schedule[str] = Schedule()
    s.add_poll("slow-long", "x", L, 10.0, 0.0)  # 1 s late of 10 s
    s.add_poll("fast", "y", L, 1.0, 0.5)  # 0.5 s late of 1 s: more overdue
    assert s.pick(1.0) == "fast"


def test_a_poll_in_flight_is_skipped_not_stacked() -> None:
    s: Schedule[str] = Schedule()
    s.add_poll("p", "d", E, 0.3, 0.0)
    assert s.pick(0.0) == "p"
    # Still running when it falls due again (and again): not picked a second time.
    assert s.pick(0.35) is None
    assert s.pick(0.65) is None
    assert s.next_due() is None  # nothing waiting
    s.done("p")
    # The phase is kept (0.3), but the missed periods are not caught up one by one.
    assert s.entry("p").due_at == pytest.approx(0.3)
    assert s.pick(0.7) == "p"
    assert s.entry("p").due_at == pytest.approx(1.0)  # missed a whole period: new phase
    s.done("p")
    assert s.pick(0.99) is None
    assert s.pick(1.0) == "p"
    assert s.entry("p").due_at == pytest.approx(1.3)


def test_next_due_is_the_earliest_waiting_entry() -> None:
    s: Schedule[str] = Schedule()
    assert s.next_due() is None
    s.add_poll("a", "a", S, 10.0, 5.0)
    s.add_poll("b", "b", E, 0.3, 2.0)
    assert s.next_due() == 2.0
    s.suspend("b", "probe-b", 7.0, 1.0)
    assert s.next_due() == 5.0
    s.add_request("r", L, 3.0)
    assert s.next_due() == 3.0


def test_offline_device_is_only_probed_when_due() -> None:
    s: Schedule[str] = Schedule()
    s.add_poll("dead-e", "dead", E, 0.3, 0.0)
    s.add_poll("dead-s", "dead", S, 10.0, 0.0)
    s.add_poll("ok-e", "ok", E, 0.3, 0.0)
    s.suspend("dead", "probe-dead", 2.0, 2.0)
    assert s.suspended("dead")
    picked = [k for t in (0.0, 0.5, 1.0, 1.5) for k in drain(s, t)]
    assert "dead-e" not in picked
    assert "dead-s" not in picked
    assert picked.count("ok-e") == 4  # the other device keeps its interval
    assert drain(s, 2.0) == ["ok-e", "probe-dead"]
    assert "probe-dead" not in s  # one-shot
    s.suspend("dead", "probe-dead", 3.0, 1.0)  # the probe failed: the next one later
    assert drain(s, 2.9) == ["ok-e"]
    s.resume("dead", "probe-dead", 2.95)  # it answered (e.g. to a request)
    assert not s.suspended("dead")
    assert "probe-dead" not in s
    assert drain(s, 2.95) == ["dead-e", "dead-s"]  # every point re-read at once


def test_suspend_keeps_a_running_probe() -> None:
    s: Schedule[str] = Schedule()
    s.suspend("d", "probe", 0.0, 1.0)
    assert s.pick(0.0) == "probe"
    s.suspend("d", "probe", 5.0, 5.0)  # another failure while the probe runs
    assert s.entry("probe").in_flight
    s.done("probe")
    assert "probe" not in s


def test_requests_are_one_shot_and_keys_unique() -> None:
    s: Schedule[str] = Schedule()
    s.add_request("w", L, 1.0, device="d")
    with pytest.raises(ValueError, match="already"):
        s.add_request("w", L, 1.0)
    with pytest.raises(ValueError):
        s.add_request("x", L, 1.0, kind=Kind.POLL)
    with pytest.raises(ValueError):
        s.add_poll("p", "d", L, 0.0, 0.0)
    assert s.pick(0.5) is None  # not before it was queued
    assert s.pick(1.0) == "w"
    s.done("w")
    assert len(s) == 0
    s.add_request("gone", L, 1.0)
    s.discard("gone")
    s.discard("gone")
    assert s.pick(2.0) is None


def test_a_starving_entry_climbs_to_the_lock_level() -> None:
    s: Schedule[str] = Schedule()
    s.add_poll("slow", "t", S, 10.0, 0.0)
    s.add_poll("lock", "l", L, 1.0, 10.5)
    assert s.pick(10.5) == "slow"  # waited a whole period (ratio 1.05) vs lock (ratio 0)
    s2: Schedule[str] = Schedule()
    s2.add_poll("slow", "t", S, 10.0, 0.0)
    s2.add_poll("lock", "l", L, 1.0, 9.0)
    assert s2.pick(9.9) == "lock"  # not yet starving: plain priority


def test_a_desperate_entry_competes_with_emergency_polls() -> None:
    s: Schedule[str] = Schedule()
    s.add_poll("slow", "t", S, 1.0, 0.0)
    s.add_poll("emergency", "r", E, 0.3, 7.0)
    assert s.pick(7.5) == "emergency"
    s.done("emergency")
    s.add_poll("emergency2", "r2", E, 0.3, DESPERATE - 0.1)
    assert s.pick(DESPERATE + 0.01) == "slow"  # waited DESPERATE periods


def test_stagger_spreads_first_polls_within_the_window() -> None:
    assert stagger(4, 0.3, 10.0) == pytest.approx([10.0, 10.075, 10.15, 10.225])
    assert stagger(2, 60.0, 0.0, window_s=2.0) == pytest.approx([0.0, 1.0])
    assert stagger(1, 1.0, 5.0) == [5.0]


@given(st.lists(st.sampled_from(list(PollClass)[:4]), min_size=1, max_size=12), st.data())
def test_pick_is_the_minimum_by_level_then_lateness(
    classes: list[PollClass], data: st.DataObject
) -> None:
    """Exhaustive-ish: whatever is due, pick takes the best level, then the most overdue."""
    s: Schedule[str] = Schedule()
    now = 100.0
    rank = {}
    for i, cls in enumerate(classes):
        late = data.draw(st.floats(min_value=0.0, max_value=0.99))  # of its period
        interval = data.draw(st.sampled_from([0.3, 1.0, 2.0, 10.0]))
        rank[f"p{i}"] = (list(PollClass).index(cls), late)
        s.add_poll(f"p{i}", f"d{i}", cls, interval, now - late * interval)
    order = [s.pick(now) for _ in classes]
    assert s.pick(now) is None
    assert sorted(order, key=str) == sorted(rank)
    for a, b in itertools.pairwise(order):
        (level_a, late_a), (level_b, late_b) = rank[str(a)], rank[str(b)]
        assert level_a < level_b or (level_a == level_b and late_a >= late_b - 1e-9)


# -- a saturated line, replayed in simulated time ---------------------------------------------

# 19200 8N1: the bench floor's per-room mix: the bus time of each transaction of a poll (ms;
# see bench/poll.py for the arithmetic) and its period (s).
ROOM_MIX = [
    ("rio", E, 0.3, [18.5]),
    ("lock", L, 1.0, [15.9]),
    ("lock-head", L, 1.0, [16.5]),
    ("rio-in", R, 2.0, [15.9]),
    ("tstat", S, 10.0, [19.6, 22.7]),
    ("lock-battery", S, 30.0, [16.5]),
    ("lock-slots", S, 60.0, [48.75] * 4),
    ("rio-coils", S, 30.0, [15.9]),
]


def replay(rooms: int, seconds: float) -> dict[str, list[float]]:
    """Run the schedule on one line for ``seconds``; start times of every poll by name.

    Works as drivers.scheduler does: a poll of several transactions lets better-level work
    in between them.
    """
    s: Schedule[str] = Schedule()
    cost = {}
    by_class: dict[tuple[PollClass, float], list[str]] = defaultdict(list)
    for room, (name, cls, period, ms) in itertools.product(range(rooms), ROOM_MIX):
        key = f"{room}:{name}"
        cost[key] = [m / 1000 for m in ms]
        by_class[(cls, period)].append(key)
    for (cls, period), keys in by_class.items():
        for key, first in zip(keys, stagger(len(keys), period, 0.0), strict=True):
            s.add_poll(key, key, cls, period, first)
    clock = [0.0]
    starts: dict[str, list[float]] = defaultdict(list)

    def run(key: str) -> None:
        starts[key].append(clock[0])
        for i, c in enumerate(cost[key]):
            if i:
                while (urgent := s.pick(clock[0], above=s.level(key))) is not None:
                    run(urgent)
            clock[0] += c
        s.done(key)

    while clock[0] < seconds:
        key, nxt = s.pick_or_wait(clock[0])
        if key is None:
            assert nxt is not None
            assert nxt == s.next_due()
            clock[0] = max(clock[0], nxt)
            continue
        run(key)
    return starts


def periods(starts: dict[str, list[float]], name: str) -> list[float]:
    out = []
    for key, times in starts.items():
        if key.endswith(f":{name}"):
            out.extend(b - a for a, b in itertools.pairwise(times))
    return sorted(out)


def test_saturated_line_keeps_emergency_interval_and_starves_nobody() -> None:
    starts = replay(rooms=12, seconds=300.0)
    emergency = periods(starts, "rio")
    # The longest wait for the line is one transaction (a 48.75 ms slot read).
    assert max(emergency) <= 0.3 + 0.05
    assert sum(emergency) / len(emergency) == pytest.approx(0.3, abs=0.005)
    for name, _, period, _ in ROOM_MIX[1:]:
        got = periods(starts, name)
        assert got, f"{name} never ran"
        mean = sum(got) / len(got)
        assert period <= mean <= 4 * period, (name, mean)


def test_unsaturated_line_meets_every_interval() -> None:
    starts = replay(rooms=4, seconds=300.0)
    for name, _, period, _ in ROOM_MIX:
        got = periods(starts, name)
        assert sum(got) / len(got) == pytest.approx(period, rel=0.02), name
        assert max(got) <= period * 1.02 + 0.05, name


def test_a_lock_write_kept_waiting_joins_the_emergency_requests() -> None:
    s: Schedule[str] = Schedule()
    s.add_poll("slow", "t", S, 1.0, 0.0)  # desperate at DESPERATE
    s.add_poll("emergency", "r", E, 0.3, DESPERATE)
    s.add_request("write", L, DESPERATE - 0.2, device="lock-1")
    assert s.pick(DESPERATE + 0.01) == "slow"  # the write has waited 0.21 s: patience left
    s.done("slow")
    s.add_poll("slow2", "t2", S, 1.0, 0.0)
    assert s.pick(DESPERATE + 0.2) == "write"  # waited 0.4 s: ahead of every poll
